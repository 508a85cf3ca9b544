"""The task protocol: what turns a model's outputs and a data set's targets into the report's Accuracy, how a
choice is scored on the selection split, and which files a task adds to the bundle.

Every other stage is task-blind (calibration, fold, engines, latency). A task is one module in
``edgerep/tasks/`` exposing ``TASK`` (an object satisfying ``Task``); ``edgerep.tasks.get_task(name)`` finds
it by name, so a new task plugs in by adding one module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import numpy as np


@dataclass
class Evaluation:
    """One engine (or the unfolded reference) scored on the test set: the report's ``Accuracy`` (None when
    nothing can be scored), the files it adds to the bundle ({relative path: JSON-able content}) and free-form
    details a report view shows (per-class AP, example detections)."""

    accuracy: Any  # edgerep.report.models.results.Accuracy | None
    files: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """What a task brings. ``name`` is what ``--task`` and ``CheckpointMeta.task`` say; ``metric`` the
    headline metric's key in ``edgerep.report.models.results.METRICS`` (its unit is read from there)."""

    name: str  # "classify" | "detect" | "sr"
    metric: str  # "top1" | "map" | "psnr"

    def matches_output(self, shape: tuple[int, ...]) -> bool:
        """Whether a model output of ``shape`` (batch first) is this task's (used only to refuse a mismatch
        and to detect the task where nothing else says it)."""

    def collect_targets(self, batches: Iterable[Any]) -> Any:
        """The targets of every batch's ``y``, in order, as this task keeps them (classify: one int64 array;
        detect: a list of per-image dicts); None when any batch has none."""

    def evaluate(self, outputs: np.ndarray, targets: Any, reference: np.ndarray | None, *, dataset: Any,
                 name: str, user_metric: Callable | None = None) -> Evaluation:
        """Score ``outputs`` (N, ...) of the test set against ``targets`` (and fidelity against the unfolded
        model's ``reference`` outputs). ``name`` is ``<engine>-<precision>`` (predictions files are named by
        it); ``dataset`` is the test set (for ground truth: ids, class names)."""

    def selection_score(self, outputs: np.ndarray, targets: Any, reference: np.ndarray) -> Any:
        """A candidate choice's ``edgerep.quant.mixed.Score`` on the selection split: ``drop`` in the task's
        drop unit (what the budget ``--max-drop`` limits), ``error`` a continuous fidelity that breaks ties."""

    def ground_truth_files(self, dataset: Any, limit: int | None) -> dict[str, Any]:
        """Files the bundle keeps so anyone recomputes every metric ({relative path: JSON-able content}):
        detect writes ``annotations/test.json``; classify none (splits.json names every labelled sample)."""


def write_files(root: Path, files: dict[str, Any]) -> dict[str, str]:
    """Write ``{relative path: JSON-able}`` under ``root``; returns {key: relative path} for the manifest."""
    import json

    out = {}
    for rel, content in files.items():
        p = Path(root) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(content, separators=(",", ":")) + "\n")
        out["task:" + rel] = rel
    return out
