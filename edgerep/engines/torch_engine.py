"""The torch engine: the reference every other engine is compared with (CPU or CUDA, fp32 or fp16)."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from edgerep.errors import EngineError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def cuda_available() -> bool:
    """True when torch sees at least one CUDA device."""
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver install raises instead of answering False
        return False


class TorchEngine:
    """Runs an ``nn.Module`` in eval mode on one device and precision.

    The model is deep-copied, so converting it to fp16 or moving it to CUDA never touches the
    caller's module. ``run`` includes the host->device copy and the device->host copy (which
    synchronises CUDA), so a timed ``run`` is the whole per-batch cost.
    """

    def __init__(self, model: nn.Module, *, device: str = "cpu", precision: str = "fp32",
                 input_shape: tuple[int, ...] | None = None):
        if precision not in _DTYPES:
            raise EngineError(f"torch engine: precision must be fp32 or fp16, got {precision!r}")
        if device.startswith("cuda") and not cuda_available():
            raise EngineError(f"torch engine: device {device} asked for, but torch sees no CUDA device",
                              hint="run `edgerep doctor`, or use device='cpu'")
        if not (device == "cpu" or device.startswith("cuda")):
            raise EngineError(f"torch engine: device must be 'cpu' or 'cuda[:N]', got {device!r}")
        self.device = "cuda:0" if device == "cuda" else device
        self.precision = precision
        self.name = f"torch-{self.device.split(':')[0]}"
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._dtype = _DTYPES[precision]
        self._torch_device = torch.device(self.device)
        self.model = copy.deepcopy(model).eval().to(self._torch_device, self._dtype)
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _check(self, x: np.ndarray) -> None:
        if not isinstance(x, np.ndarray):
            raise EngineError(f"{self.name}: input must be a numpy array, got {type(x).__name__}")
        if x.ndim != 4:
            raise EngineError(f"{self.name}: input must be NCHW (4-D), got shape {tuple(x.shape)}")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise EngineError(f"{self.name}: input shape {tuple(x.shape)} does not match the model's "
                              f"(N, {', '.join(map(str, self.input_shape))})")

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """One batch in, the model's first output out (float32 numpy)."""
        self._check(inputs)
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        x = x.to(self._torch_device, self._dtype, non_blocking=False)
        try:
            with torch.inference_mode():
                y = self.model(x)
        except RuntimeError as e:  # shape / channel mismatches surface here
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(f"{self.name}: model rejected input of shape {tuple(inputs.shape)}: {first}") from None
        if isinstance(y, (tuple, list)):
            y = y[0]
        return y.detach().to("cpu", torch.float32).numpy()

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "backend": "torch",
            "precision": self.precision,
            "device": self.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        if self.device.startswith("cuda"):
            idx = self._torch_device.index or 0
            d["gpu"] = torch.cuda.get_device_name(idx)
            d["compute_capability"] = "%d.%d" % torch.cuda.get_device_capability(idx)
            d["cuda"] = torch.version.cuda
            d["cudnn"] = torch.backends.cudnn.version()
        return d
