"""``quantize_model``: FP32 ONNX -> equalize -> calibrate once -> one verified QDQ file per target.

The CPU policy is chosen by measurement, not by assumption: every candidate for this CPU's ISA is
quantized, run on the *optimized* onnxruntime session (the fused INT8 kernels a user runs) and
scored against the reference; among those whose accuracy holds, the simplest wins unless another is
faster beyond the measured noise (``edgerep.bench.ranking``). On AVX2 without VNNI the
plain 8-bit policies saturate and are rejected here, with the measured numbers as the reason.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgerep.bench.ranking import Ranking, choose_within_noise
from edgerep.errors import DataError, EdgerepError
from edgerep.quant.calibrate import METHODS, CalibrationResult, calibrate, calibrate_many
from edgerep.quant.cpu_features import CpuFeatures, detect_cpu_features
from edgerep.quant.mixed import Score, mixed_precision
from edgerep.quant.paired import Paired, resolution_note, tied_with_best
from edgerep.quant.policy import TENSORRT, CpuPolicy, by_simplicity, cpu_candidates
from edgerep.quant.qdq import QdqConfig, quantizable_nodes, write_qdq

CPU_FILE = "model.int8.onnx"
TRT_FILE = "model.int8.trt.onnx"
AUTO_METHODS = ("mse", "percentile", "minmax")  # one pass; choose_auto_method picks on the selection set


@dataclass
class Candidate:
    """One CPU policy as measured on the optimized onnxruntime session."""

    policy: str
    session_config: dict[str, str]
    expectation: str
    top1: float | None
    agreement: float | None
    drop: float
    error: float
    latency_ms: float
    accepted: bool
    reason: str
    simulated_top1: float | None = None  # graph optimizations off, only measured when rejected
    verdict: dict[str, Any] | None = None  # the budget decision on paired counts (``edgerep.quant.paired``)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CpuPolicyChoice:
    """The chosen CPU policy and what a session needs to run it accurately."""

    name: str
    reason: str
    session_config: dict[str, str]
    qdq: dict[str, Any]
    drop: float
    top1: float | None
    latency_ms: float

    def get(self, key: str, default=None):  # dict-style access for callers that expect a dict
        return getattr(self, key, default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QuantizeResult:
    """Everything ``quantize_model`` decided and measured (``to_dict()`` goes into report.json)."""

    calibration: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    cpu_policy: CpuPolicyChoice | None = None
    candidates: list[Candidate] = field(default_factory=list)
    excluded_nodes: list[dict[str, Any]] = field(default_factory=list)
    lint: list[Any] = field(default_factory=list)
    equalization: dict[str, Any] | None = None
    bias_correction: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    tensorrt: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    max_drop: float | None = None
    seconds: float = 0.0
    int8_failure: str | None = None  # set when meeting the budget kept most layers in float: not an INT8 model

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": dict(self.calibration),
            "files": {k: str(v) for k, v in self.files.items()},
            "cpu_policy": self.cpu_policy.to_dict() if self.cpu_policy else None,
            "candidates": [c.to_dict() for c in self.candidates],
            "excluded_nodes": list(self.excluded_nodes),
            "lint": [i.to_dict() for i in self.lint],
            "lint_passed": not any(i.severity == "error" for i in self.lint),
            "equalization": self.equalization,
            "bias_correction": dict(self.bias_correction),
            "reference": dict(self.reference),
            "tensorrt": dict(self.tensorrt),
            "cpu": dict(self.cpu),
            "max_drop": self.max_drop,
            "seconds": round(self.seconds, 3),
            "int8_failure": self.int8_failure,
        }


# ---- measurement -------------------------------------------------------------------------------
def static_batch(path: Path) -> int | None:
    """The ONNX input's fixed batch size, or None when the batch axis is dynamic."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].dim_value > 0 else None


def run_batched(engine, x: np.ndarray, batch: int, static: bool = False) -> np.ndarray:
    """``engine.run`` over ``x`` in batches; a static-batch model gets its last batch zero-padded."""
    from edgerep.progress import counted

    outs = []
    label = f"{getattr(engine, 'name', 'engine')} {getattr(engine, 'precision', '')}".strip()
    with counted(label, len(x), "samples") as tick:
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            n = len(xb)
            if static and n < batch:
                xb = np.concatenate([xb, np.zeros((batch - n, *xb.shape[1:]), dtype=xb.dtype)])
            outs.append(engine.run(xb)[:n])
            tick(n)
    return np.concatenate(outs)


class _Judge:
    """Scores ONNX files on fixed evaluation data against fixed reference outputs."""

    def __init__(self, x: np.ndarray, y: np.ndarray | None, ref: np.ndarray, batch: int, threads: int | None,
                 static: bool = False):
        self.x, self.y, self.ref, self.batch, self.threads, self.static = x, y, ref, batch, threads, static
        self.classifier = ref.ndim == 2
        self.ref_top1 = self._top1(ref)
        self.ref_correct = ref.argmax(1) == y if (y is not None and self.classifier) else None
        self.ref_ms = float(np.mean(ref.astype(np.float64) ** 2)) or 1.0

    def _top1(self, out: np.ndarray) -> float | None:
        if self.y is None or not self.classifier:
            return None
        return float((out.argmax(1) == self.y).mean() * 100.0)

    def outputs(self, engine) -> np.ndarray:
        return run_batched(engine, self.x, self.batch, self.static)

    def score_outputs(self, out: np.ndarray) -> Score:
        err = float(np.mean((out.astype(np.float64) - self.ref) ** 2) / self.ref_ms)
        if not np.isfinite(err):
            return Score(drop=100.0, error=float("inf"))
        if self.classifier:
            agree = float((out.argmax(1) == self.ref.argmax(1)).mean() * 100.0)
            top1 = self._top1(out)
            if top1 is not None:
                correct = out.argmax(1) == self.y
                return Score(drop=self.ref_top1 - top1, error=err, top1=top1, agreement=agree,
                             paired=Paired.of(self.ref_correct, correct), correct=correct)
            # no labels: top-1 agreement flips on noise when logits are near-uniform (random or low-margin
            # nets), so the budget applies to the logits' fidelity instead
            return Score(drop=cosine_loss(out, self.ref, centered=True), error=err, agreement=agree)
        return Score(drop=cosine_loss(out, self.ref), error=err)

    def engine(self, path: Path, session_config: dict[str, str] | None = None, optimization: str = "all"):
        from edgerep.engines.onnxruntime_engine import OrtEngine

        return OrtEngine(path, precision="int8", threads=self.threads, optimization=optimization,
                         session_config=session_config)

    def score(self, path: Path, session_config: dict[str, str] | None = None, optimization: str = "all") -> Score:
        return self.score_outputs(self.outputs(self.engine(path, session_config, optimization)))


def cosine_loss(out: np.ndarray, ref: np.ndarray, centered: bool = False) -> float:
    """``100 * (1 - cosine)`` of outputs vs reference, in "points" like a top-1 drop: 0.5 is about a
    20 dB output SQNR. ``centered`` removes each row's mean first (logits are shift-invariant)."""
    a, b = out.astype(np.float64), ref.astype(np.float64)
    if centered and a.ndim == 2:
        a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
    a, b = a.ravel(), b.ravel()
    cos = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
    return 100.0 * (1.0 - cos)


def latency_ms(engine, x1: np.ndarray, iters: int = 30, warmup: int = 5, budget_s: float = 1.5) -> float:
    """Median latency of ``engine.run(x1)`` in ms (a quick measure for ranking policies)."""
    for _ in range(warmup):
        engine.run(x1)
    times = []
    t_end = time.perf_counter() + budget_s
    for _ in range(iters):
        t = time.perf_counter()
        engine.run(x1)
        times.append(time.perf_counter() - t)
        if time.perf_counter() > t_end and len(times) >= 5:
            break
    return float(np.median(times) * 1000.0)


def _collect(dataset, limit: int | None, batch: int) -> tuple[np.ndarray, np.ndarray | None]:
    xs, ys = [], []
    for x, y in dataset.batches(batch, limit=limit):
        xs.append(np.asarray(x, dtype=np.float32))
        if y is not None:
            ys.append(np.asarray(y, dtype=np.int64))
    if not xs:
        raise DataError(f"data set {getattr(dataset, 'name', '?')!r} yielded no samples")
    x = np.ascontiguousarray(np.concatenate(xs))
    y = np.concatenate(ys) if ys and sum(len(v) for v in ys) == len(x) else None
    return x, y


def _reference_outputs(reference: Callable | None, fp32_path: Path, x: np.ndarray, batch: int,
                       static: bool = False) -> tuple[np.ndarray, str]:
    if reference is not None:
        outs = []
        for i in range(0, len(x), batch):
            o = reference(x[i:i + batch])
            if isinstance(o, (tuple, list)):
                o = o[0]
            if hasattr(o, "detach"):
                o = o.detach().cpu().numpy()
            outs.append(np.asarray(o, dtype=np.float32))
        return np.concatenate(outs), "reference (unfolded FP32 model)"
    from edgerep.engines.onnxruntime_engine import OrtEngine

    eng = OrtEngine(fp32_path, precision="fp32")
    return run_batched(eng, x, batch, static), "onnxruntime FP32"


# ---- the pipeline ------------------------------------------------------------------------------
def quantize_model(fp32_onnx: Path, calib, evaluate, out_dir: Path, *, targets: tuple[str, ...] = ("cpu", "tensorrt"),
                   method: str = "auto", max_drop: float | None = 0.5, reference: Callable | None = None,
                   cache_dir: Path | None = None, progress: Callable[[str], None] | None = None,
                   calib_samples: int | None = 256, eval_samples: int | None = None, equalize: bool = True,
                   bias_correction: bool = True, threads: int | None = None, cpu: CpuFeatures | None = None,
                   batch_size: int = 64, cpu_policies: tuple[str, ...] | None = None) -> QuantizeResult:
    """Calibrate ``fp32_onnx`` once on ``calib`` and write a verified QDQ file per target into ``out_dir``.

    ``evaluate`` is the *selection* set (held out from calibration and from the test set that is
    reported, labelled if possible): every choice is scored on it; without it the calibration data is
    used (and the report says so). Without labels the budget applies to the outputs' cosine
    (``cosine_loss``), not to top-1 agreement. ``max_drop`` (accuracy points vs the
    ``reference``, default the FP32 ONNX model) is the acceptance budget; when no policy meets it,
    the most sensitive layers stay in float. ``max_drop=None`` accepts within 0.5 points and never
    excludes layers. ``cpu_policies`` restricts the CPU candidates to these names (still verified).
    """
    t0 = time.perf_counter()
    say = progress or (lambda _m: None)
    fp32_onnx, out_dir = Path(fp32_onnx), Path(out_dir)
    if not fp32_onnx.is_file():
        raise EdgerepError(f"{fp32_onnx}: FP32 ONNX file not found")
    unknown = [t for t in targets if t not in ("cpu", "tensorrt")]
    if unknown:
        raise EdgerepError(f"targets: unknown {', '.join(unknown)} (expected cpu, tensorrt)")
    if method != "auto" and method not in METHODS:
        raise EdgerepError(f"method {method!r}: expected auto or one of {', '.join(METHODS)}")
    budget = 0.5 if max_drop is None else float(max_drop)
    cpu = cpu or detect_cpu_features()
    known = [p.name for p in cpu_candidates(cpu)]
    if cpu_policies is not None and (not cpu_policies or any(p not in known for p in cpu_policies)):
        raise EdgerepError(f"cpu policy {', '.join(cpu_policies) or '(none)'}: this CPU ({cpu.int8_dot}) offers "
                           f"{', '.join(known)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed = static_batch(fp32_onnx)
    static = fixed is not None
    if static:
        batch_size = fixed  # a static-batch model runs only that batch; calibration drops a ragged tail
    result = QuantizeResult(calibration={}, max_drop=max_drop, cpu=cpu.to_dict())

    with tempfile.TemporaryDirectory(prefix="edgerep-quant-") as tmpd:
        tmp = Path(tmpd)
        # 1. cross-layer equalization (exact; checked on real data)
        src = fp32_onnx
        x_cal, _ = _collect(calib, min(calib_samples or 128, 128), batch_size)
        if equalize:
            import onnx

            from edgerep.engines.onnxruntime_engine import OrtEngine
            from edgerep.quant.equalize import equalize_model

            model = onnx.load(str(fp32_onnx))
            eq = equalize_model(model)
            if eq.pairs:
                onnx.save(model, str(tmp / "model.eq.onnx"))
                a = run_batched(OrtEngine(fp32_onnx, threads=threads), x_cal, batch_size, static)
                b = run_batched(OrtEngine(tmp / "model.eq.onnx", threads=threads), x_cal, batch_size, static)
                dev = float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12))
                info = eq.to_dict() | {"max_rel_deviation": dev}
                if dev <= 1e-4:
                    src = tmp / "model.eq.onnx"
                    info["applied"] = True
                    say(f"equalized {len(eq.pairs)} layer pairs (largest channel ratio "
                        f"{eq.range_ratio_before:.1f} -> {eq.range_ratio_after:.1f})")
                else:
                    info["applied"] = False
                    info["why_not"] = f"equalized model deviates by {dev:.2e} (relative) from FP32"
                result.equalization = info
            else:
                result.equalization = {"applied": False, "why_not": "no conv -> ReLU -> conv pairs", "pairs": []}

        # 2. selection data and reference outputs: every choice below (the range method too) is judged here
        eval_ds = evaluate if evaluate is not None else calib
        x_ev, y_ev = _collect(eval_ds, eval_samples, batch_size)
        ref, ref_src = _reference_outputs(reference, fp32_onnx, x_ev, batch_size, static)
        judge = _Judge(x_ev, y_ev, ref, batch_size, threads, static)
        role = "selection" if evaluate is not None else "calibration"

        # 3. calibrate once (auto: several range methods from the same pass, judged on the selection set)
        if method == "auto":
            cals = calibrate_many(src, calib, AUTO_METHODS, batch_size=batch_size, limit=calib_samples,
                                  cache_dir=cache_dir, progress=say)
            scores = _auto_scores(src, cals, judge, tmp)
            errors = {m: sc.error for m, sc in scores.items()}
            chosen, not_worse = choose_auto_method(scores)
            cal = cals[chosen]
            say(f"calibration auto (judged on the {role} set): " + ", ".join(f"{m} {e:.2e}" for m, e in errors.items())
                + f" -> {cal.method}")
            result.calibration = cal.summary() | {"requested": "auto", "auto_logit_error": errors,
                                                  "auto_drop": {m: sc.drop for m, sc in scores.items()},
                                                  "auto_not_less_accurate": not_worse,
                                                  "auto_judged_on": role}
        else:
            cal = calibrate(src, calib, method=method, batch_size=batch_size, limit=calib_samples,
                            cache_dir=cache_dir, progress=say)
            result.calibration = cal.summary() | {"requested": method}

        fp32_score = judge.score(fp32_onnx)
        counted = y_ev is not None and judge.classifier
        result.reference = {"source": ref_src, "top1": judge.ref_top1, "samples": int(len(x_ev)),
                            "data": getattr(eval_ds, "name", "?"), "held_out": evaluate is not None,
                            "role": role,
                            "labelled": y_ev is not None,
                            "measure": "top-1 drop" if (y_ev is not None and judge.classifier) else
                                       "100 * (1 - cosine) of the outputs",
                            "onnx_fp32_top1": fp32_score.top1, "onnx_fp32_drop": fp32_score.drop,
                            "points_per_image": round(100.0 / len(x_ev), 4) if counted else None,
                            "resolution_note": resolution_note(len(x_ev), budget) if counted else None}
        if result.reference["resolution_note"]:
            say(result.reference["resolution_note"])
        x1 = np.ascontiguousarray(x_ev[:batch_size] if static else x_ev[:1])
        if len(x1) < batch_size and static:
            x1 = np.concatenate([x1, np.zeros((batch_size - len(x1), *x1.shape[1:]), np.float32)])

        if "cpu" in targets:
            _cpu_target(result, src, cal, judge, x1, tmp, out_dir, cpu, budget, max_drop, bias_correction, say,
                        cpu_policies)
        if "tensorrt" in targets:
            _tensorrt_target(result, src, cal, judge, out_dir, budget, max_drop, bias_correction, say)
    result.seconds = time.perf_counter() - t0
    return result


def choose_auto_method(scores: dict[str, Score]) -> tuple[str, list[str]]:
    """The `auto` range method: accuracy first (the methods not shown less accurate than the most
    accurate one, by paired counts on the selection set), then the lowest continuous logit error among
    those (a top-1 drop on a few hundred images flips on one image). Returns (chosen, not-less-accurate)."""
    _, not_worse = tied_with_best({m: sc.correct for m, sc in scores.items()}, {m: sc.drop for m, sc in scores.items()})
    order = list(scores)
    rank = {m: (AUTO_METHODS.index(m) if m in AUTO_METHODS else len(AUTO_METHODS) + order.index(m)) for m in order}
    return min(not_worse, key=lambda m: (scores[m].error, rank[m])), not_worse


def _auto_scores(src: Path, cals: dict[str, CalibrationResult], judge: _Judge, tmp: Path) -> dict[str, Score]:
    """Each range method's ranges as symmetric int8 QDQ simulated in float (range quality alone, before
    any kernel choice), scored by the judge on the *selection* set (never the calibration data the
    ranges came from, never the test set). The choice is the lowest relative logit MSE (continuous; a
    top-1 drop on a few hundred images flips on one image); the drop is reported beside it."""
    return {m: judge.score(_write(src, tmp / f"auto-{m}.onnx", c), optimization="disable")
            for m, c in cals.items()}


def _write(src: Path, path: Path, cal: CalibrationResult) -> Path:
    write_qdq(src, path, cal, TENSORRT)
    return path


def fallback_choice(cands: list[tuple[CpuPolicy, Candidate, Path]], scores: dict[str, Score],
                    rank: Ranking) -> tuple[str, str]:
    """When no CPU policy meets the budget: the most accurate, decided on paired counts. Every policy
    not shown less accurate than the best ties with it; among those the latency ranking's pick wins
    only when it was faster beyond the noise, else the simplest (a raw median never decides)."""
    order = [p.name for p in by_simplicity([t[0] for t in cands])]
    best, tied = tied_with_best({n: scores[n].correct for n in order}, {n: scores[n].drop for n in order})

    def shown(n: str) -> str:
        p = scores[n].paired
        return f"{n} {scores[n].drop:.2f}" + (f" ({p.lost} lost, {p.gained} gained of {p.n})" if p else "")

    if len(tied) == 1:
        return best, (f"{best} was the most accurate, beyond the noise of the paired counts: "
                      + ", ".join(shown(n) for n in order))
    tied = [n for n in order if n in tied]  # simplest first
    head = (f"{', '.join(tied)} tie on accuracy ({'; '.join(shown(n) for n in tied)}: paired counts show none "
            f"less accurate than {best})")
    if rank.verdict == "faster" and rank.chosen in tied and tied[0] == order[0]:  # ranked against tied[0]
        return rank.chosen, f"{head}; {rank.chosen} is kept: {rank.reason}"
    pick = tied[0]
    return pick, (f"{head}; the simplest, {pick}, is kept: inside the noise the simplest policy wins "
                  f"(latency: {rank.reason})")


def _variant(cfg: QdqConfig, bias_correction: bool) -> QdqConfig:
    from dataclasses import replace

    return replace(cfg, bias_correction=bias_correction)


def _cpu_target(result: QuantizeResult, src: Path, cal: CalibrationResult, judge: _Judge, x1: np.ndarray,
                tmp: Path, out_dir: Path, cpu: CpuFeatures, budget: float, max_drop: float | None,
                bias_correction: bool, say, only: tuple[str, ...] | None = None) -> None:
    cands: list[tuple[CpuPolicy, Candidate, Path]] = []
    engines = {}
    scores: dict[str, Score] = {}
    for pol in cpu_candidates(cpu):
        if only is not None and pol.name not in only:
            continue
        cfg = _variant(pol.qdq, bias_correction)
        path = tmp / f"cpu-{pol.name}.onnx"
        info = write_qdq(src, path, cal, cfg)
        eng = judge.engine(path, pol.session_config)
        s = judge.score_outputs(judge.outputs(eng))
        engines[pol.name] = eng
        v = s.verdict(budget)
        ok = v.holds
        c = Candidate(pol.name, dict(pol.session_config), pol.expectation, s.top1, s.agreement, round(s.drop, 4),
                      s.error, 0.0, ok, "", verdict=v.to_dict())
        if ok:
            c.reason = f"accuracy holds on the optimized session: {v.text}"
        else:
            sim = judge.score(path, pol.session_config, optimization="disable")
            c.simulated_top1 = sim.top1
            cause = ("the fused INT8 kernels lose it (simulated QDQ with optimizations off drops only "
                     f"{sim.drop:.2f}): int16 saturation" if sim.verdict(budget).holds else
                     f"the ranges lose it (simulated QDQ drops {sim.drop:.2f} too)")
            c.reason = f"rejected on the optimized session: {v.text}; {cause}"
        say(f"cpu candidate {pol.name}: {v.text} -> {'accepted' if ok else 'rejected'}")
        cands.append((pol, c, path))
        scores[pol.name] = s
        if bias_correction and info.bias_corrected:
            result.bias_correction[pol.name] = {"layers": len(info.bias_corrected),
                                                "max_abs_shift": max(info.bias_corrected.values())}
    accepted = [t for t in cands if t[1].accepted]
    rank = choose_within_noise({p.name: engines[p.name] for p in by_simplicity([t[0] for t in cands])}, x1,
                               among=[t[0].name for t in accepted] or None)
    for _, c, _ in cands:
        c.latency_ms = round(rank.latency_ms[c.policy], 4)
    say("cpu candidates latency (ms, interleaved): " + ", ".join(f"{k} {v:.3f}" for k, v in rank.latency_ms.items()))
    engines.clear()
    result.candidates = [c for _, c, _ in cands]
    result.cpu["latency_ranking"] = rank.to_dict()
    excluded: list[str] = []
    if accepted:
        pol, cand, path = next(t for t in accepted if t[0].name == rank.chosen)
        others = [c.policy for c in result.candidates if c.accepted and c.policy != pol.name]
        rejected = [c.policy for c in result.candidates if not c.accepted]
        reason = (f"{cpu.int8_dot}: accuracy holds on the optimized session ({cand.latency_ms:.3f} ms; "
                  f"{(cand.verdict or {}).get('text', f'drop {cand.drop:.2f}')}); latency: {rank.reason}"
                  + (f"; also accurate: {', '.join(others)}" if others else "")
                  + (f"; rejected: {', '.join(rejected)}" if rejected else ""))
        final_path = path
    else:
        pick, why = fallback_choice(cands, scores, rank)
        pol, cand, path = next(t for t in cands if t[0].name == pick)
        reason = f"{cpu.int8_dot}: no policy met {budget:g} points; {why}"
        final_path = path
        if max_drop is not None:
            cfg = _variant(pol.qdq, bias_correction)
            nodes = quantizable_nodes(_load(src))
            counter = [0]

            def score(exclude, only):
                counter[0] += 1
                p = tmp / f"mixed-{counter[0]}.onnx"
                write_qdq(src, p, cal, cfg, exclude_nodes=exclude, only_nodes=only)
                return judge.score(p, pol.session_config)

            say(f"mixed precision: measuring the sensitivity of {len(nodes)} layers under {pol.name}")
            mp = mixed_precision(nodes, score, budget, start=scores[pol.name])
            excluded = [e["node"] for e in mp.excluded]
            result.excluded_nodes = [e | {"target": "cpu", "precision": "fp32"} for e in mp.excluded]
            final_path = tmp / "cpu-mixed.onnx"
            write_qdq(src, final_path, cal, cfg, exclude_nodes=excluded)
            s = judge.score(final_path, pol.session_config)
            eng = judge.engine(final_path, pol.session_config)
            v = s.verdict(budget)
            cand = Candidate(f"{pol.name}+fp32[{len(excluded)}]", dict(pol.session_config), pol.expectation, s.top1,
                             s.agreement, round(s.drop, 4), s.error, round(latency_ms(eng, x1), 4), v.holds,
                             f"mixed precision: {len(excluded)} layer(s) kept in FP32: {v.text}", verdict=v.to_dict())
            result.candidates.append(cand)
            reason += (f"; kept {len(excluded)} layer(s) in FP32 -> {v.text}"
                       + ("" if mp.met else " (budget still not met)"))
            if 2 * len(excluded) > len(nodes):
                result.int8_failure = (f"meeting the {budget:g}-point budget kept {len(excluded)} of {len(nodes)} "
                                       "quantizable layers in FP32: this is not an INT8 model (see the layers kept "
                                       "in float and the check's sensitivity table)")
                cand.accepted = False
                cand.reason += "; more than half the layers in FP32: rejected as INT8"
                say(f"INT8 FAILED: {result.int8_failure}")
    dst = out_dir / CPU_FILE
    shutil.copyfile(final_path, dst)
    result.files["cpu"] = dst
    result.cpu_policy = CpuPolicyChoice(cand.policy, reason, dict(pol.session_config),
                                        _variant(pol.qdq, bias_correction).to_dict(), cand.drop, cand.top1,
                                        cand.latency_ms)
    say(f"cpu policy: {cand.policy} ({reason})")


def _load(path: Path):
    import onnx

    from edgerep.quant.qdq import _ensure_node_names

    m = onnx.load(str(path))
    _ensure_node_names(m)
    return m


def _tensorrt_target(result: QuantizeResult, src: Path, cal: CalibrationResult, judge: _Judge, out_dir: Path,
                     budget: float, max_drop: float | None, bias_correction: bool, say) -> None:
    """TensorRT's file: int8 symmetric; its accuracy here is a QDQ *simulation* (no TensorRT on CPU)."""
    from edgerep.quant.lint import lint_tensorrt_qdq

    cfg = _variant(TENSORRT, bias_correction)
    dst = out_dir / TRT_FILE
    info = write_qdq(src, dst, cal, cfg)
    s = judge.score(dst, optimization="disable")
    excluded: list[str] = []
    if not s.verdict(budget).holds and max_drop is not None:
        nodes = quantizable_nodes(_load(src))
        tmp = dst.with_name(dst.name + ".probe.onnx")

        def score(exclude, only):
            write_qdq(src, tmp, cal, cfg, exclude_nodes=exclude, only_nodes=only)
            return judge.score(tmp, optimization="disable")

        mp = mixed_precision(nodes, score, budget, start=s)
        tmp.unlink(missing_ok=True)
        excluded = [e["node"] for e in mp.excluded]
        # measured here in FP32 (simulation); on the engine they run in FP16 when the plan enables it
        result.excluded_nodes += [e | {"target": "tensorrt", "precision": "fp32",
                                       "on_engine": "fp16 if the TensorRT profile enables FP16, else fp32"}
                                  for e in mp.excluded]
        info = write_qdq(src, dst, cal, cfg, exclude_nodes=excluded)
        s = judge.score(dst, optimization="disable")
    result.lint = lint_tensorrt_qdq(dst)
    result.files["tensorrt"] = dst
    result.tensorrt = {"qdq": cfg.to_dict(), "simulated_top1": s.top1, "simulated_drop": round(s.drop, 4),
                       "verdict": s.verdict(budget).to_dict(),
                       "accuracy_note": "onnxruntime with graph optimizations off (QDQ simulated in float): "
                                        "TensorRT itself is measured when an engine is built on a GPU",
                       "add_inputs_quantized": info.add_inputs_quantized, "excluded": excluded,
                       "lint_errors": sum(1 for i in result.lint if i.severity == "error")}
    say(f"tensorrt QDQ: simulated drop {s.drop:.2f}, lint "
        f"{'passed' if not result.tensorrt['lint_errors'] else 'FAILED'}")
