"""Calibrate once: stream batches through the FP32 ONNX model and record activation ranges.

Methods: ``minmax`` (each tensor's min and max from our one streamed pass: bit-identical to
onnxruntime's MinMaxCalibrater, which would run the model a second time), ``percentile`` and
``entropy`` (onnxruntime.quantization's calibrators; percentile fed from our pass) and ``mse`` (ours: per tensor, the clipping threshold that minimises the expected INT8 squared error,
searched on a streamed histogram of |x|). Every run also records per-channel means of each
activation (bias correction uses them). Results are cached as JSON keyed by model hash + data
fingerprint + method + settings and reused when the key matches.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgerep.errors import DataError, EdgerepError
from edgerep.hashing import sha256_file
from edgerep.progress import counted

METHODS = ("minmax", "percentile", "entropy", "mse")
CACHE_VERSION = 1
_MAX_BINS = 1 << 14
PERCENTILE_BINS = 2048
#: bytes of activations one calibration run may return (all of them, for every tensor): the samples per run
#: follow from it, so calibration's memory is bounded by this, not by the batch or the data set. 64 MiB:
#: RepVGG-A0 at 224, 64 images, three methods peaked at 1204 MiB with 256 MiB runs, 695 MiB with 64, in the same time
RUN_BYTES = 64 << 20
#: values binned at a time by the histograms: a block's temporaries stay in the CPU's cache (whole 64 MiB runs
#: streamed each temporary through memory: 2.3x slower on RepVGG-A0's activations at 224)
BLOCK = 1 << 16


@dataclass
class CalibrationResult:
    """Activation ranges of one model on one calibration set, plus where they came from."""

    method: str
    key: str
    ranges: dict[str, tuple[float, float]]
    channel_means: dict[str, list[float]] = field(default_factory=dict)
    cache_path: str | None = None
    was_cached: bool = False
    samples: int = 0
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    def tensors_data(self, symmetric: bool = False):
        """The ranges as onnxruntime's ``TensorsData`` (what its QDQ quantizer consumes)."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        data = {}
        for name, (lo, hi) in self.ranges.items():
            if symmetric:
                m = max(abs(lo), abs(hi))
                lo, hi = -m, m
            data[name] = TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        return TensorsData(CalibrationMethod.MinMax, data)

    def summary(self) -> dict[str, Any]:
        """The facts a report needs (no per-tensor data)."""
        return {"method": self.method, "key": self.key, "cache_path": self.cache_path,
                "was_cached": self.was_cached, "samples": self.samples, "tensors": len(self.ranges),
                "seconds": round(self.seconds, 3), "settings": dict(self.settings)}

    def to_json(self) -> dict[str, Any]:
        return {"version": CACHE_VERSION, **self.summary(),
                "ranges": {k: [float(a), float(b)] for k, (a, b) in self.ranges.items()},
                "channel_means": self.channel_means}

    @classmethod
    def from_json(cls, d: dict[str, Any], path: str | None) -> "CalibrationResult":
        ranges = {k: (float(v[0]), float(v[1])) for k, v in d["ranges"].items()}
        return cls(method=d["method"], key=d["key"], ranges=ranges,
                   channel_means={k: list(v) for k, v in d.get("channel_means", {}).items()}, cache_path=path,
                   was_cached=True, samples=int(d.get("samples", 0)), seconds=0.0, settings=d.get("settings", {}))


# ---- keys and cache ---------------------------------------------------------------------------
def cache_key(model_sha: str, data_fingerprint: str, method: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"v": CACHE_VERSION, "model": model_sha, "data": data_fingerprint, "method": method,
                       "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _load_cache(path: Path, key: str) -> CalibrationResult | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if d.get("version") != CACHE_VERSION or d.get("key") != key:
        return None
    return CalibrationResult.from_json(d, str(path))


def _save_cache(path: Path, result: CalibrationResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result.to_json(), indent=1))
    os.replace(tmp, path)


# ---- streaming statistics (our pass: min/max, |x| histogram, channel means) -------------------
class _Stats:
    """Running statistics of one tensor; the |x| histogram keeps a fixed bin width and grows."""

    def __init__(self) -> None:
        self.lo = np.inf
        self.hi = -np.inf
        self.hist: np.ndarray | None = None
        self.width = 0.0
        self.ch_sum: np.ndarray | None = None
        self.count = 0
        self.first_amax = 0.0  # set by ``prime`` when the first batch arrives in chunks

    def prime(self, a: np.ndarray) -> None:
        """Observe |x| of part of the FIRST batch before ``update`` sees any of it: the bin width is then
        set from the whole first batch, as when that batch arrives in one piece."""
        a = np.asarray(a, dtype=np.float32)
        finite = a[np.isfinite(a)] if not np.isfinite(a).all() else a
        if finite.size and self.hist is None:
            self.first_amax = max(self.first_amax, float(np.abs(finite).max()))

    def update(self, a: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float32)
        if a.size == 0:
            return
        lo, hi = a.min(), a.max()  # a NaN or an infinity shows in one of them: only then is a filtered
        finite = a if np.isfinite(lo) and np.isfinite(hi) else a[np.isfinite(a)]
        if finite is not a:
            if finite.size == 0:
                return
            lo, hi = finite.min(), finite.max()
        self.lo = min(self.lo, float(lo))
        self.hi = max(self.hi, float(hi))
        if a.ndim >= 2:
            axes = (0,) + tuple(range(2, a.ndim))
            s = a.sum(axis=axes, dtype=np.float64)
            n = a.size // a.shape[1]
            self.ch_sum = s if self.ch_sum is None or self.ch_sum.shape != s.shape else self.ch_sum + s
            self.count += n
        amax = max(-lo, hi)  # the largest |x|, exactly (negation is exact)
        if self.hist is None:
            self.width = max(float(amax), self.first_amax, 1e-12) / 2048
            self.hist = np.zeros(2048, dtype=np.int64)
        # bins are floor(|x| / width) in float32, a monotone map: the largest bin is the largest |x|'s
        top = float(np.float32(amax) / np.float32(self.width))
        if top >= 2.0 ** 62:  # bins beyond int64 (a first batch of ~0, then large values): clamp them
            self._update_clamped(finite)
            return
        width, shift, need = self.width, 0, int(top) + 1
        while need > _MAX_BINS:  # coarsen: double the bin width (each value's bin halves, floor(idx / 2))
            if len(self.hist) % 2:
                self.hist = np.append(self.hist, 0)
            self.hist = self.hist.reshape(-1, 2).sum(axis=1)
            self.width *= 2
            shift += 1
            need = (need - 1) // 2 + 1
        if need > len(self.hist):
            self.hist = np.concatenate([self.hist, np.zeros(need - len(self.hist), dtype=np.int64)])
        flat = finite.ravel()
        small = top < 2.0 ** 31  # every bin index fits int32: float32 -> int32 -> int64 is 10x faster than directly
        for i in range(0, flat.size, BLOCK):  # a block at a time: its temporaries stay in the CPU's cache
            idx = np.abs(flat[i:i + BLOCK]) / width
            idx = idx.astype(np.int32).astype(np.int64) if small else idx.astype(np.int64)
            if shift:
                idx >>= shift  # floor(idx / 2) per doubling, as the whole-array path did
            self.hist += np.bincount(idx, minlength=len(self.hist))

    def _update_clamped(self, finite: np.ndarray) -> None:
        """``update``'s histogram step when bins would pass int64 (whole array at once; rare)."""
        idx = (np.abs(finite).ravel() / self.width).astype(np.int64)
        idx = np.minimum(idx, np.iinfo(np.int64).max // 2)
        need = int(idx.max()) + 1
        while need > _MAX_BINS:  # coarsen: double the bin width
            if len(self.hist) % 2:
                self.hist = np.append(self.hist, 0)
            self.hist = self.hist.reshape(-1, 2).sum(axis=1)
            self.width *= 2
            idx //= 2
            need = (need - 1) // 2 + 1
        if need > len(self.hist):
            self.hist = np.concatenate([self.hist, np.zeros(need - len(self.hist), dtype=np.int64)])
        self.hist += np.bincount(idx, minlength=len(self.hist))

    def channel_means(self) -> list[float]:
        if self.ch_sum is None or not self.count:
            return []
        return [float(v) for v in self.ch_sum / self.count]

    def mse_threshold(self, levels: int = 127) -> float:
        """The symmetric clipping threshold T minimising E[(x - Q_T(x))^2] over the histogram."""
        if self.hist is None or self.hist.sum() == 0:
            return 0.0
        centers = (np.arange(len(self.hist)) + 0.5) * self.width
        p = self.hist / self.hist.sum()
        amax = max(abs(self.lo), abs(self.hi))
        best_t, best_err = amax, np.inf
        for t in np.linspace(amax * 0.05, amax, 200):
            step = t / levels
            inside = centers <= t
            err = np.sum(p[inside]) * step * step / 12.0 + np.sum(p[~inside] * (centers[~inside] - t) ** 2)
            if err < best_err - 1e-18:
                best_t, best_err = float(t), err
        return best_t

    def range_for(self, method: str) -> tuple[float, float]:
        lo, hi = self.lo, self.hi
        if method == "mse":
            t = self.mse_threshold()
            lo, hi = max(lo, -t), min(hi, t)
        return float(lo), float(hi)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``np.histogram(values, bins=edges)[0]``, count for count, without the sort numpy does for explicit
    edges (half of a calibration pass at 224x224). Bin i holds ``edges[i] <= x < edges[i+1]``, the last bin
    also ``x == edges[-1]``; values outside the edges and NaN are not counted. The edges here are nearly
    uniform (onnxruntime's, extended at a fixed width): each value's bin is guessed from the mean width,
    then moved until those same comparisons, in the values' dtype, hold. Binned ``BLOCK`` values at a time."""
    nb = len(edges) - 1
    first, last = edges[0], edges[-1]
    x = values.ravel()
    if x.size and not (x.min() >= first and x.max() <= last):  # some outside, or NaN (it shows in min / max)
        x = x[(x >= first) & (x <= last)]  # NaN is neither
    span = float(last) - float(first)
    if nb < 1 or x.size == 0 or not span > 0:
        return np.histogram(values, bins=edges)[0]
    scale = nb / span
    upper = edges[1:].copy()  # bin k ends below upper[k]; the last bin holds its right edge too
    upper[-1] = np.inf
    counts = np.zeros(nb, dtype=np.intp)
    for i in range(0, x.size, BLOCK):
        counts += _block_counts(x[i:i + BLOCK], edges, upper, first, scale, nb)
    return counts


def _block_counts(x: np.ndarray, edges: np.ndarray, upper: np.ndarray, first: Any, scale: float,
                  nb: int) -> np.ndarray:
    """``bin_counts`` of one block of values, all inside the edges."""
    k = ((x - first) * scale).astype(np.int32).astype(np.intp)  # < nb + 1: via int32, 10x faster than directly
    np.clip(k, 0, nb - 1, out=k)
    off = x < edges.take(k)
    off |= x >= upper.take(k)
    if off.any():  # a guess a bin off (rounding, or edges far from uniform): the exact search for those
        k[off] = np.minimum(np.searchsorted(edges, x[off], side="right") - 1, nb - 1)
    return np.bincount(k, minlength=nb)


class _AbsHistogram:
    """onnxruntime's symmetric percentile histogram of one tensor (``HistogramCollector``'s
    ``collect_absolute_value``: bins set by the first batch, extended at a fixed width by later ones),
    fed chunk by chunk with the same counts and edges as when each batch arrives in one piece.
    Values at or above the last edge wait for the batch's end: they are the only ones kept, and only
    those of one batch."""

    def __init__(self, num_bins: int) -> None:
        self.num_bins = num_bins
        self.hist: np.ndarray | None = None
        self.edges: np.ndarray | None = None
        self.lo = self.hi = None  # signed min / max (numpy scalars, as onnxruntime keeps them)
        self.abs_lo = self.abs_hi = None  # |x| range of the first batch (``prime``)
        self._pending: list[np.ndarray] = []
        self._batch_amax = None
        self._batch_counts: np.ndarray | None = None
        self._first = False  # the first batch is being binned (its bins are fixed by then)

    def prime(self, a: np.ndarray) -> None:
        """Observe part of the FIRST batch: its |x| range sets the bins."""
        ab = np.absolute(a.ravel())
        lo, hi = np.nanmin(ab), np.nanmax(ab)
        self.abs_lo = lo if self.abs_lo is None else min(self.abs_lo, lo)
        self.abs_hi = hi if self.abs_hi is None else max(self.abs_hi, hi)

    def update(self, a: np.ndarray) -> None:
        """One chunk of the current batch."""
        flat = a.ravel()
        if flat.size == 0:
            return
        mn, mx = flat.min(), flat.max()  # NaN propagates: only then the slower nan-aware ones
        if np.isnan(mn) or np.isnan(mx):
            mn, mx = np.nanmin(flat), np.nanmax(flat)
        self.lo = mn if self.lo is None else min(self.lo, mn)
        self.hi = mx if self.hi is None else max(self.hi, mx)
        ab = np.absolute(flat)
        if self.edges is None:  # the first batch: np.histogram(|x|, bins=num_bins) over its whole |x| range
            lo, hi = (np.nanmin(ab), np.nanmax(ab)) if self.abs_lo is None else (self.abs_lo, self.abs_hi)
            self.edges = np.histogram(np.array([lo, hi], dtype=ab.dtype), bins=self.num_bins)[1].astype(ab.dtype)
            self.hist = np.zeros(self.num_bins, dtype=np.int64)
            self._first = True
        if self._first:
            self.hist += bin_counts(ab, self.edges)
            return
        amax = max(-mn, mx)  # np.nanmax(|x|), exactly
        self._batch_amax = amax if self._batch_amax is None else max(self._batch_amax, amax)
        last = self.edges[-1]
        if amax < last:  # every value below the last edge (NaN is counted by neither)
            counts = bin_counts(ab, self.edges)
        else:
            counts = bin_counts(ab[ab < last], self.edges)
            self._pending.append(ab[ab >= last])
        self._batch_counts = counts if self._batch_counts is None else self._batch_counts + counts

    def end_batch(self) -> None:
        """Close the current batch: extend the bins as onnxruntime does for the batch's |x| maximum."""
        if self.edges is None:
            return
        if self._first:
            self._first = False
            return
        if self._batch_counts is None:
            return
        old = self.hist
        edges = self.edges
        if self._batch_amax > edges[-1]:
            width = edges[1] - edges[0]
            edges = np.hstack((edges, np.arange(edges[-1] + width, self._batch_amax + width, width)))
        hist = np.zeros(len(edges) - 1, dtype=np.int64)
        hist[:len(self._batch_counts)] += self._batch_counts
        if self._pending:
            hist += bin_counts(np.concatenate(self._pending), edges)
        hist[:len(old)] += old
        self.hist, self.edges = hist, edges.astype(self.edges.dtype)
        self._pending, self._batch_amax, self._batch_counts = [], None, None

    def entry(self) -> tuple:
        """onnxruntime's ``histogram_dict`` entry: (hist, edges, min, max)."""
        return (self.hist, self.edges, self.lo, self.hi)


# ---- onnx plumbing -----------------------------------------------------------------------------
def _augmented_model(model_path: Path, out_path: Path) -> tuple[list[str], str]:
    """Save a copy of the model whose outputs include every float activation; return their names."""
    import onnx
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    model = load_model_with_shape_infer(model_path)  # a private link (calibrate_many): nothing lands beside the user's file
    inits = {i.name for i in model.graph.initializer}
    vis = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    originals = {o.name for o in model.graph.output}
    names: list[str] = []
    for node in model.graph.node:
        for t in list(node.input) + list(node.output):
            if not t or t in inits or t in names or t not in vis:
                continue
            if vis[t].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
                continue
            names.append(t)
            if t not in originals:
                model.graph.output.append(vis[t])
    onnx.save(model, str(out_path))
    return names, model.graph.input[0].name


class _OneBatchReader:
    """An onnxruntime ``CalibrationDataReader`` holding one batch, so calibrators stream."""

    def __init__(self, feed: dict[str, np.ndarray]):
        self._feed: dict[str, np.ndarray] | None = feed

    def get_next(self):
        f, self._feed = self._feed, None
        return f

    def __iter__(self):
        return self

    def __next__(self):
        f = self.get_next()
        if f is None:
            raise StopIteration
        return f


def _ort_calibrator(model_path: Path, method: str, tmp: Path, settings: dict[str, Any]):
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    cm = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
          "entropy": CalibrationMethod.Entropy}[method]
    extra: dict[str, Any] = {}
    if method == "percentile":
        extra = {"percentile": settings["percentile"], "num_bins": PERCENTILE_BINS, "symmetric": True}
    elif method == "entropy":
        extra = {"num_bins": 512, "num_quantized_bins": 128, "symmetric": False}
    with contextlib.redirect_stdout(io.StringIO()):
        return create_calibrator(model_path, None, augmented_model_path=str(tmp / "ort_augmented.onnx"),
                                 calibrate_method=cm, extra_options=extra)


def _chunk_size(sess, input_name: str, x1: np.ndarray, run_bytes: int) -> int:
    """Samples per augmented run so that its outputs (every activation) stay within ``run_bytes``."""
    per_sample = sum(v.nbytes for v in sess.run(None, {input_name: x1}))
    return max(1, int(run_bytes // max(per_sample, 1)))


def _percentile_data(cal, hists: dict[str, _AbsHistogram]):
    """onnxruntime's percentile ranges from our streamed histograms (its own collector computes them)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    assert cal.symmetric, "the streamed histogram is onnxruntime's symmetric (|x|) one"
    col = HistogramCollector(method=cal.method, symmetric=cal.symmetric, num_bins=cal.num_bins,
                             num_quantized_bins=cal.num_quantized_bins, percentile=cal.percentile,
                             scenario=cal.scenario)
    col.histogram_dict = {n: h.entry() for n, h in hists.items() if h.hist is not None}
    cal.collector = col
    return cal.compute_data()


def calibrate(model_path: str | Path, dataset, *, method: str = "mse", batch_size: int = 32,
              limit: int | None = 512, percentile: float = 99.99, cache_dir: str | Path | None = None,
              progress: Callable[[str], None] | None = None, run_bytes: int = RUN_BYTES) -> CalibrationResult:
    """Ranges of every float activation of ``model_path`` on ``dataset`` (streamed in batches).

    ``limit`` caps the number of calibration samples. With ``cache_dir``, a JSON cache keyed by
    model hash + ``dataset.fingerprint()`` + method + settings is read if present, written if not.
    """
    return calibrate_many(model_path, dataset, (method,), batch_size=batch_size, limit=limit,
                          percentile=percentile, cache_dir=cache_dir, progress=progress, run_bytes=run_bytes)[method]


def calibrate_many(model_path: str | Path, dataset, methods: tuple[str, ...], *, batch_size: int = 32,
                   limit: int | None = 512, percentile: float = 99.99, cache_dir: str | Path | None = None,
                   progress: Callable[[str], None] | None = None,
                   run_bytes: int = RUN_BYTES) -> dict[str, CalibrationResult]:
    """``calibrate`` for several methods from ONE streaming pass over the data (each cached alone).

    Memory is bounded by ``run_bytes`` (activations per run, batches split into chunks) and fixed-size
    state per tensor, never by the number of samples; the ranges do not depend on ``run_bytes``."""
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise EdgerepError(f"--method {bad[0] if bad else ''!r}: expected one of {', '.join(METHODS)}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise EdgerepError(f"{model_path}: ONNX model not found")
    t0 = time.perf_counter()
    fp = dataset.fingerprint() if hasattr(dataset, "fingerprint") else repr(dataset)
    msha = sha256_file(model_path)  # the ONNX file's bytes (graph + weights)
    out: dict[str, CalibrationResult] = {}
    todo: dict[str, tuple[str, dict, Path | None]] = {}
    for method in dict.fromkeys(methods):
        settings = {"batch_size": int(batch_size), "limit": limit,
                    "percentile": percentile if method == "percentile" else None}
        key = cache_key(msha, fp, method, settings)
        cache_path = Path(cache_dir) / f"calib-{method}-{key[:16]}.json" if cache_dir is not None else None
        hit = _load_cache(cache_path, key) if cache_path is not None and cache_path.is_file() else None
        if hit is not None:
            out[method] = hit
            if progress:
                progress(f"calibration: reused {cache_path.name}")
        else:
            todo[method] = (key, settings, cache_path)
    if not todo:
        return out

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgerep-calib-") as tmpd, contextlib.ExitStack() as stack:
        tmp = Path(tmpd)
        from edgerep.quant.ort_internals import private_model_link

        model_path = private_model_link(model_path, tmp / "model")  # onnxruntime writes beside what it reads
        names, input_name = _augmented_model(model_path, tmp / "augmented.onnx")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        so.enable_cpu_mem_arena = False  # the outputs are every activation: hand their memory back after each run
        sess = ort.InferenceSession(str(tmp / "augmented.onnx"), so, providers=["CPUExecutionProvider"])
        out_names = [o.name for o in sess.get_outputs()]
        dim0 = sess.get_inputs()[0].shape[0]
        static = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        if static:
            batch_size = static
        stats = {n: _Stats() for n in names}
        ort_cals, pct = {}, {}
        for m in todo:
            if m not in ("mse", "minmax"):  # minmax: our own pass's min / max, equal to onnxruntime's MinMax
                (tmp / m).mkdir()
                ort_cals[m] = _ort_calibrator(model_path, m, tmp / m, {"percentile": percentile})
        if "percentile" in ort_cals:  # fed from our own run's outputs: one forward pass, streamed
            wanted = set(ort_cals["percentile"].tensors_to_calibrate)
            pct = {n: _AbsHistogram(PERCENTILE_BINS) for n in names if n in wanted}
        chunk = None
        samples = 0
        first = True
        batches = dataset.batches(batch_size, limit=limit)
        tick = stack.enter_context(counted("calibration", getattr(batches, "samples", None), "images"))
        for x, _y in batches:
            x = np.ascontiguousarray(x, dtype=np.float32)
            if static and len(x) != static:
                continue  # the model takes exactly `static` samples: a ragged last batch is skipped
            if chunk is None:
                chunk = static or _chunk_size(sess, input_name, x[:1], run_bytes)
            parts = [x[i:i + chunk] for i in range(0, len(x), chunk)]
            # the histogram bins are set by the whole first batch: split, it is run once more to prime them
            steps = ("prime", "update") if first and len(parts) > 1 and (stats or pct) else ("update",)
            first = False
            for step in steps:
                for xs in parts:
                    for n, v in zip(out_names, sess.run(None, {input_name: xs})):
                        for acc in (stats.get(n), pct.get(n)):
                            if acc is not None:
                                getattr(acc, step)(v)
            for h in pct.values():
                h.end_batch()
            for m, cal in ort_cals.items():
                if m == "entropy":  # onnxruntime merges its histograms per batch: it sees whole batches
                    with contextlib.redirect_stdout(io.StringIO()):
                        cal.collect_data(_OneBatchReader({input_name: x}))
            samples += len(x)
            tick(len(x))
        if samples == 0:
            raise DataError(f"calibration data set {getattr(dataset, 'name', '?')!r} yielded no samples")
        all_ranges: dict[str, dict[str, tuple[float, float]]] = {}
        for m, cal in ort_cals.items():
            with contextlib.redirect_stdout(io.StringIO()):
                if m == "percentile":
                    td = _percentile_data(cal, pct)
                else:
                    td = cal.compute_data()
            ranges = {}
            for n in names:
                if n in td.data:
                    lo, hi = td.data[n].range_value
                    ranges[n] = (float(np.asarray(lo).min()), float(np.asarray(hi).max()))
                else:
                    ranges[n] = stats[n].range_for("minmax")
            all_ranges[m] = ranges
        if "mse" in todo:
            all_ranges["mse"] = {n: s.range_for("mse") for n, s in stats.items()}
        if "minmax" in todo:  # bit-identical to onnxruntime's MinMaxCalibrater, without its second forward pass
            all_ranges["minmax"] = {n: s.range_for("minmax") for n, s in stats.items()}
    means = {n: s.channel_means() for n, s in stats.items()}
    seconds = time.perf_counter() - t0
    for m, (key, settings, cache_path) in todo.items():
        res = CalibrationResult(method=m, key=key, ranges=all_ranges[m], channel_means=means,
                                cache_path=str(cache_path) if cache_path else None, was_cached=False,
                                samples=samples, seconds=seconds, settings=settings)
        if cache_path is not None:
            _save_cache(cache_path, res)
        out[m] = res
    if progress:
        progress(f"calibration: {', '.join(todo)} on {samples} samples, {len(names)} tensors, {seconds:.1f}s "
                 "(one pass)")
    return {m: out[m] for m in dict.fromkeys(methods)}


class ArrayDataset:
    """A minimal in-memory ``Dataset`` (x NCHW float32, y int64 or None) for tests and scripts."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, name: str = "arrays"):
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.y = None if y is None else np.asarray(y, dtype=np.int64)
        self.name = name
        self.has_labels = self.y is not None

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, batch_size: int, limit: int | None = None) -> Iterable[tuple[np.ndarray, np.ndarray | None]]:
        from edgerep.data.base import Batches

        n = len(self.x) if limit is None else min(limit, len(self.x))
        return Batches(((self.x[i:min(i + batch_size, n)], None if self.y is None else self.y[i:min(i + batch_size, n)])
                        for i in range(0, n, batch_size)), n)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.x.tobytes())
        if self.y is not None:
            h.update(self.y.tobytes())
        return h.hexdigest()[:32]
