"""Write a bundle directory whole or not at all.

Everything goes into a hidden temporary directory beside the output path, which is renamed into
place only when the work succeeded. A lock file stops two writers of the same output; SIGTERM is
turned into an exception so the temporary directory is removed on the way out; a temporary
directory left by a killed process (SIGKILL, power loss) is never at the output path and is
removed by the next writer.
"""
from __future__ import annotations

import errno
import os
import shutil
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from edgerep.errors import EdgerepError
from edgerep.interrupts import raise_if_taken, signals_as_exceptions

TMP_MARK = ".edgerep-tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(parent: Path, name: str) -> list[Path]:
    """Remove temporary directories of ``name`` left by writers that no longer run."""
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.glob(f".{name}{TMP_MARK}*"):
        try:
            pid = int(p.name.rsplit(TMP_MARK, 1)[1].split("-")[0])
        except (ValueError, IndexError):
            continue
        if not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def check_output_path(out: Path, force: bool) -> None:
    """Fail early (before any work) when the output path cannot receive a bundle."""
    if out.exists() and not out.is_dir():
        raise EdgerepError(f"{out}: output path exists and is a file, not a directory",
                           hint="choose another --out")
    if out.exists() and any(out.iterdir()) and not force:
        raise EdgerepError(f"{out}: a bundle already exists there", hint="pass --force to replace it")


def lock_path(out: str | Path) -> Path:
    """The lock file of the bundle at ``out`` (``.<name>.lock`` beside it; it exists only while a writer runs)."""
    out = Path(out).resolve()
    return out.parent / f".{out.name}.lock"


@contextmanager
def bundle_lock(out: str | Path) -> Iterator[None]:
    """Hold the writer's lock of ``out`` (a second writer gets a one-line ``EdgerepError`` at once).

    The lock file is removed when the holder leaves, on success, failure or interrupt."""
    import fcntl

    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        raise EdgerepError(f"{path.parent}: cannot create output directory ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgerepError(f"{Path(out).resolve()}: another edgerep process is writing this bundle",
                               hint="wait for it, or use another --out") from None
        try:
            yield
        finally:
            try:  # still holding the lock: nobody else can be using this file
                os.unlink(path)
            except OSError:
                pass
    finally:
        os.close(fd)


@contextmanager
def atomic_bundle(out: str | Path, *, force: bool = False, locked: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; on success it becomes ``out`` (replacing it if ``force``).

    On any exception, SIGINT or SIGTERM the temporary directory is removed and ``out`` is left
    exactly as it was. ``locked``: the caller already holds ``bundle_lock(out)``.
    """
    out = Path(out).resolve()
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgerepError(f"{parent}: cannot create output directory ({e.strerror})") from None
    check_output_path(out, force)
    with (nullcontext() if locked else bundle_lock(out)), signals_as_exceptions():
        check_output_path(out, force)  # re-check under the lock
        clean_stale_temps(parent, out.name)
        tmp = parent / f".{out.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            try:
                yield tmp
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    raise EdgerepError(f"{out}: no space left on the device while writing the bundle",
                                       hint="free some space; nothing was written at the output path") from None
                raise
            raise_if_taken()  # the interrupt was swallowed somewhere (a finalizer): do not commit
            old = None
            if out.exists():
                old = parent / f".{out.name}{TMP_MARK}{os.getpid()}-old-{uuid.uuid4().hex[:8]}"
                os.replace(out, old)
            os.replace(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
