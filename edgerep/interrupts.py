"""SIGINT and SIGTERM as Python exceptions, and a way to hold them off around native code that a
Python exception must not cross (MLPerf LoadGen: an exception raised inside its callbacks aborts or
crashes the process, leaving locks and temporary folders behind)."""
from __future__ import annotations

import signal
import sys
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


_ACTIVE: list[dict] = []  # the ``seen`` dicts of the signals_as_exceptions blocks now open, outermost first


@contextmanager
def signals_as_exceptions(ignore_after: bool = False) -> Iterator[dict]:
    """SIGTERM raises ``Terminated``, SIGINT ``KeyboardInterrupt``; both are remembered in the yielded
    dict (Python drops an exception raised while a finalizer runs, so a caller can check again).

    Only the first signal raises: a second one (a user pressing Ctrl-C twice) is recorded, so the
    clean-up the first one started runs to its end. ``ignore_after`` (the command's outermost block, in
    a process about to exit): when the block ends, SIGINT/SIGTERM stay ignored, so nothing kills the
    process between its clean-up (or its finished work) and its exit code: 130 / 143 after a signal,
    the command's own code when a signal comes after the work was done (a bundle already in place is
    complete; a late Ctrl-C does not undo it)."""
    seen: dict = {}
    if not _in_main_thread():  # handlers can only be set from the main thread: leave signals alone
        yield seen
        return

    def handler(signum, frame):  # noqa: ARG001
        if "signal" in seen:  # already unwinding for an earlier signal: let the clean-up finish
            seen.setdefault("later", []).append(signum)
            return
        for d in _ACTIVE:  # the enclosing blocks learn it too (native code may turn the exception into its own)
            d.setdefault("signal", signum)
        raise_for(signum)

    old = {s: signal.signal(s, handler) for s in SIGNALS}
    old_hook = sys.unraisablehook
    sys.unraisablehook = _quiet_about_signals(old_hook)
    _ACTIVE.append(seen)
    try:
        yield seen
    finally:
        _ACTIVE.remove(seen)
        sys.unraisablehook = old_hook
        for s, h in old.items():
            signal.signal(s, signal.SIG_IGN if ignore_after else h)


def _quiet_about_signals(fallback):
    """An unraisable hook: Python drops an exception raised inside a finalizer or weakref callback (a
    signal that lands in matplotlib's clean-up, say) and prints its traceback; ours is recorded already
    (``taken``) and raised at the next stage, so it is not printed. Anything else goes to ``fallback``."""
    def hook(unraisable):
        if isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)) and taken() is not None:
            return
        fallback(unraisable)

    return hook


def taken() -> int | None:
    """The signal an open ``signals_as_exceptions`` block took, or None: for code that must not go on
    after one even where the exception it raised was swallowed (inside a finalizer)."""
    for d in _ACTIVE:
        if d.get("signal") is not None:
            return d["signal"]
    return None


def raise_if_taken() -> None:
    """Raise the interrupt now if a signal was taken but its exception was swallowed somewhere."""
    signum = taken()
    if signum is not None:
        raise_for(signum)


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


__all__ = ["Terminated", "Deferred", "signals_as_exceptions", "deferred_signals", "raise_for", "raise_if_taken", "taken"]
