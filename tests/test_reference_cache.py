"""The unfolded reference's outputs are computed once per checkpoint and input batch (issue 23)."""
from __future__ import annotations

import numpy as np

from edgerep.reference_cache import CachedReference


def test_second_run_reads_the_cache_and_keys_on_input_and_checkpoint(tmp_path):
    calls = []

    def model(x):
        calls.append(len(x))
        return x.reshape(len(x), -1).sum(1, keepdims=True) * 2.0

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3, 2, 2)).astype(np.float32), rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    first = CachedReference(model, "sha-1", tmp_path)
    out_a = first(a)
    assert (first.hits, first.misses) == (0, 1)
    again = CachedReference(model, "sha-1", tmp_path)  # a second deploy
    np.testing.assert_array_equal(again(a), out_a)
    assert (again.hits, again.misses) == (1, 0) and calls == [4]
    np.testing.assert_array_equal(again(b), model(b))  # other inputs: computed, not someone else's outputs
    other = CachedReference(model, "sha-2", tmp_path)  # another checkpoint never reads these
    other(a)
    assert (other.hits, other.misses) == (0, 1)
    (tmp_path / next(p.name for p in tmp_path.iterdir())).write_bytes(b"torn")  # a damaged file is recomputed
    assert all(np.isfinite(CachedReference(model, "sha-1", tmp_path)(x)).all() for x in (a, b))


def _onnx(tmp_path, name: str, scale: float):
    import torch
    from torch import nn

    from edgerep.quant.export import export_onnx

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 5)).eval()
    with torch.no_grad():
        m[0].weight.mul_(scale)
    export_onnx(m, tmp_path / name, (3, 4, 4))
    return tmp_path / name


def test_onnxruntime_outputs_are_keyed_on_file_session_and_cpu(tmp_path, monkeypatch):
    """A session's outputs are read back only for the same file bytes, session settings and CPU int8 ISA; a torch
    engine (its outputs depend on code, not only weights) is never cached."""
    import edgerep.quant.cpu_features as cf
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.engines.torch_engine import TorchEngine
    from edgerep.reference_cache import cached_engine, onnx_identity

    a, b = _onnx(tmp_path, "a.onnx", 1.0), _onnx(tmp_path, "b.onnx", 2.0)
    x = np.random.default_rng(1).standard_normal((3, 3, 4, 4)).astype(np.float32)
    cache = tmp_path / "outputs"
    first = cached_engine(OrtEngine(a, threads=1), cache)
    out = first.run(x)
    assert (first.hits, first.misses) == (0, 1) and (first.name, first.precision) == ("onnxruntime-cpu", "fp32")
    again = cached_engine(OrtEngine(a, threads=1), cache)
    np.testing.assert_array_equal(again.run(x), out)
    assert (again.hits, again.misses) == (1, 0)
    for other in (OrtEngine(b, threads=1), OrtEngine(a, threads=2), OrtEngine(a, threads=1, optimization="disable"),
                  OrtEngine(a, threads=1, session_config={"session.qdq_matmulnbits_accuracy_level": "4"})):
        c = cached_engine(other, cache)
        np.testing.assert_array_equal(c.run(x), other.run(x))
        assert (c.hits, c.misses) == (0, 1), other
    from dataclasses import replace

    real = cf.detect_cpu_features()
    before = onnx_identity(OrtEngine(a, threads=1))
    other = (replace(real, avx512f=True, avx512_vnni=True) if real.int8_dot == "avx2" else  # this host's other kind
             replace(real, avx2=True, avx512f=False, avx512_vnni=False, avx_vnni=False, amx_int8=False,
                     arm_i8mm=False, arm_dotprod=False, neon=False))
    assert other.int8_dot != real.int8_dot
    monkeypatch.setattr(cf, "detect_cpu_features", lambda *a, **k: other)
    assert onnx_identity(OrtEngine(a, threads=1)) != before
    moved = cached_engine(OrtEngine(a, threads=1), cache)
    moved.run(x)
    assert (moved.hits, moved.misses) == (0, 1)  # another ISA's kernels: not this one's outputs
    assert cached_engine(OrtEngine(a), None) is None
    import torch

    assert cached_engine(TorchEngine(torch.nn.Identity(), device="cpu", precision="fp32"), cache) is None


def test_each_cache_folder_keeps_the_most_recently_used_files_under_its_cap(tmp_path):
    """``prune`` removes the least recently written or read files until the rest fit; a read refreshes a file."""
    import os

    from edgerep.reference_cache import CachedOutputs, batch_key, prune

    cache = CachedOutputs(lambda x: np.repeat(x, 8, axis=1), "model-1", tmp_path)
    xs = [np.full((2, 16), i, np.float32) for i in range(4)]
    paths = []
    for age, x in enumerate(xs):  # x0 written first ... x3 last
        cache(x)
        paths.append(tmp_path / f"out-{batch_key('model-1', x)}.npy")
        os.utime(paths[-1], (1_000_000 + age, 1_000_000 + age))
    size = paths[0].stat().st_size
    again = CachedOutputs(lambda x: 1 / 0, "model-1", tmp_path)  # a hit never recomputes
    again(xs[0])  # x0 read: now the most recently used
    assert prune(tmp_path, max_bytes=2 * size) == (2, 2 * size)
    assert [p.exists() for p in paths] == [True, False, False, True]
    assert prune(tmp_path / "missing") == (0, 0)
