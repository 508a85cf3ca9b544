"""The INT8 check's report kept on disk per model, code, data and settings: a second deploy of the same checkpoint
on the same data reads it instead of running the check again (10-11 s of RepVGG-A0's deploy at 224).

A report is read back only under the key it was written with (``check_key``): the unfolded model's
``torch_identity`` (checkpoint sha256, weights and structure, the Python source of every package that runs it,
edgerep's check code included; torch version, threads, CPU), a sha256 of the calibration inputs the check saw and
of the evaluation batches (inputs and labels), and the check's settings. A model whose source is not known
(``edgerep.code_identity``) is never cached. One JSON file per report: the report's dataclasses as plain data
(rebuilt, nested types and all, by pydantic) and its PNGs; files that do not load are recomputed; the folder is
kept under ``edgerep.reference_cache.CACHE_BYTES`` like the outputs caches.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

#: the cached file's format; a file of any other is ignored
FORMAT = "edgerep.check-cache/1"


def arrays_digest(arrays: Iterable[Any]) -> str:
    """sha256 of a sequence of arrays or tensors (dtype, shape and bytes of each, in order; None kept as such)."""
    h = hashlib.sha256()
    for t in arrays:
        if t is None:
            h.update(b"None;")
            continue
        a = np.ascontiguousarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t)
        h.update(f"{a.dtype}|{a.shape};".encode())
        h.update(a.data)
    return h.hexdigest()


def check_key(model_identity: str, calib: Iterable[Any] | None, evals: str | None, settings: dict[str, Any]) -> str:
    """The cache key of one check: the model (``torch_identity``), the calibration tensors' bytes, the evaluation
    batches (``arrays_digest`` of their inputs and labels, or None) and the settings."""
    blob = json.dumps({"format": FORMAT, "model": model_identity, "evals": evals, "settings": settings,
                       "calib": arrays_digest(calib or ())}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"check-{key}.json"


def load(cache_dir: Path, key: str, plots_to: Path) -> Any | None:
    """The ``CheckReport`` kept under ``key``, its PNGs written into ``plots_to``; None when there is none (or it
    does not load)."""
    from pydantic import TypeAdapter, ValidationError

    from edgerep.quant.check import CheckReport

    path = _path(cache_dir, key)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("format") != FORMAT:  # the key is in the file's name
            return None
        report = TypeAdapter(CheckReport).validate_python(d["report"])
        pngs = {name: base64.b64decode(data) for name, data in d["plots"].items()}
    except (OSError, ValueError, KeyError, TypeError, ValidationError):
        return None
    plots_to.mkdir(parents=True, exist_ok=True)
    for name, data in pngs.items():
        (plots_to / Path(name).name).write_bytes(data)
    try:
        os.utime(path)  # recently used: ``prune`` keeps it
    except OSError:
        pass
    return report


def save(cache_dir: Path, key: str, report: Any, plots_from: Path) -> Path | None:
    """Keep ``report`` (a ``CheckReport``) and the ``check_*.png`` files in ``plots_from`` under ``key``; None
    when the cache cannot be written (a read-only cache only costs the check next time)."""
    plots = {f.name: base64.b64encode(f.read_bytes()).decode("ascii")
             for f in sorted(Path(plots_from).glob("check_*.png"))}
    blob = json.dumps({"format": FORMAT, "key": key, "report": dataclasses.asdict(report), "plots": plots})
    path = _path(cache_dir, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(blob, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        return None
    return path


__all__ = ["FORMAT", "arrays_digest", "check_key", "load", "save"]
