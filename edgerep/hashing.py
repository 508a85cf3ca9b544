"""One streaming sha256 of a file's bytes: bundle manifests, checkpoint identity, calibration cache
keys, TensorRT plan sidecars and data-set fingerprints all hash files the same way."""
from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path``, read in ``chunk``-byte blocks (bounded memory at any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


__all__ = ["sha256_file"]
