"""TorchEngine: the reference engine (CPU here; CUDA tests skip without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.engines.base import Engine
from edgerep.engines.torch_engine import TorchEngine, cuda_available
from edgerep.errors import EngineError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 5)).eval()


def test_matches_the_module_and_leaves_it_untouched():
    net = _net()
    eng = TorchEngine(net, precision="fp16")
    assert isinstance(eng, Engine)
    assert next(net.parameters()).dtype == torch.float32  # the caller's model was copied, not converted
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = net(torch.from_numpy(x)).detach().numpy()
    y32 = TorchEngine(net).run(x)
    y16 = eng.run(x)
    assert y16.dtype == np.float32 and y16.shape == (2, 5)
    np.testing.assert_allclose(y32, ref, rtol=1e-6, atol=1e-6)
    assert np.abs(y16 - ref).max() < 2e-2 and np.abs(y16 - ref).max() > 0  # fp16 really ran


def test_tuple_output_returns_first():
    class Two(nn.Module):
        def forward(self, x):
            return x.mean((2, 3)), x

    y = TorchEngine(Two()).run(np.ones((1, 3, 4, 4), np.float32))
    assert y.shape == (1, 3)


def test_bad_settings_and_inputs_raise_engine_error():
    with pytest.raises(EngineError, match="precision"):
        TorchEngine(_net(), precision="int8")
    with pytest.raises(EngineError, match="device"):
        TorchEngine(_net(), device="tpu")
    eng = TorchEngine(_net(), input_shape=(3, 8, 8))
    with pytest.raises(EngineError, match=r"\(N, 3, 8, 8\)"):
        eng.run(np.zeros((1, 3, 9, 8), np.float32))
    with pytest.raises(EngineError, match="4-D"):
        eng.run(np.zeros((3, 8, 8), np.float32))


@pytest.mark.skipif(cuda_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_gpu_says_so():
    with pytest.raises(EngineError, match="no CUDA device"):
        TorchEngine(_net(), device="cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_matches_cpu(precision):
    net = _net()
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    cpu = TorchEngine(net).run(x)
    gpu = TorchEngine(net, device="cuda", precision=precision)
    assert gpu.device == "cuda:0" and gpu.describe()["compute_capability"]
    np.testing.assert_allclose(gpu.run(x), cpu, atol=1e-4 if precision == "fp32" else 2e-2)


@pytest.mark.skipif(cuda_available(), reason="checks the no-GPU message")
def test_gpu_benchmark_script_without_gpu_says_so_and_exits_0(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_fold_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_fold_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
