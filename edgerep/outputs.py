"""Output paths checked before any work: every command that writes calls one of these first.

A path that cannot receive the output (its parent is a file, the file system is read-only or
virtual, permissions refuse it, a file stands where a folder should be, or the reverse) is an
``EdgerepError`` naming the flag and the path, in well under a second, instead of an internal
error after minutes of work. The probe creates and removes one temporary file.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgerep.errors import EdgerepError


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path, flag: str, target: Path) -> None:
    """Create and remove a temporary file in ``folder``: the only test a read-only or virtual file system cannot fool."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".edgerep-probe-", dir=folder)
    except OSError as e:
        raise EdgerepError(f"{flag} {target}: cannot write in {folder} ({e.strerror or e})",
                           hint="choose a writable location") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | Path, flag: str, *, create_parents: bool = False) -> Path:
    """``path`` can be written as a file: not a directory, its parent a writable directory (or,
    with ``create_parents``, creatable under a writable one). Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise EdgerepError(f"{flag} {path}: is a directory, expected a file name", hint="name a file inside it")
    parent = path.parent if str(path.parent) else Path(".")
    base = _nearest_existing(parent)
    if not base.is_dir():
        raise EdgerepError(f"{flag} {path}: {base} is a file, not a directory", hint="choose another path")
    if base != parent and not create_parents:
        raise EdgerepError(f"{flag} {path}: the folder {parent} does not exist", hint="create it first")
    _probe_writable(base, flag, path)
    return path


def check_output_dir(path: str | Path, flag: str) -> Path:
    """``path`` can be (or become) a directory we write into: not a file, nearest existing ancestor
    a writable directory. Nothing is created here."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EdgerepError(f"{flag} {path}: output path exists and is a file, not a directory",
                           hint="choose another path")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise EdgerepError(f"{flag} {path}: cannot create output directory ({base} is a file, not a directory)",
                           hint="choose another path")
    _probe_writable(base, flag, path)
    return path


@contextmanager
def staged_outputs(out: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; on success its entries are moved into ``out``
    (created if needed; same-named entries replaced), on failure nothing of this run is left: the
    folder is removed, and so is ``out`` if this run created it (a calibration cache inside it too)."""
    import shutil

    out = Path(out)
    existed = out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.edgerep-tmp-", dir=out.parent))
    ok = False
    try:
        yield tmp
        out.mkdir(exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            dest = out / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            os.replace(entry, dest)
        ok = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not ok and not existed and out.is_dir():
            shutil.rmtree(out, ignore_errors=True)


def moved_paths(obj: Any, tmp: Path, out: Path) -> Any:
    """``obj`` (JSON-like) with every string path inside ``tmp`` pointing at the same entry in ``out``."""
    if isinstance(obj, dict):
        return {k: moved_paths(v, tmp, out) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [moved_paths(v, tmp, out) for v in obj]
    if isinstance(obj, (str, Path)):
        text = str(obj)
        for root in {str(tmp), str(Path(tmp).resolve())}:
            if text == root or text.startswith(root + os.sep):
                return str(out) + text[len(root):]
    return obj


__all__ = ["check_output_file", "check_output_dir", "staged_outputs", "moved_paths"]
