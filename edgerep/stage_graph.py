"""Stages declared by what they need and what they give, wired by name.

A ``Stage`` is a function whose keyword parameters name what it needs: results of earlier stages (by
the name each gives) or values of the run context (options, progress, the bundle's temporary
directory, ...). ``check_graph`` refuses a list in which a stage needs something nothing earlier gives,
before any work; ``run_stages`` runs a checked list, outside stages first, then the rest inside the
directory ``bundle()`` yields. ``explain`` prints the graph from the declarations alone.
"""
from __future__ import annotations

import inspect
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from edgerep.errors import EdgerepError

#: the run-context value that exists only inside the bundle's temporary directory
BUNDLE_DIR = "bundle_dir"


class StageGraphError(EdgerepError):
    """A stage list whose wiring cannot work: an unmet input, a name given twice, an order the runner cannot keep."""


def _always(opts: Any) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """One declared stage: ``fn``'s keyword parameters are what it needs, its return value is given as ``gives``.

    ``in_bundle``: it runs inside the bundle's temporary directory (and only then may it need ``bundle_dir``).
    ``enabled(opts)``: whether it runs; a stage that does not run gives ``None`` (``skipped_when`` says when,
    in words, for ``explain``)."""

    name: str
    fn: Callable[..., Any]
    gives: str
    in_bundle: bool
    start: str  # its progress line as it starts
    enabled: Callable[[Any], bool] = _always
    skipped_when: str = ""

    @property
    def needs(self) -> tuple[str, ...]:
        """The names it is called with: its function's parameters, in order."""
        return tuple(inspect.signature(self.fn).parameters)

    @property
    def returns(self) -> str:
        """The name of the type it gives (from the function's return annotation)."""
        ann = inspect.signature(self.fn).return_annotation
        return ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))


def check_graph(stages: Sequence[Stage], context: Sequence[str]) -> None:
    """Refuse (``StageGraphError``) a list the runner cannot wire: a stage needing a name neither the run
    ``context`` nor an earlier stage gives, ``bundle_dir`` needed outside the bundle, a name given twice, or a
    stage outside the bundle after one inside it."""
    given: dict[str, str] = {name: "the run context" for name in context if name != BUNDLE_DIR}
    inside = None
    for s in stages:
        if s.in_bundle:
            inside = inside or s.name
        elif inside is not None:
            raise StageGraphError(f"stage {s.name!r} runs outside the bundle directory but comes after {inside!r}, "
                                  "which runs inside it")
        for need in s.needs:
            if need == BUNDLE_DIR and BUNDLE_DIR in context and s.in_bundle:
                continue
            if need not in given:
                where = ("it exists only inside the bundle directory" if need == BUNDLE_DIR
                         else "no earlier stage gives it")
                raise StageGraphError(f"stage {s.name!r} needs {need!r}, and {where} "
                                      f"(given before it: {', '.join(given) or 'nothing'})")
        if s.gives in given or s.gives == BUNDLE_DIR:
            raise StageGraphError(f"stage {s.name!r} gives {s.gives!r}, which {given.get(s.gives, 'the runner')} "
                                  "already gives")
        given[s.gives] = f"stage {s.name!r}"


@dataclass
class StageClock:
    """When each stage that ran started (``time.perf_counter``), for the report's per-stage timings."""

    t_start: float = field(default_factory=time.perf_counter)
    marks: dict[str, float] = field(default_factory=dict)

    def durations(self) -> dict[str, float]:
        """Seconds per stage so far (the last one up to now) and ``total``."""
        now = time.perf_counter()
        names = list(self.marks)
        ends = [self.marks[n] for n in names[1:]] + [now]
        d = {n: round(e - self.marks[n], 3) for n, e in zip(names, ends)}
        d["total"] = round(now - self.t_start, 3)
        return d


Say = Callable[[str, str], None]


def run_stage(stage: Stage, results: dict[str, Any], say: Say, clock: StageClock) -> None:
    """Run one stage on the results it needs (if its rule enables it) and record what it gives."""
    from edgerep.interrupts import raise_if_taken
    from edgerep.memory import release_freed

    if not stage.enabled(results.get("opts")):
        results[stage.gives] = None
        return
    raise_if_taken()  # a signal whose exception a finalizer swallowed in the last stage ends the run here
    clock.marks[stage.name] = t0 = time.perf_counter()
    say(stage.name, stage.start)
    out = stage.fn(**{n: results[n] for n in stage.needs})
    results[stage.gives] = out
    release_freed()  # what the stage freed leaves the resident set before the next one starts
    say(stage.name, f"{out.summary()} ({time.perf_counter() - t0:.1f} s)")


def run_stages(stages: Sequence[Stage], context: Mapping[str, Any], bundle: Callable[[], AbstractContextManager],
               say: Say, clock: StageClock, after: Callable[[Stage, Any], None] | None = None) -> dict[str, Any]:
    """Every stage of a checked list: those outside the bundle, then ``bundle()``'s directory as ``bundle_dir``
    and the rest inside it; ``after(stage, result)`` as each one ends. The context and every result, by name."""
    check_graph(stages, [*context, BUNDLE_DIR])
    results = dict(context)

    def run(s: Stage) -> None:
        run_stage(s, results, say, clock)
        if after is not None:
            after(s, results[s.gives])

    for s in stages:
        if not s.in_bundle:
            run(s)
    with bundle() as tmp:
        results[BUNDLE_DIR] = tmp
        for s in stages:
            if s.in_bundle:
                run(s)
    return results


def explain(stages: Sequence[Stage], context: Mapping[str, str], opts: Any = None) -> str:
    """The stage graph in words, from the declarations alone: each stage, what it needs, what it gives,
    where it runs and when it is skipped (with ``opts``: whether it runs with those options)."""
    lines = ["run context (given by the runner):"]
    lines += [f"  {name:<11} {what}" for name, what in context.items()]
    lines += ["", "stages, in order:"]
    for s in stages:
        where = "inside the bundle's temporary directory" if s.in_bundle else "before the bundle directory exists"
        lines.append(f"  {s.name}: {s.start} ({where})")
        lines.append(f"      needs  {', '.join(s.needs) or 'nothing'}")
        lines.append(f"      gives  {s.gives}: {s.returns}" + (", or None when skipped" if s.skipped_when else ""))
        if s.skipped_when:
            lines.append(f"      skipped when {s.skipped_when}")
        if opts is not None and not s.enabled(opts):
            lines.append("      (skipped with these options)")
    return "\n".join(lines) + "\n"


__all__ = ["Stage", "StageClock", "StageGraphError", "check_graph", "explain", "run_stage", "run_stages", "BUNDLE_DIR"]
