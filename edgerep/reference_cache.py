"""Model outputs computed once per model and input batch and kept on disk.

A deploy runs the unfolded FP32 model over the test set (evaluate), and onnxruntime sessions over the
selection set (every range method, CPU policy and mixed-precision probe is scored there) and the test set
(each built engine's accuracy). A CI that deploys the same checkpoint on the same data pays for each of
those once. Each batch's outputs are keyed by what determines them besides the batch (``identity``) and a
sha256 of the batch itself, so the data set, its preprocessing and the sample limit are all in the key:

* a model in torch on the CPU (``torch_identity``: the unfolded reference, the folded engine): the checkpoint's
  sha256, the model's weights and structure, the Python source that runs it (``edgerep.code_identity``: edgerep,
  timm, the user's model file), the torch version and thread count, and the CPU model and ISA. A model whose
  source cannot be found is not cached;
* an onnxruntime session (``onnx_identity``): the ONNX file's sha256, the onnxruntime version, threads, graph
  optimization level, session config, the PReLU rewrite, providers, and the CPU model and int8 ISA (the
  INT8 kernels differ by ISA: AVX2 without VNNI saturates where VNNI does not).

Latency is never cached: only outputs. A file that does not load is recomputed. Each folder is kept under
``CACHE_BYTES`` (``prune``, after each deploy's evaluation): the files least recently written or read go first
(an SR deploy writes ~220 MB of outputs, a detector ~90 MB, a 224x224 classifier under 1 MB).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np


#: the most bytes one cache folder (``outputs``, ``reference``) keeps
CACHE_BYTES = 2 * 2**30


def prune(cache_dir: Path, max_bytes: int = CACHE_BYTES, pattern: str = "*.npy") -> tuple[int, int]:
    """Delete the least recently used files matching ``pattern`` in ``cache_dir`` until the rest fit ``max_bytes``;
    returns (files removed, bytes freed). A file another process removes first is skipped."""
    files = []
    for f in Path(cache_dir).glob(pattern):
        try:
            st = f.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, f))
    files.sort(key=lambda t: t[0], reverse=True)  # most recent first
    kept = removed = freed = 0
    for _mtime, size, f in files:
        if kept + size <= max_bytes:
            kept += size
            continue
        try:
            f.unlink()
            removed, freed = removed + 1, freed + size
        except OSError:
            pass
    return removed, freed


def _cpu_line() -> str:
    from edgerep.quant.cpu_features import detect_cpu_features

    cpu = detect_cpu_features()
    return f"{cpu.model_name}|{cpu.int8_dot}"


def torch_identity(checkpoint_sha: str, model: Any) -> str | None:
    """What ``model``'s outputs in torch on the CPU (fp32) depend on besides the batch; None when the source that
    runs it is not known (``edgerep.code_identity``)."""
    import torch

    from edgerep.code_identity import source_digest, weights_digest

    code, weights = source_digest(model), weights_digest(model)
    if code is None or weights is None:
        return None
    return "|".join(["torch", checkpoint_sha, weights, code, torch.__version__, str(torch.get_num_threads()),
                     _cpu_line()])


def onnx_identity(engine: Any) -> str | None:
    """What an onnxruntime engine's outputs depend on besides the batch; None for any other engine (a torch
    engine is keyed by ``torch_identity``, which needs the checkpoint it came from)."""
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.hashing import sha256_file
    from edgerep.quant.cpu_features import detect_cpu_features

    if not isinstance(engine, OrtEngine):
        return None
    cpu = detect_cpu_features()
    return "|".join(["onnxruntime", sha256_file(engine.path), engine._ort_version, str(engine.threads),
                     engine.optimization, json.dumps(engine.session_config, sort_keys=True),
                     f"prelu_as_max={engine.prelus_rewritten}", ",".join(engine.providers), cpu.model_name,
                     str(cpu.int8_dot)])


def batch_key(identity: str, x: np.ndarray) -> str:
    """The cache key of the outputs of the model ``identity`` names on ``x``."""
    h = hashlib.sha256(f"{identity}|{x.dtype}|{x.shape}".encode())
    h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()[:40]


class CachedOutputs:
    """``fn(x) -> outputs`` (numpy), read from ``cache_dir`` when the model ``identity`` names already ran on
    ``x``. ``name`` and ``precision`` are how progress names its loops; ``hits`` / ``misses`` count batches."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], identity: str, cache_dir: Path, *,
                 prefix: str = "out", name: str = "engine", precision: str = ""):
        self.fn, self.identity, self.dir, self.prefix = fn, identity, Path(cache_dir), prefix
        self.hits = self.misses = 0
        self.name, self.precision = name, precision

    def __call__(self, x: np.ndarray) -> np.ndarray:
        path = self.dir / f"{self.prefix}-{batch_key(self.identity, x)}.npy"
        try:
            out = np.load(path, allow_pickle=False)
            self.hits += 1
            try:
                os.utime(path)  # recently used: ``prune`` keeps it
            except OSError:
                pass
            return out
        except (OSError, ValueError):
            pass
        out = np.asarray(self.fn(x), dtype=np.float32)
        self.misses += 1
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, out, allow_pickle=False)
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only cache only costs the recomputation next time
        return out

    def run(self, x: np.ndarray) -> np.ndarray:
        """The ``Engine.run`` spelling, for ``collect_outputs`` and ``run_batched``."""
        return self(x)


class CachedReference(CachedOutputs):
    """The unfolded model's outputs (``fn``), cached per checkpoint, code and batch (``torch_identity``)."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], identity: str, cache_dir: Path):
        super().__init__(fn, identity, cache_dir, prefix="ref", name="unfolded reference", precision="fp32")


def cached_reference(fn: Callable[[np.ndarray], np.ndarray], checkpoint_sha: str, model: Any,
                     cache_dir: Path) -> CachedReference | None:
    """The unfolded ``model``'s outputs (``fn``) through the cache in ``cache_dir``; None when its identity is not
    known (then every deploy computes them)."""
    identity = torch_identity(checkpoint_sha, model)
    return CachedReference(fn, identity, cache_dir) if identity is not None else None


def cached_engine(engine: Any, cache_dir: Path | None, checkpoint_sha: str | None = None) -> CachedOutputs | None:
    """``engine``'s outputs through the cache in ``cache_dir``; None when there is no cache or the engine is not
    one whose outputs its identity fixes: an onnxruntime session, or a torch engine on the CPU in fp32 built from
    the checkpoint ``checkpoint_sha`` names (with a known source: ``torch_identity``)."""
    if cache_dir is None:
        return None
    identity, prefix = onnx_identity(engine), "onnx"
    if identity is None and checkpoint_sha is not None and _torch_cpu_fp32(engine):
        identity, prefix = torch_identity(checkpoint_sha, engine.model), "torch"
    if identity is None:
        return None
    return CachedOutputs(engine.run, identity, cache_dir, prefix=prefix, name=getattr(engine, "name", "engine"),
                         precision=getattr(engine, "precision", ""))


def _torch_cpu_fp32(engine: Any) -> bool:
    from edgerep.engines.torch_engine import TorchEngine

    return isinstance(engine, TorchEngine) and engine.device == "cpu" and engine.precision == "fp32"


__all__ = ["CachedOutputs", "CachedReference", "cached_reference", "cached_engine", "batch_key", "onnx_identity",
           "torch_identity", "prune", "CACHE_BYTES"]
