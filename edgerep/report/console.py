"""Terminal output: a step progress display and the engine table (rich)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from edgerep.report.rows import COLUMNS, accuracy_heading, engine_rows


def make_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when writing to a file or CI log."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=140)


@contextmanager
def step_progress(quiet: bool = False, console: Console | None = None) -> Iterator[Callable[[str, str], None]]:
    """A ``(step, message)`` callback for a command's steps, and a reporter for its counted loops
    (``edgerep.progress``): on a terminal a spinner line for the step and a bar with count and ETA per
    loop; in a log a timestamped line per step and a progress line every ``LINE_EVERY_S`` per loop."""
    from edgerep.progress import LineReporter, RichReporter, reporting

    console = console or make_console(stderr=True)
    if quiet:
        yield lambda step, msg: None
        return
    t0 = time.perf_counter()
    current = {"step": ""}

    def line(step: str, msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {step}: {msg}", file=console.file, flush=True)

    if not console.is_terminal:
        def update(step: str, msg: str) -> None:
            current["step"] = step
            line(step, msg)

        with reporting(LineReporter(lambda msg: line(current["step"], msg))):
            yield update
        return
    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), _CountColumn(), console=console,
                    transient=True)
    with bars, reporting(RichReporter(bars)):
        step_task = bars.add_task("starting", total=None)

        def update(step: str, msg: str) -> None:
            bars.update(step_task, description=f"[bold]{escape(step)}[/]: {escape(msg)}")

        yield update


class _CountColumn(ProgressColumn):
    """``512/1024  41 s  ETA 40 s`` for a counted loop; the elapsed seconds for the step line (no total)."""

    def render(self, task) -> Text:
        if task.total is None:
            return Text(f"{task.elapsed or 0:.0f} s")
        left = task.time_remaining
        eta = "?" if left is None else f"{left:.0f} s"
        return Text(f"{task.completed:.0f}/{task.total:.0f}  {task.elapsed or 0:.0f} s  ETA {eta}")


def print_engine_table(report: dict, title: str = "edgerep", bundle: Path | None = None) -> None:
    """The engine table (top-1 with its image count, noise marks when a run was noisy), then notes and the gate."""
    rows = engine_rows(report)
    cols = [(k, accuracy_heading(report) if k == "top1" else h) for k, h in COLUMNS]
    cols = [("top1_n" if k == "top1" else k, h) for k, h in cols]
    if any(r["scenario"] for r in rows):
        cols.insert(2, ("scenario", "scenario"))
    if any(r["noise"] for r in rows):
        cols.insert(-3, ("noise", "noise"))
    table = Table(title=title)
    for k, head in cols:
        table.add_column(head, justify="left" if k in ("engine", "precision", "verdict", "scenario", "noise")
                         else "right")
    for r in rows:
        verdict = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]"}.get(r["verdict"], r["verdict"])
        cells = {**r, "verdict": verdict, "noise": "[yellow]NOISY[/]" if r["noise"] else ""}  # reason: below
        table.add_row(*[cells[k] for k, _ in cols])
    console = make_console()
    console.print(table)
    fold = report.get("fold") or {}
    if fold:
        console.print(f"fold: {fold.get('convs_before')} -> {fold.get('convs_after')} convs, "
                      f"max error {fold.get('max_abs_error', 0):.2e} abs, {fold.get('max_rel_error', 0):.2e} rel")
    for r in engine_rows(report):
        if r["note"]:
            console.print(escape(f"note: {r['engine']}/{r['precision']}: {r['note']}"))
        if r["noise"]:
            why = r["noise"].partition(": ")[2] or "noisy"
            console.print(f"[yellow]noisy latency[/]: {r['engine']}/{r['precision']}: {why} (rerun on a quiet host)")
    pol = (report.get("quantization") or {}).get("cpu_policy")
    if pol:
        console.print(escape(f"CPU INT8 policy: {pol.get('name')}: {pol.get('reason', '')}"))
    note = ((report.get("quantization") or {}).get("reference") or {}).get("resolution_note")
    if note:
        console.print(escape(f"selection set: {note}"))
    measured = (report.get("check") or {}).get("measured")
    if measured:  # the measurement leads; the check's per-layer verdicts were predictions of it
        console.print(escape(f"INT8 check vs measurement: {measured['headline']} {measured['scored']}"))
    gate = report.get("gate")
    if gate:
        console.print("gate: " + ("[green]PASSED[/]" if gate["passed"] else "[red]FAILED[/]"))
        for c in gate.get("checks", []):
            if not c["passed"]:
                console.print(f"  [red]FAIL[/] {escape(c['message'])}")
    if bundle is not None and (Path(bundle) / "report.html").exists():
        check = Path(bundle) / "check" / "check.html"
        console.print(f"report: {Path(bundle) / 'report.html'}" + (f" (INT8 check: {check})" if check.exists() else ""),
                      soft_wrap=True)
