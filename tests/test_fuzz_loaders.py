"""Bounded fuzzing (hypothesis) of the checkpoint loader and the data readers: whatever the bytes, the
result is a loaded object or a documented ``EdgerepError`` subclass (one line, exit 2) - never another
exception, never a hang. Seeded and capped so the whole file runs in well under 30 s in CI.
"""
from __future__ import annotations

import io
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgerep.errors import DataError, EdgerepError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"
#: CI runs 30 seeded examples per test; EDGEREP_FUZZ_EXAMPLES=500 searches deeper (random seeds) on a workstation
_DEEP = int(os.environ.get("EDGEREP_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 30, deadline=None, derandomize=not _DEEP, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])


@lru_cache(maxsize=1)
def demo_bytes() -> bytes:
    return DEMO.read_bytes()


@lru_cache(maxsize=1)
def demo_meta():
    from edgerep.checkpoint import load_checkpoint

    return load_checkpoint(DEMO).meta


def load_or_documented_error(path: Path, **kw):
    """load_checkpoint, allowing only the documented errors; returns the result or the error."""
    from edgerep.checkpoint import load_checkpoint

    try:
        return load_checkpoint(path, **kw)
    except EdgerepError as e:  # CheckpointError, FoldError, UnknownModelError...: all one line, exit 2
        line = e.one_line()
        assert "\n" not in line and line
        return e


# ------------------------------------------------------------------------------------------
# checkpoint loader
# ------------------------------------------------------------------------------------------
@FUZZ
@given(cut=st.integers(0, 400_000), flips=st.lists(st.tuples(st.integers(0, 400_000), st.integers(0, 255)),
                                                    max_size=4), tail=st.binary(max_size=64))
def test_mutated_demo_checkpoint(tmp_path_factory, cut, flips, tail):
    """Truncate the demo file anywhere, overwrite a few bytes anywhere, append junk."""
    raw = bytearray(demo_bytes())
    for pos, val in flips:
        raw[pos % len(raw)] = val
    data = bytes(raw[: cut % (len(raw) + 1)]) + tail
    p = tmp_path_factory.mktemp("ck") / "mutated.pt"
    p.write_bytes(data)
    r = load_or_documented_error(p)
    if data == demo_bytes():
        assert not isinstance(r, Exception)


@FUZZ
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".pt", ".pth", ".pt2", ".bin"]))
def test_arbitrary_bytes(tmp_path_factory, data, suffix):
    p = tmp_path_factory.mktemp("ck") / f"any{suffix}"
    p.write_bytes(data)
    assert isinstance(load_or_documented_error(p), EdgerepError)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True),
                     st.text(max_size=8), st.binary(max_size=8))
_values = st.recursive(_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                     st.dictionaries(st.text(max_size=6), c, max_size=4)),
                       max_leaves=8)
_META_FIELDS = ["arch", "arch_kwargs", "input_shape", "mean", "std", "layout", "class_names", "dataset", "folded",
                "format_version", "extra"]


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(_META_FIELDS), _values, max_size=4))
def test_edgerep_checkpoint_with_fuzzed_meta(tmp_path_factory, changes):
    """Every meta field replaced by arbitrary JSON-like values: load or one CheckpointError naming the file."""
    o = torch.load(DEMO, map_location="cpu", weights_only=True)
    o["meta"] = {**o["meta"], **changes}
    p = tmp_path_factory.mktemp("ck") / "meta.pt"
    torch.save(o, p)
    r = load_or_documented_error(p)
    if isinstance(r, Exception):
        assert str(p) in r.one_line() or "--arch" in r.one_line()


_tensors = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.uint8, np.float16]),
                      hnp.array_shapes(min_dims=0, max_dims=4, max_side=4)  # default floats include NaN/Inf
                      ).map(lambda a: torch.from_numpy(np.ascontiguousarray(a)))


@FUZZ
@given(obj=st.one_of(
    st.dictionaries(st.text(min_size=1, max_size=12), _tensors, max_size=5),
    st.dictionaries(st.sampled_from(["state_dict", "model", "meta", "edgerep_checkpoint", "epoch"]),
                    st.one_of(_values, st.dictionaries(st.text(max_size=8), _tensors, max_size=3)), max_size=4),
    _values),
    arch=st.sampled_from([None, "repvgg_digits", "no_such_arch"]))
def test_arbitrary_weights_only_objects(tmp_path_factory, obj, arch):
    """Whatever a weights-only pickle may hold (dicts, lists, tensors of any shape, NaN): load or documented error."""
    p = tmp_path_factory.mktemp("ck") / "obj.pt"
    torch.save(obj, p)
    load_or_documented_error(p, arch=arch)


# ------------------------------------------------------------------------------------------
# .npz reader
# ------------------------------------------------------------------------------------------
_dtypes = st.sampled_from([np.uint8, np.int8, np.int64, np.uint16, np.float32, np.float64, np.float16, np.bool_,
                           np.complex64, "U3", "S2", "M8[s]", np.dtype([("a", np.uint8)])])
_arrays = _dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0,
                                                                     max_side=6)))


def read_all(ds) -> int:
    n = 0
    for x, y in ds.batches(7):
        assert x.dtype == np.float32 and x.ndim == 4 and np.isfinite(x).all()
        assert y is None or (y.dtype == np.int64 and len(y) == len(x))
        n += len(x)
    assert n == len(ds)
    return n


def open_and_read_or_documented_error(spec, split: str, meta) -> object:
    from edgerep.data import open_dataset

    try:
        ds = open_dataset(spec, split=split, meta=meta)
        return read_all(ds)
    except DataError as e:
        assert "\n" not in e.one_line()
        return e


@FUZZ
@given(arrays=st.dictionaries(st.sampled_from(["x", "y", "x_calib", "y_calib", "x_test", "labels"]), _arrays,
                              min_size=1, max_size=3),
       compressed=st.booleans(), split=st.sampled_from(["calib", "test"]), with_meta=st.booleans())
def test_npz_of_arbitrary_arrays(tmp_path_factory, arrays, compressed, split, with_meta):
    p = tmp_path_factory.mktemp("npz") / "d.npz"
    (np.savez_compressed if compressed else np.savez)(p, **arrays)
    open_and_read_or_documented_error(p, split, demo_meta() if with_meta else None)


@lru_cache(maxsize=2)
def _good_npz_bytes(compressed: bool) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    # 600 rows (38 KB): large enough that a damaged byte is often met mid-read, not while parsing the header
    (np.savez_compressed if compressed else np.savez)(buf, x=rng.integers(0, 255, (600, 8, 8), dtype=np.uint8),
                                                      y=rng.integers(0, 10, 600))
    return buf.getvalue()


@FUZZ
@given(compressed=st.booleans(), cut=st.one_of(st.none(), st.integers(0, 10**6)),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_mutated_npz(tmp_path_factory, compressed, cut, flips):
    """Bytes overwritten anywhere (header, data, central directory), optionally cut off."""
    raw = bytearray(_good_npz_bytes(compressed))
    for pos, val in flips:
        raw[pos % len(raw)] = val
    p = tmp_path_factory.mktemp("npz") / "m.npz"
    p.write_bytes(bytes(raw if cut is None else raw[: cut % (len(raw) + 1)]))
    open_and_read_or_documented_error(p, "calib", demo_meta())


# ------------------------------------------------------------------------------------------
# image folder reader
# ------------------------------------------------------------------------------------------
_MODES = ["L", "RGB", "RGBA", "P", "1", "LA", "I", "F", "CMYK", "I;16"]
_FORMATS = {"png": "PNG", "bmp": "BMP", "gif": "GIF", "tif": "TIFF", "jpg": "JPEG", "webp": "WEBP", "ppm": "PPM"}


def _image_bytes(mode: str, fmt: str, w: int, h: int, seed: int) -> bytes | None:
    from PIL import Image

    a = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(a).convert(mode) if mode != "I;16" else Image.fromarray(a[..., 0].astype(np.uint16) * 99)
    buf = io.BytesIO()
    try:
        im.save(buf, format=_FORMATS[fmt])
    except (OSError, ValueError, KeyError):  # this format cannot store this mode: not an input case
        return None
    return buf.getvalue()


_files = st.tuples(st.sampled_from([str(i) for i in range(10)] + ["cat"]), st.sampled_from(_MODES),
                   st.sampled_from(sorted(_FORMATS)), st.integers(1, 40), st.integers(1, 40), st.integers(0, 99),
                   st.one_of(st.none(), st.integers(0, 400)), st.binary(max_size=16))


@FUZZ
@given(files=st.lists(_files, min_size=0, max_size=5), split=st.sampled_from(["calib", "test"]))
def test_image_folder_of_arbitrary_images(tmp_path_factory, files, split):
    """Mixed modes, formats, sizes, cut-off files, junk files with image names, unknown class folders."""
    root = tmp_path_factory.mktemp("img")
    for i, (cls, mode, fmt, w, h, seed, cut, junk) in enumerate(files):
        data = _image_bytes(mode, fmt, w, h, seed)
        if data is None:
            data = junk
        elif cut is not None:
            data = data[:cut] + junk
        (root / cls).mkdir(exist_ok=True)
        (root / cls / f"f{i}.{fmt}").write_bytes(data)
    open_and_read_or_documented_error(root, split, demo_meta())


def test_fuzz_inputs_reach_the_readers(tmp_path):
    """Guard against a fuzz test that only ever sees its first error: a clean input of each kind loads."""
    from PIL import Image

    from edgerep.data import open_dataset

    (tmp_path / "ok.npz").write_bytes(_good_npz_bytes(True))
    assert read_all(open_dataset(tmp_path / "ok.npz", split="calib", meta=demo_meta())) == 600
    (tmp_path / "img" / "3").mkdir(parents=True)
    Image.new("RGB", (9, 9)).save(tmp_path / "img" / "3" / "a.png")
    assert read_all(open_dataset(tmp_path / "img", split="calib", meta=demo_meta())) == 1
    assert not isinstance(load_or_documented_error(DEMO), Exception)


@pytest.fixture(autouse=True)
def _quiet_torch_export_logs():
    """torch.export logs a traceback (as a warning) for every unreadable .pt2; keep fuzz output readable."""
    import logging

    lg = logging.getLogger("torch.export")
    old = lg.level
    lg.setLevel(logging.ERROR)
    yield
    lg.setLevel(old)

