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
    first = CachedReference(model, "sha-1", tmp_path)  # the identity: torch_identity's string in a deploy
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

    # a torch engine is keyed by the checkpoint it came from: without one it is not cached
    assert cached_engine(TorchEngine(torch.nn.Identity(), device="cpu", precision="fp32"), cache) is None


MODEL_SOURCE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x).flatten(1) * {scale}
"""


def test_torch_outputs_are_keyed_on_checkpoint_weights_and_source(tmp_path, monkeypatch):
    """A torch CPU engine's outputs are read back only for the same checkpoint, weights, structure and Python source:
    editing the model's file (an upgrade of edgerep, timm or the user's code) must not hand back outputs the model
    no longer computes. A class with no source file, and fp16, are never cached."""
    import importlib
    import os
    import sys

    import torch

    import edgerep.code_identity as ci
    from edgerep.engines.torch_engine import TorchEngine
    from edgerep.reference_cache import cached_engine, cached_reference, torch_identity

    src = tmp_path / "src"
    src.mkdir()
    (src / "edgerep_ci_net.py").write_text(MODEL_SOURCE.format(scale="2.0"))
    monkeypatch.syspath_prepend(str(src))
    mod = importlib.import_module("edgerep_ci_net")
    monkeypatch.setattr(ci, "_DIGESTS", {})
    torch.manual_seed(0)
    net = mod.Net().eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    cache = tmp_path / "outputs"

    def engine(model=net):
        return TorchEngine(model, device="cpu", precision="fp32")

    first = cached_engine(engine(), cache, "sha-1")
    out = first.run(x)
    assert (first.hits, first.misses) == (0, 1) and first.name == "torch-cpu"
    again = cached_engine(engine(), cache, "sha-1")
    np.testing.assert_array_equal(again.run(x), out)
    assert (again.hits, again.misses) == (1, 0)
    other = cached_engine(engine(), cache, "sha-2")  # another checkpoint: computed
    other.run(x)
    assert (other.hits, other.misses) == (0, 1)
    heavier = mod.Net().eval()
    heavier.load_state_dict(net.state_dict())
    with torch.no_grad():
        heavier.conv.weight.mul_(3.0)
    c = cached_engine(engine(heavier), cache, "sha-1")  # other weights, same checkpoint name
    np.testing.assert_array_equal(c.run(x), engine(heavier).run(x))
    assert (c.hits, c.misses) == (0, 1)
    strided = mod.Net().eval()
    strided.load_state_dict(net.state_dict())
    strided.conv.stride = (2, 2)  # not in the state dict
    assert torch_identity("sha-1", strided) != torch_identity("sha-1", net)

    before = torch_identity("sha-1", net)
    path = src / "edgerep_ci_net.py"
    stamp = path.stat().st_mtime_ns
    path.write_text(MODEL_SOURCE.format(scale="5.0"))  # the model's code changes (same size), in this process
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))  # a coarse file clock could give the old time back
    importlib.reload(mod)
    edited = mod.Net().eval()
    edited.load_state_dict(net.state_dict())
    assert torch_identity("sha-1", edited) != before
    e = cached_engine(engine(edited), cache, "sha-1")
    np.testing.assert_array_equal(e.run(x), out * 2.5)  # what the edited code computes, not the cached outputs
    assert (e.hits, e.misses) == (0, 1)

    ref = cached_reference(engine(edited).run, "sha-1", edited, tmp_path / "reference")
    assert ref is not None and ref.identity == torch_identity("sha-1", edited)
    orphan = type("Orphan", (torch.nn.Module,), {"forward": lambda self, x: x, "__module__": "no_such_module_xyz"})()
    assert ci.source_digest(orphan) is None and torch_identity("sha-1", orphan) is None
    assert cached_reference(lambda v: v, "sha-1", orphan, tmp_path / "reference") is None
    assert cached_engine(engine(orphan), cache, "sha-1") is None
    assert cached_engine(TorchEngine(net, device="cpu", precision="fp16"), cache, "sha-1") is None
    sys.modules.pop("edgerep_ci_net", None)


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


def test_deploy_keeps_every_cache_folder_under_its_cap(tmp_path, monkeypatch):
    """After evaluation each of deploy's cache folders (outputs, reference, check) is pruned to ``CACHE_BYTES``,
    least recently used first; other files in them are left alone."""
    import os

    import edgerep.reference_cache as rc
    from edgerep.pipeline import DeployOptions, _prune_output_caches

    monkeypatch.setattr(rc, "CACHE_BYTES", 10)
    real_prune = rc.prune
    monkeypatch.setattr(rc, "prune", lambda folder, max_bytes=None, pattern="*.npy": real_prune(folder, 10, pattern))
    files = {"outputs": "onnx-a.npy", "reference": "ref-a.npy", "check": "check-a.json"}
    for folder, name in files.items():
        (tmp_path / folder).mkdir()
        for i, stem in enumerate(("old", "new")):
            f = tmp_path / folder / name.replace("-a", f"-{stem}")
            f.write_bytes(b"x" * 8)
            os.utime(f, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "check" / "notes.txt").write_bytes(b"y" * 64)
    said: list = []
    _prune_output_caches(DeployOptions(checkpoint=tmp_path / "c.pt", cache_dir=tmp_path),
                         lambda step, msg: said.append(msg))
    for folder, name in files.items():
        assert not (tmp_path / folder / name.replace("-a", "-old")).exists(), folder
        assert (tmp_path / folder / name.replace("-a", "-new")).exists(), folder
    assert (tmp_path / "check" / "notes.txt").exists() and len(said) == 3
