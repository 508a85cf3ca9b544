"""Tasks: ``get_task(name) -> Task`` (``edgerep.tasks.base.Task``), ``resolve_task(flag, meta, dataset, output)``.

A task is the module ``edgerep.tasks.<name>`` exposing ``TASK``; ``available()`` lists the modules that do, so a
new task (e.g. ``sr``) registers by adding its module. Which task a deploy serves: ``--task``, else the
checkpoint's ``meta.task`` when it is not the default, else the data set's ``task``, else the default (classify).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from edgerep.errors import EdgerepError
from edgerep.tasks.base import Evaluation, Task

__all__ = ["Task", "Evaluation", "get_task", "available", "resolve_task", "DEFAULT"]

DEFAULT = "classify"
_NOT_TASKS = {"base"}


def available() -> list[str]:
    """Names of the task modules in this package (each exposes ``TASK``)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_TASKS and not m.name.startswith("_"))


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a user error naming ``--task``."""
    if name not in available():
        raise EdgerepError(f"--task {name!r}: unknown task", hint=f"one of {', '.join(available())}")
    return importlib.import_module(f"edgerep.tasks.{name}").TASK


def resolve_task(flag: str | None, meta: Any = None, dataset: Any = None) -> tuple[Task, str]:
    """The task a run serves and where that was decided: ``--task``, the checkpoint's ``meta.task`` (when set
    to other than the default), the data set's ``task``, else the default. A flag or checkpoint naming one
    task with data of another is refused (exit 2) rather than scored wrongly."""
    data_task = getattr(dataset, "task", None)
    meta_task = getattr(meta, "task", None)
    if flag:
        task, source = get_task(flag), "--task"
    elif meta_task and meta_task != DEFAULT:
        task, source = get_task(meta_task), "checkpoint meta.task"
    elif data_task and data_task in available():
        task, source = get_task(data_task), f"data set {getattr(dataset, 'name', '?')}"
    else:
        task, source = get_task(DEFAULT), "default"
    if data_task and data_task != task.name and data_task in available():
        raise EdgerepError(f"task {task.name!r} (from {source}) but the data set {getattr(dataset, 'name', '?')} "
                           f"is a {data_task!r} set", hint=f"pass --task {data_task}, or data of a {task.name} task")
    return task, source
