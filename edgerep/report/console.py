"""Terminal output: a step progress display and the engine table (rich)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgerep.report.rows import COLUMNS, engine_rows


def make_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables to 80 columns when writing to a file or CI log."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=140)


@contextmanager
def step_progress(quiet: bool = False) -> Iterator[Callable[[str, str], None]]:
    """A ``(step, message)`` callback that shows a spinner with the current step on stderr."""
    console = make_console(stderr=True)
    if quiet:
        yield lambda step, msg: None
        return
    t0 = time.perf_counter()
    with console.status("starting") as status:
        def update(step: str, msg: str) -> None:
            status.update(f"[bold]{step}[/]: {msg}")
            if not console.is_terminal:
                print(f"[{time.perf_counter() - t0:6.1f}s] {step}: {msg}", file=sys.stderr)

        yield update


def print_engine_table(report: dict, title: str = "edgerep", bundle: Path | None = None) -> None:
    """The engine table (top-1 with its image count, noise marks when a run was noisy), then notes and the gate."""
    rows = engine_rows(report)
    cols = [(k, "top-1 (correct of images)" if k == "top1" else h) for k, h in COLUMNS]
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
