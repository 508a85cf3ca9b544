"""A large sample set goes to a file and is read back slice by slice, the same bytes: the quantizer's selection
set no longer sits in the resident set (154 MB at 256 x 3 x 224 x 224), and every score it makes is unchanged."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from edgerep.spilled import SpilledArray, collect_samples


def _batches(n: int = 40, shape=(3, 16, 16), batch: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    return x, [x[i:i + batch] for i in range(0, n, batch)]


def test_a_small_set_stays_an_array(tmp_path):
    x, parts = _batches()
    got = collect_samples(iter(parts), tmp_path / "s.f32", spill_bytes=x.nbytes + 1)
    assert isinstance(got, np.ndarray) and not (tmp_path / "s.f32").exists()
    np.testing.assert_array_equal(got, x)
    assert collect_samples(iter([]), tmp_path / "e.f32") is None


@pytest.mark.parametrize("start,stop", [(0, 1), (0, 8), (5, 19), (32, 40), (38, 99), (40, 45), (None, None)])
def test_a_large_set_is_read_back_bit_for_bit(tmp_path, start, stop):
    x, parts = _batches()
    got = collect_samples((p.astype(np.float64) for p in parts), tmp_path / "s.f32", spill_bytes=3 * parts[0].nbytes)
    assert isinstance(got, SpilledArray)
    assert len(got) == 40 and got.shape == x.shape and got.ndim == 4 and got.nbytes == x.nbytes
    assert (tmp_path / "s.f32").stat().st_size == x.nbytes
    a = got[start:stop]
    assert a.dtype == np.float32 and a.flags.c_contiguous
    np.testing.assert_array_equal(a, x[start:stop])


def test_only_contiguous_slices_are_read(tmp_path):
    x, parts = _batches()
    got = collect_samples(iter(parts), tmp_path / "s.f32", spill_bytes=1)
    for key in (3, slice(0, 10, 2), [1, 2]):
        with pytest.raises(TypeError):
            got[key]
    with pytest.raises(ValueError):
        SpilledArray(tmp_path / "t.f32", (3, 16, 16)).append(np.zeros((2, 3, 8, 8), np.float32))


def test_spilling_bounds_what_is_resident_whatever_the_set_size(tmp_path):
    """numpy reports its buffers to tracemalloc: held whole, the peak is the set (twice, while concatenated);
    spilled, it is the threshold and a batch or two (its bytes on their way to the file), whatever the set's size."""
    x, parts = _batches(n=512, shape=(3, 32, 32), batch=16)
    del x
    peaks = {}
    for name, limit in (("held", None), ("spilled", 4 * parts[0].nbytes)):
        gen = (p.copy() for p in parts)  # each batch made on demand, as a data set yields them
        tracemalloc.start()
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        got = collect_samples(gen, tmp_path / f"{name}.f32", spill_bytes=limit if limit else 1 << 40)
        peaks[name] = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        del got
    set_bytes = sum(p.nbytes for p in parts)
    assert peaks["held"] >= set_bytes, peaks
    assert peaks["spilled"] < 4 * parts[0].nbytes + 3 * parts[0].nbytes < set_bytes / 4, peaks


def test_an_interrupted_collection_closes_its_file_at_once(tmp_path):
    """Ctrl-C while a set is being spilled: the file is closed before the interrupt reaches the caller (whose
    temporary folder then removes it; an open file would block that on some systems), not when the traceback dies."""
    import os

    _, parts = _batches()

    def interrupted():
        yield from parts[:3]
        raise KeyboardInterrupt

    def open_here() -> bool:
        fds = os.listdir("/proc/self/fd")
        return any(os.path.realpath(f"/proc/self/fd/{fd}") == str(tmp_path / "s.f32") for fd in fds)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd to list open files")
    try:
        collect_samples(interrupted(), tmp_path / "s.f32", spill_bytes=1)
    except KeyboardInterrupt as exc:  # its traceback, and the frames holding the writer, are alive here
        assert exc.__traceback__ is not None and (tmp_path / "s.f32").exists()
        assert not open_here()
    else:
        raise AssertionError("the interrupt was swallowed")
