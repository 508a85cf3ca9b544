"""SIGINT and SIGTERM as Python exceptions, and a way to hold them off around native code that a
Python exception must not cross (MLPerf LoadGen: an exception raised inside its callbacks aborts or
crashes the process, leaving locks and temporary folders behind)."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM arrived; raised so ``finally`` blocks clean up (BaseException: not caught by ``except Exception``)."""


def raise_for(signum: int) -> None:
    """Raise what ``signum`` means here: ``KeyboardInterrupt`` for SIGINT, ``Terminated`` otherwise."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(f"signal {signum}")


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def signals_as_exceptions(ignore_after: bool = False) -> Iterator[dict]:
    """SIGTERM raises ``Terminated``, SIGINT ``KeyboardInterrupt``; both are remembered in the yielded
    dict (Python drops an exception raised while a finalizer runs, so a caller can check again).

    Only the first signal raises: a second one (a user pressing Ctrl-C twice) is recorded, so the
    clean-up the first one started runs to its end. ``ignore_after`` (the command's outermost block):
    once a signal was taken, later ones are ignored until the process exits, so nothing kills it
    between the clean-up and its exit code (130 / 143)."""
    seen: dict = {}
    if not _in_main_thread():  # handlers can only be set from the main thread: leave signals alone
        yield seen
        return

    def handler(signum, frame):  # noqa: ARG001
        if "signal" in seen:  # already unwinding for an earlier signal: let the clean-up finish
            seen.setdefault("later", []).append(signum)
            return
        seen["signal"] = signum
        raise_for(signum)

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield seen
    finally:
        for s, h in old.items():
            signal.signal(s, signal.SIG_IGN if (ignore_after and "signal" in seen) else h)


class Deferred:
    """The first SIGINT / SIGTERM that arrived while signals were deferred (``pending``), or None."""

    pending: int | None = None

    def __bool__(self) -> bool:
        return self.pending is not None


@contextmanager
def deferred_signals() -> Iterator[Deferred]:
    """Hold SIGINT and SIGTERM: inside, a signal is only recorded (``Deferred.pending``, for the code
    inside to wind down early); on the way out it is raised as ``KeyboardInterrupt`` / ``Terminated``.
    No Python exception is raised while the block runs, so native code calling back into Python
    (LoadGen's SUT and QSL callbacks) is never torn down mid-call."""
    state = Deferred()
    if not _in_main_thread():
        yield state
        return

    def record(signum, frame):  # noqa: ARG001
        if state.pending is None:
            state.pending = signum

    old = {s: signal.signal(s, record) for s in SIGNALS}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if state.pending is not None:  # the signal wins over whatever else ended the block
            raise_for(state.pending)


__all__ = ["Terminated", "Deferred", "signals_as_exceptions", "deferred_signals", "raise_for"]
