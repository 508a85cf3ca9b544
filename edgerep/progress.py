"""Counts and an ETA for the long loops of a command (calibration images, evaluation samples, timing).

A loop says what it counts with ``counted(label, total, unit)``; whoever runs the command decides how
it is shown by installing a reporter with ``reporting()``: the CLI shows a live rich bar on a terminal
and a line every ``LINE_EVERY_S`` seconds in a log; a library call with no reporter shows nothing.
Loops never take a progress callback parameter, so no signature grows for it.
"""
from __future__ import annotations

import time
from contextlib import AbstractContextManager, contextmanager
from typing import Callable, Iterator, Protocol

Advance = Callable[[int], None]  # add n done

LINE_EVERY_S = 10.0  # a log gets a progress line at most this often per loop


class Reporter(Protocol):
    """Shows counted loops; ``task`` is entered for the loop's life and yields its ``Advance``."""

    def task(self, label: str, total: int | None, unit: str) -> AbstractContextManager[Advance]: ...


_REPORTERS: list[Reporter] = []


@contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Show the counted loops run inside the block with ``reporter`` (the innermost one wins)."""
    _REPORTERS.append(reporter)
    try:
        yield reporter
    finally:
        _REPORTERS.remove(reporter)


@contextmanager
def counted(label: str, total: int | None, unit: str = "samples") -> Iterator[Advance]:
    """A loop over ``total`` items (None: unknown); call the yielded function with each count done."""
    if not _REPORTERS:
        yield _nothing
        return
    with _REPORTERS[-1].task(label, total, unit) as advance:
        yield advance


def _nothing(n: int) -> None:  # noqa: ARG001
    return None


def eta_seconds(done: int, total: int | None, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None when the total or the rate is not known yet."""
    if not total or done <= 0 or elapsed <= 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


def progress_line(label: str, done: int, total: int | None, unit: str, elapsed: float) -> str:
    """``calibration: 512/1024 images, 41 s, ETA 40 s``: a log's progress line for one loop."""
    count = f"{done}/{total}" if total else f"{done}"
    eta = eta_seconds(done, total, elapsed)
    return f"{label}: {count} {unit}, {elapsed:.0f} s" + (f", ETA {eta:.0f} s" if eta is not None else "")


class LineReporter:
    """For logs (stderr not a terminal): ``emit(line)`` at most every ``every_s`` seconds per loop."""

    def __init__(self, emit: Callable[[str], None], every_s: float = LINE_EVERY_S,
                 clock: Callable[[], float] = time.perf_counter):
        self.emit, self.every_s, self.clock = emit, every_s, clock

    @contextmanager
    def task(self, label: str, total: int | None, unit: str) -> Iterator[Advance]:
        t0 = last = self.clock()
        done = 0

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = self.clock()
            if now - last >= self.every_s:
                last = now
                self.emit(progress_line(label, done, total, unit, now - t0))

        yield advance


class RichReporter:
    """A rich ``Progress`` (bar, count, ETA) for counted loops, beside the command's own step line."""

    def __init__(self, progress):
        self.progress = progress

    @contextmanager
    def task(self, label: str, total: int | None, unit: str) -> Iterator[Advance]:
        tid = self.progress.add_task(f"{label} ({unit})", total=total)
        try:
            yield lambda n: self.progress.advance(tid, n)
        finally:
            self.progress.remove_task(tid)


__all__ = ["counted", "reporting", "LineReporter", "RichReporter", "progress_line", "eta_seconds", "LINE_EVERY_S"]
