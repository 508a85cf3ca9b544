"""The one small protocol every engine implements, so bench and evaluate never branch on backend."""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Engine(Protocol):
    """A ready-to-run model on one backend.

    ``run`` takes a float32 NCHW batch (numpy) and returns the model's first output as a
    float32 numpy array; engines convert, transfer and synchronise internally so that a
    timed ``run`` is the whole cost a user pays per batch.
    """

    name: str  # e.g. "onnxruntime-cpu", "torch-cuda", "tensorrt"
    precision: str  # "fp32" | "fp16" | "int8" | "mixed"
    device: str  # "cpu" | "cuda:0" | "dla:0"

    def run(self, inputs: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        """Settings that decide speed/accuracy (threads, providers, versions, ISA), for reports."""
        ...


#: the one vocabulary of engine names in deploy, bench, build and every report: ``backend-device``
#: (``onnxruntime-cpu``, ``torch-cpu``, ``tensorrt-gpu``) for what ships, and this suffix for the
#: unfolded train-time model every engine is compared with (``torch-cpu-unfolded``)
UNFOLDED_SUFFIX = "-unfolded"


def unfolded_name(engine_name: str) -> str:
    """The report name of the unfolded reference model run on ``engine_name`` (``torch-cpu-unfolded``)."""
    return engine_name if engine_name.endswith(UNFOLDED_SUFFIX) else engine_name + UNFOLDED_SUFFIX
