"""Output paths checked before any work: every command that writes calls one of these first.

A path that cannot receive the output (its parent is a file, the file system is read-only or
virtual, permissions refuse it, a file stands where a folder should be, or the reverse) is an
``EdgerepError`` naming the flag and the path, in well under a second, instead of an internal
error after minutes of work. The probe creates and removes one temporary file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

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


__all__ = ["check_output_file", "check_output_dir"]
