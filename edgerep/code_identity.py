"""What Python source a torch model's outputs depend on, as one digest (cache keys: ``edgerep.reference_cache``).

A torch model's outputs depend on its weights *and* on the code of its modules' ``forward``: a checkpoint's
sha256 alone would let a cache hand back outputs the model no longer computes after an upgrade of edgerep, timm
or the user's own model file. ``source_digest`` hashes every ``.py`` file of each package that defines a class
in the model's modules (and their base classes), edgerep's own package always; torch is named by its version
instead (its version is in every key). A class whose source cannot be found (defined in an interactive
``__main__``, or built at run time) makes the digest ``None``: such a model's outputs are not cached.
"""
from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any

#: packages named by their version, not their source (their version is in every key that uses a digest)
VERSIONED = frozenset({"torch", "builtins"})

_DIGESTS: dict[tuple, str | None] = {}  # (source root, every file's path, size and mtime) -> its digest


def _roots_of(module_name: str) -> list[Path]:
    """The folders of the top-level package ``module_name`` belongs to (a namespace package may have several), or
    the file of a single-file module; [] when it is not loaded from files."""
    top = sys.modules.get(module_name.split(".")[0])
    if top is None:
        return []
    paths = list(getattr(top, "__path__", []) or [])
    if paths:
        return [Path(p) for p in paths]
    f = getattr(top, "__file__", None)
    return [Path(f)] if f else []


def _digest_root(root: Path) -> str | None:
    """sha256 over the relative paths and bytes of every ``.py`` file under ``root`` (or of the file itself); read
    again only when a file's size or modification time changed (a long-lived process sees an edit)."""
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    try:
        stats = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])
    except OSError:
        return None
    key = (str(root), stats)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        try:
            for f in files:
                h.update(str(f.relative_to(root) if root.is_dir() else f.name).encode() + b"\0")
                h.update(f.read_bytes())
            _DIGESTS[key] = h.hexdigest()
        except OSError:
            _DIGESTS[key] = None
    return _DIGESTS[key]


def source_roots(model: Any) -> set[Path] | None:
    """The source roots (package folders or module files) of every class in ``model``'s modules and their bases,
    edgerep's always; None when one cannot be found."""
    roots = {Path(__file__).resolve().parent}
    classes = {c for m in model.modules() for c in type(m).__mro__}
    for cls in classes:
        name = cls.__module__ or ""
        if name.split(".")[0] in VERSIONED:
            continue
        found = _roots_of(name)
        if not found:
            try:
                found = [Path(inspect.getfile(cls))]
            except (TypeError, OSError):
                return None
        if not all(r.exists() for r in found):  # source that is gone (or an interactive __main__)
            return None
        roots.update(r.resolve() for r in found)
    return roots


def source_digest(model: Any) -> str | None:
    """One sha256 of the Python source that runs ``model`` (see the module's docstring); None when unknown."""
    roots = source_roots(model)
    if roots is None:
        return None
    h = hashlib.sha256()
    for root in sorted(roots):
        d = _digest_root(root)
        if d is None:
            return None
        h.update(f"{root.name}:{d}\n".encode())
    return h.hexdigest()


def weights_digest(model: Any) -> str | None:
    """sha256 of ``model``'s state dict (names, dtypes, shapes and bytes) and its ``repr`` (strides, padding,
    groups: what a Conv2d keeps outside its state dict); None for a tensor that has no plain bytes."""
    import torch

    h = hashlib.sha256(repr(model).encode())
    try:
        for name, t in model.state_dict().items():
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    except (RuntimeError, TypeError):  # a quantized or sparse tensor
        return None
    return h.hexdigest()


__all__ = ["source_digest", "source_roots", "weights_digest", "VERSIONED"]
