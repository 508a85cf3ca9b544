"""Samples kept in a file instead of the resident set, read back a slice at a time.

The quantizer scores every candidate on the whole selection set, about eight passes. Held in memory,
that set was the largest thing alive while it ran: 256 images at 3x224x224 float32 are 154 MB
(616 MB at 1,024), and the deploy's peak memory grew with it. ``collect_samples`` writes a large set's
batches to a file as they arrive; ``SpilledArray[i:j]`` reads those rows back (a copy of the same float32
bytes, so every score is unchanged). The file's pages sit in the OS page cache, which the kernel can
reclaim and which is not the process's resident set. A small set stays an ordinary array.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

#: a set whose float32 inputs pass this many bytes goes to a file (64 MiB: 107 images at 3x224x224,
#: every digits or 64x64 set stays in memory)
SPILL_BYTES = 64 * 2**20


class SpilledArray:
    """A read-only (N, ...) array in a file: ``len``, ``shape``, ``dtype`` and ``a[i:j]`` (a new array)."""

    def __init__(self, path: str | os.PathLike[str], sample_shape: tuple[int, ...], dtype=np.float32):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self._row = int(np.prod(self.sample_shape, dtype=np.int64))
        self.n = 0
        self._writer = open(self.path, "wb")

    def append(self, block: np.ndarray) -> None:
        """Add rows at the end (only while writing)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.sample_shape:
            raise ValueError(f"rows of shape {block.shape[1:]} do not fit samples of shape {self.sample_shape}")
        block.tofile(self._writer)  # the array's own buffer, no bytes copy
        self.n += len(block)

    def finish(self) -> "SpilledArray":
        """Close the file for writing; from here on it is read-only."""
        self._writer.close()
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    @property
    def nbytes(self) -> int:
        return self.n * self._row * self.dtype.itemsize

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("a SpilledArray reads contiguous row slices only (a[i:j])")
        start, stop, _ = key.indices(self.n)
        count = max(0, stop - start)
        if not self._writer.closed:
            raise RuntimeError(f"{self.path}: still being written (call finish() first)")
        rows = np.fromfile(self.path, dtype=self.dtype, count=count * self._row,
                           offset=start * self._row * self.dtype.itemsize)
        return rows.reshape(count, *self.sample_shape)

    def __repr__(self) -> str:
        return f"SpilledArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"


def collect_samples(batches: Iterable[np.ndarray], spill_to: Path | None = None,
                    spill_bytes: int | None = None) -> np.ndarray | SpilledArray | None:
    """The batches as one float32 array, or, once they pass ``spill_bytes`` (default ``SPILL_BYTES``) and
    ``spill_to`` is given, as a ``SpilledArray`` in that file (from then on one batch at a time is resident).
    None when there were none."""
    spill_bytes = SPILL_BYTES if spill_bytes is None else spill_bytes
    held: list[np.ndarray] = []
    size = 0
    spilled: SpilledArray | None = None
    try:
        for x in batches:
            x = np.asarray(x, dtype=np.float32)
            if spilled is not None:
                spilled.append(x)
                continue
            held.append(x)
            size += x.nbytes
            if spill_to is not None and size > spill_bytes:
                spilled = SpilledArray(spill_to, x.shape[1:])
                for h in held:
                    spilled.append(h)
                held = []
    except BaseException:  # Ctrl-C or a bad sample: no open file left behind (the caller's folder removes it)
        if spilled is not None:
            spilled.finish()
        raise
    if spilled is not None:
        return spilled.finish()
    if not held:
        return None
    return np.ascontiguousarray(np.concatenate(held))


__all__ = ["SpilledArray", "collect_samples", "SPILL_BYTES"]
