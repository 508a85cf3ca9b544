"""``.npz`` data sets with arrays ``x`` (images) and optionally ``y`` (int labels), read in batches.

Rows are streamed out of the zip member with ``numpy.lib.format`` (compressed or not), so a
large file is never loaded whole. Per split, ``x_<split>`` / ``y_<split>`` win over ``x`` / ``y``.
``x`` layouts: float arrays of the model's exact (N, C, H, W) shape are taken as already
preprocessed; integer arrays (uint8 0..255; NCHW, NHWC or NHW) are raw pixels that are scaled
to [0, 1], resized (bilinear) and normalized with the checkpoint's mean / std.
"""
from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from edgerep.data.base import Dataset, Preprocess, pixel_digest
from edgerep.errors import DataError
from edgerep.hashing import sha256_file


#: what reading a damaged zip member can raise (zipfile, zlib, numpy's header parser)
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, SyntaxError, KeyError,
                NotImplementedError, TypeError, OverflowError, MemoryError)


class _Member:
    """One ``.npy`` inside the zip: dtype, shape, and a forward-only row reader."""

    def __init__(self, zf: zipfile.ZipFile, key: str, path: Path):
        self.zf, self.name, self.path = zf, key + ".npy", path
        try:
            with self._open() as f:
                self.shape, self.fortran, self.dtype, self.offset = self._header(f)
        except Exception as e:  # numpy parses the header with ast/tokenize: damaged bytes raise almost anything
            if isinstance(e, DataError):
                raise
            raise DataError(f"{path}: array {key!r} is not a readable .npy member ({type(e).__name__}: "
                            f"{str(e)[:120]})", hint="re-save it with np.savez") from None
        if self.fortran:
            raise DataError(f"{path}: array {key!r} is Fortran-ordered; save it C-ordered (np.ascontiguousarray)")
        if self.dtype.hasobject:
            raise DataError(f"{path}: array {key!r} holds Python objects; only numeric arrays are read")
        if self.dtype.kind not in "iuf" or self.dtype.fields is not None:
            raise DataError(f"{path}: array {key!r} has dtype {self.dtype}; only integer or float arrays are read",
                            hint="store images as uint8 (raw pixels) or float32 (preprocessed), labels as int64")
        if any(d < 0 for d in self.shape):
            raise DataError(f"{path}: array {key!r} has a negative dimension in its shape {self.shape}")
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._f: IO[bytes] | None = None
        self._row = 0

    def _open(self) -> IO[bytes]:
        return self.zf.open(self.name)

    def _header(self, f: IO[bytes]):
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        return tuple(shape), fortran, np.dtype(dtype), f.tell()

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop``. A zip member streams forward only, so one open handle is kept and
        consecutive batches continue where the last stopped (reading a file front to back is O(N));
        going backwards reopens the member."""
        try:
            return self._read(start, stop)
        except _READ_ERRORS as e:  # bad CRC (checked at the member's end), bad deflate stream
            self.close()
            raise DataError(f"{self.path}: {self.name} is corrupt ({type(e).__name__}: {str(e)[:120]})",
                            hint="re-save or re-download the file") from None

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._f is None or start < self._row:
            self.close()
            self._f, self._row = self._open(), 0
            self._skip(self.offset)
        self._skip((start - self._row) * self.row_bytes)
        want = (stop - start) * self.row_bytes
        buf = self._f.read(want)
        if len(buf) != want:
            raise DataError(f"{self.path}: {self.name} is truncated")
        self._row = stop
        return np.frombuffer(buf, dtype=self.dtype).reshape((stop - start,) + self.shape[1:])

    def _skip(self, n: int) -> None:
        while n > 0:
            chunk = self._f.read(min(n, 1 << 24))
            if not chunk:
                raise DataError(f"{self.path}: {self.name} is truncated")
            n -= len(chunk)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class NpzDataset(Dataset):
    """Rows of an ``.npz`` file, preprocessed per batch."""

    def __init__(self, path: str | Path, split: str = "test", preprocess: Preprocess | None = None,
                 class_names: list[str] | None = None):
        self.path = Path(path)
        try:
            self.zf = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
            raise DataError(f"{self.path}: not a readable .npz file ({e})") from None
        keys = {n[:-4] for n in self.zf.namelist() if n.endswith(".npy")}
        xk = f"x_{split}" if f"x_{split}" in keys else "x"
        yk = f"y_{split}" if f"y_{split}" in keys else "y"
        if xk not in keys:
            raise DataError(f"{self.path}: no array 'x' (found {', '.join(sorted(keys)) or 'none'})",
                            hint="save with np.savez(path, x=images, y=labels)")
        self.x = _Member(self.zf, xk, self.path)
        self.y = _Member(self.zf, yk, self.path) if yk in keys else None
        if len(self.x.shape) not in (3, 4):
            raise DataError(f"{self.path}: 'x' has shape {self.x.shape}; expected (N,C,H,W), (N,H,W,C) or (N,H,W)")
        if 0 in self.x.shape[1:]:
            raise DataError(f"{self.path}: 'x' has shape {self.x.shape}: images with no pixels")
        if self.y is not None and (len(self.y.shape) != 1 or self.y.shape[0] != self.x.shape[0]):
            raise DataError(f"{self.path}: 'y' has shape {self.y.shape}, expected ({self.x.shape[0]},)")
        self.pre = preprocess or Preprocess.from_meta(None, default_shape=self._guess_shape())
        self.has_labels = self.y is not None
        self.class_names = class_names
        self.name = f"{self.path.name}:{split}"
        self.split = split

    def _guess_shape(self) -> tuple[int, int, int]:
        s = self.x.shape[1:]
        if len(s) == 2:
            return (1, s[0], s[1])
        return (s[0], s[1], s[2]) if s[0] in (1, 3) else (s[2], s[0], s[1])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def _read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        x = self.x.read(start, stop)
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))[0]) + start
            raise DataError(f"{self.path}: 'x' row {bad} holds NaN or Inf", hint="clean the data set")
        y = self._labels(start, stop) if self.y is not None else None
        return self._prepare(x), y

    def _labels(self, start: int, stop: int) -> np.ndarray:
        y = self.y.read(start, stop)
        if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DataError(f"{self.path}: 'y' holds non-integer labels (rows {start}..{stop - 1})",
                            hint="store labels as integers: y.astype(np.int64)")
        return y.astype(np.int64)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        c, h, w = self.pre.input_shape
        if np.issubdtype(x.dtype, np.floating):
            if x.shape[1:] != (c, h, w):
                raise DataError(f"{self.path}: float 'x' rows have shape {x.shape[1:]}, the model takes {(c, h, w)}",
                                hint="float arrays must be preprocessed NCHW; store raw pixels as uint8 instead")
            return x.astype(np.float32)
        if x.ndim == 3:
            x = x[:, None]
        elif x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        x = x.astype(np.float32) / 255.0
        if x.shape[1] != c:
            if x.shape[1] == 1:
                x = np.repeat(x, c, axis=1)
            elif c == 1:
                x = x.mean(axis=1, keepdims=True)
            else:
                raise DataError(f"{self.path}: 'x' has {x.shape[1]} channels, the model takes {c}")
        return self.pre.normalize(self.pre.resize_batch(x))

    @property
    def raw_pixels(self) -> bool:
        """Integer ``x`` is raw pixels that need preprocessing; float ``x`` is model-ready."""
        return not np.issubdtype(self.x.dtype, np.floating)

    def sample_ids(self) -> list[str]:
        key = self.x.name[:-4]
        prefix = f"{self.path.name}#" if key == "x" else f"{self.path.name}#{key}/"
        return [f"{prefix}{i}" for i in range(len(self))]

    def sample_digests(self) -> list[str]:
        out = []
        for start in range(0, len(self), 256):
            rows = self.x.read(start, min(len(self), start + 256))
            if rows.ndim == 4 and rows.shape[1] not in (1, 3) and rows.shape[-1] in (1, 3):
                rows = rows.transpose(0, 3, 1, 2)  # NHWC -> NCHW, as _prepare reads it
            out += [pixel_digest(r) for r in rows]  # decoded pixels, the same digest as the PNG of the image
        return out

    def labels(self) -> np.ndarray | None:
        return None if self.y is None else self._labels(0, len(self))

    def _identity(self) -> dict:
        return {"set": "npz", "sha256": sha256_file(self.path), "split": self.split, **self.pre.to_dict()}
