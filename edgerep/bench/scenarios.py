"""Time one engine in an MLPerf scenario: LoadGen when installed, else the built-in timer, same rules.

- ``single-stream``: one query (one batch, batch 1 by default) at a time; p50, and the early-stopping
  p90 (>= 64 queries) and p99 (>= 662 queries), null below those counts.
- ``multi-stream``: queries of N samples (one engine call on a batch of N), one at a time; the p99 of
  per-query latency is the result (early stopping, >= 662 queries).
- ``offline``: every sample at once, run in batches; throughput (samples / total time) is the result.

Queries are served real, distinct samples: ``x`` is a pool (the selection set in deploy) and each
query takes the samples LoadGen's query sample library names (the built-in timer walks the pool in
order). Every result carries the robust spread of the engine's per-call times, the p50 of each
quarter of the run (repeats) and a ``noisy`` mark judged on the figures the row shows
(``edgerep.bench.noise``). The minimums are MLPerf-style, not a submission's (``MLPERF_MINIMUMS``,
``ScenarioSettings.mlperf_minimums``); ``settings_note`` says which ran. The phase starts only once every worker pool of the process has parked
(``edgerep.bench.threads.settle``), so the previous engine's spinning threads are not timed.
"""
from __future__ import annotations

import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from edgerep.bench import early_stopping
from edgerep.bench.latency import percentile
from edgerep.bench.noise import NoiseThresholds, assess, cv, repeat_p50s, robust_spread
from edgerep.bench.threads import settle
from edgerep.engines.base import Engine
from edgerep.errors import EdgerepError
from edgerep.progress import counted
from edgerep.report.models import Latency, dump

SCENARIOS = ("single-stream", "multi-stream", "offline")
RULE = "early stopping at 99% confidence: p90 needs >= 64 queries, p99 >= 662 (null below)"
#: what an MLPerf Inference (edge) submission needs per scenario: (queries, seconds); Offline counts samples
MLPERF_MINIMUMS = {"single-stream": (1024, 600.0), "multi-stream": (270336, 600.0), "offline": (24576, 600.0)}
BUILTIN_NOTE = ("LoadGen (pip install mlcommons-loadgen) is not installed here: the built-in timer ran, with the "
                "same query minimums and early-stopping percentiles")


@dataclass
class ScenarioSettings:
    """How long and how to time one engine; defaults are what `edgerep bench` and deploy use."""

    scenario: str = "single-stream"
    min_seconds: float = 1.0
    min_queries: int | None = None  # default: 64 (p90 needs it); 662 in multi-stream (p99 needs it)
    max_queries: int | None = None  # a fixed count: min_queries = max_queries and min_seconds = 0
    max_seconds: float | None = None  # a cap; default max(30, 20 x min_seconds)
    warmup: int = 10
    samples_per_query: int = 8  # multi-stream N
    use_loadgen: bool | None = None  # None: LoadGen when installed; False: built-in timer
    log_dir: Path | None = None  # LoadGen's logs (a temporary folder, removed, when None)
    noise: NoiseThresholds = field(default_factory=NoiseThresholds)
    mlperf_minimums: bool = False  # a submission's minimums (MLPERF_MINIMUMS): 600 s and 1024+ queries
    samples_source: str = "given"  # where the query sample pool came from, in words

    def queries_floor(self) -> int:
        """The minimum query count of this scenario."""
        if self.mlperf_minimums:
            q = MLPERF_MINIMUMS[self.scenario][0]
            return q if self.scenario != "offline" else 1  # Offline's minimum counts samples (min_samples)
        if self.min_queries is not None:
            return int(self.min_queries)
        return early_stopping.min_queries(99) if self.scenario == "multi-stream" else early_stopping.min_queries(90)

    def floor_seconds(self) -> float:
        """The minimum duration of this scenario."""
        return MLPERF_MINIMUMS[self.scenario][1] if self.mlperf_minimums else float(self.min_seconds)

    def cap_seconds(self) -> float:
        return float(self.max_seconds) if self.max_seconds else max(30.0, 20.0 * self.floor_seconds())


def check_settings(s: ScenarioSettings) -> None:
    """Refuse settings that cannot work, naming the field."""
    if s.scenario not in SCENARIOS:
        raise EdgerepError(f"scenario {s.scenario!r}: expected one of {', '.join(SCENARIOS)}")
    if s.min_seconds < 0 or (s.max_seconds is not None and s.max_seconds <= 0):
        raise EdgerepError(f"scenario seconds must be positive (min {s.min_seconds}, max {s.max_seconds})")
    if (s.min_queries is not None and s.min_queries < 1) or (s.max_queries is not None and s.max_queries < 1):
        raise EdgerepError("query counts must be positive")
    if s.samples_per_query < 1:
        raise EdgerepError(f"samples per query must be positive, got {s.samples_per_query}")
    if s.use_loadgen and _loadgen_version() is None:
        raise EdgerepError("LoadGen asked for but not installed", hint="pip install mlcommons-loadgen")


def _loadgen_version() -> str | None:
    from edgerep.bench.loadgen_driver import loadgen_version

    return loadgen_version()


def make_batch(x: np.ndarray, n: int) -> np.ndarray:
    """``n`` samples from ``x`` (rows repeated as needed), C-contiguous float32."""
    x = np.asarray(x, dtype=np.float32)
    reps = -(-n // x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps)[:n] if reps > 1 else x[:n])


def settings_note(s: ScenarioSettings, queries: int, min_q: int, min_s: float) -> str:
    """The run's minimums in words, beside what an MLPerf submission needs."""
    need_q, need_s = MLPERF_MINIMUMS[s.scenario]
    unit = "samples" if s.scenario == "offline" else "queries"
    kind = "MLPerf minimums" if s.mlperf_minimums else "MLPerf-style"
    floor = f"{min_q} {unit if s.scenario != 'offline' else 'batches'} / {min_s:g} s minimum"
    return (f"{kind}: {queries} queries ran ({floor}); a submission needs {need_q} {unit} / {need_s:g} s"
            + ("" if s.mlperf_minimums else " (--mlperf-minimums)"))


def run_scenario(engine: Engine, x: np.ndarray, settings: ScenarioSettings, *, batch: int | None = None,
                 log_name: str = "engine") -> dict:
    """Warm up, settle every pool, then time ``engine`` in ``settings.scenario`` on queries of distinct
    samples drawn from the pool ``x``; the report's latency block (a serialized ``Latency``)."""
    check_settings(settings)
    s = settings
    if s.scenario == "multi-stream":
        batch = s.samples_per_query
    pool = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    batch = int(batch or pool.shape[0] or 1)
    n_pool = int(pool.shape[0])

    def call(indices) -> None:
        engine.run(np.take(pool, np.asarray(indices) % n_pool, axis=0))

    warm = []
    for i in range(max(s.warmup, 1)):
        t0 = time.perf_counter()
        call(np.arange(i * batch, (i + 1) * batch))
        warm.append(time.perf_counter() - t0)
    expected = float(np.median(warm[len(warm) // 2:]))
    settle_s = settle()
    fixed = s.max_queries is not None
    min_q = int(s.max_queries) if fixed else s.queries_floor()
    min_s = 0.0 if fixed else s.floor_seconds()
    version = _loadgen_version() if s.use_loadgen is not False else None
    with counted(f"timing {log_name}", math.ceil(min_s) if min_s > 0 else None, "s") as tick:
        timed = _ticking_seconds(call, tick)
        if version is not None:
            res = _with_loadgen(timed, s, batch, min_q, min_s, expected, log_name, n_pool)
        else:
            res = _with_timer(timed, s.scenario, batch, min_q, int(s.max_queries or 0), min_s, s.cap_seconds())
    res["loadgen"] = version
    res["timer"] = "loadgen" if version else "built-in"
    res["timer_note"] = None if version else (BUILTIN_NOTE if s.use_loadgen is None else "built-in timer (asked for)")
    res["warmup"] = len(warm)
    res["settle_ms"] = round(settle_s * 1000.0, 1)
    res["samples_pool"] = n_pool
    res["samples_distinct"] = n_pool >= batch  # no sample twice in one query; queries walk the pool
    res["samples_source"] = s.samples_source
    res["settings_note"] = settings_note(s, res["queries"], min_q, min_s)
    res |= percentile_notes(s.scenario, res)
    call_ms = res.pop("_calls")
    res["spread"] = robust_spread(call_ms)
    res["p50_repeats_ms"] = repeat_p50s(call_ms)
    res["noisy"], res["noise_reason"] = assess(res, s.noise)
    return dump(Latency.model_validate(res))  # the report's typed latency block (edgerep.report.models.Latency)


def _ticking_seconds(call: Callable, tick: Callable[[int], None]) -> Callable:
    """``call``, advancing ``tick`` by each whole second that passed since the first call (a timing
    run's progress; a clock read per query, the display touched at most once a second)."""
    start: list[float] = []
    shown = 0

    def timed(indices) -> None:
        nonlocal shown
        call(indices)
        now = time.perf_counter()
        if not start:
            start.append(now)
        whole = int(now - start[0])
        if whole > shown:
            tick(whole - shown)
            shown = whole

    return timed


def percentile_notes(scenario: str, res: dict) -> dict:
    """What the shown p90 / p99 are: early-stopping estimates (the maximum where only one query may
    lie above), or, in multi-stream, LoadGen's plain p90 of per-query latency."""
    n = int(res.get("queries") or 0)
    notes = {}
    for p in (90, 99):
        if res.get(f"p{p}_ms") is None:
            notes[f"p{p}_kind"] = None
        elif scenario == "multi-stream" and p == 90:
            notes[f"p{p}_kind"] = "plain percentile"
        elif early_stopping.overlatency_allowed(n, p) == 1:
            notes[f"p{p}_kind"] = f"maximum ({n} queries: early stopping allows none above it)"
        else:
            notes[f"p{p}_kind"] = "early-stopping estimate"
    return notes


def _call_stats(call_ms: list[float], batch: int) -> dict:
    t = np.sort(np.asarray(call_ms, dtype=np.float64))
    return {"engine_p50_ms": percentile(t, 50), "mean_ms": float(t.mean()), "min_ms": float(t[0]),
            "max_ms": float(t[-1]), "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0, "cv": cv(t),
            "_calls": list(call_ms)}


def _common(scenario: str, batch: int, queries: int) -> dict:
    return {"scenario": scenario, "batch": batch, "queries": queries, "samples": queries * batch,
            "percentile_rule": RULE}


def _with_timer(call, scenario: str, batch: int, min_q: int, max_q: int, min_s: float, cap_s: float) -> dict:
    """The built-in timer: the same minimums (queries and seconds) and early-stopping percentiles."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        first = len(times) * batch  # the next samples of the pool, in order (wrapping)
        t0 = time.perf_counter()
        call(range(first, first + batch))
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1000.0)
        n = len(times)
        if max_q and n >= max_q:
            break
        if (n >= min_q and t1 - start >= min_s) or t1 - start >= cap_s:
            break
    wall = time.perf_counter() - start
    out = _common(scenario, batch, len(times)) | _call_stats(times, batch)
    out |= _percentiles_from_calls(times)
    out["throughput_ips"] = len(times) * batch / wall if wall > 0 else float("inf")
    out["duration_s"] = round(wall, 4)
    out["valid"] = None
    return out


def _percentiles_from_calls(times: list[float]) -> dict:
    t = np.sort(np.asarray(times, dtype=np.float64))
    return {"p50_ms": percentile(t, 50), "p90_ms": early_stopping.estimate(t, 90),
            "p99_ms": early_stopping.estimate(t, 99)}


def _with_loadgen(call, s: ScenarioSettings, batch: int, min_q: int, min_s: float, expected: float,
                  log_name: str, pool: int) -> dict:
    from edgerep.bench.loadgen_driver import LoadgenPlan, run_loadgen

    tmp = None
    log_dir = Path(s.log_dir) / log_name if s.log_dir else None
    if log_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgerep-loadgen-")
        log_dir = Path(tmp.name)
    fresh = not log_dir.exists()
    min_samples = MLPERF_MINIMUMS["offline"][0] if s.mlperf_minimums and s.scenario == "offline" else 0
    plan = LoadgenPlan(s.scenario, pool=pool, samples_per_query=batch, batch=batch,
                       min_queries=max(min_q, -(-min_samples // batch)), max_queries=int(s.max_queries or 0),
                       min_seconds=min_s, max_seconds=s.cap_seconds(), expected_s=expected)
    attempts = 1
    try:
        run = run_loadgen(call, plan, log_dir)
        r = run.results
        if s.scenario == "offline" and r.get("result_validity") != "VALID" and run.call_ms and min_s > 0:
            attempts = 2
            # cut short all the same (the host sped up after warm-up): once more, sized from this run
            measured = len(run.call_ms) * batch / max(sum(run.call_ms) / 1000.0, 1e-9)
            run = run_loadgen(call, replace(plan, offline_qps=2.0 * max(measured, run.expected_qps or 0.0)), log_dir)
    except BaseException:
        if fresh and tmp is None:  # the logs of a cut run are not a result
            shutil.rmtree(log_dir, ignore_errors=True)
        raise
    finally:
        if tmp is not None:
            tmp.cleanup()
    r = run.results
    ns = 1e-6  # LoadGen logs nanoseconds
    wall = max(run.last_done - run.first_issue, 1e-9)
    if s.scenario == "offline":  # one LoadGen query; per-batch times are the engine calls
        out = _common(s.scenario, batch, len(run.call_ms)) | _call_stats(run.call_ms, batch)
        out |= _percentiles_from_calls(run.call_ms)
        out["throughput_ips"] = float(r.get("result_samples_per_second") or len(run.call_ms) * batch / wall)
    else:
        per_query = "_per_query" if s.scenario == "multi-stream" else ""
        n = int(r.get("result_query_count") or len(run.call_ms))
        out = _common(s.scenario, batch, n) | _call_stats(run.call_ms, batch)
        p50 = r.get(f"result_50.00_percentile{per_query}_latency_ns")
        out["p50_ms"] = p50 * ns if p50 is not None else out["engine_p50_ms"]
        for key, lg_key in (("mean_ms", "mean"), ("min_ms", "min"), ("max_ms", "max")):
            v = r.get(f"result_{lg_key}{'_query' if per_query else ''}_latency_ns")
            if v is not None:
                out[key] = v * ns
        if s.scenario == "single-stream":
            es90, es99 = r.get("early_stopping_latency_ss"), r.get("early_stopping_latency_ms")
            qps = r.get("result_qps_with_loadgen_overhead")
            out["throughput_ips"] = float(qps) * batch if qps else n * batch / wall
        else:  # multi-stream: LoadGen's early stopping covers its target percentile (p99)
            es90, es99 = r.get("result_90.00_percentile_per_query_latency_ns"), r.get("early_stopping_latency_ms")
            out["throughput_ips"] = n * batch / wall
        out["p90_ms"] = es90 * ns if es90 and n >= early_stopping.min_queries(90) else None
        out["p99_ms"] = es99 * ns if es99 and n >= early_stopping.min_queries(99) else None
    out["duration_s"] = round(wall, 4)
    out["valid"] = r.get("result_validity") == "VALID"
    out["validity"] = r.get("result_validity")
    if not out["valid"]:
        out["invalid_reason"] = _invalid_reason(r)
        # too few queries for early stopping, every minimum met (a count the user fixed): only the tail
        # is not a result (p90 / p99 are already null); the p50 was measured
        tail_only = (r.get("early_stopping_met") is False and r.get("result_min_duration_met") is not False
                     and r.get("result_min_queries_met") is not False and not r.get("result_invalid_reason"))
        out["invalid_scope"] = "tail" if tail_only else "run"
    if run.expected_qps:
        out["offline_expected_qps"] = round(run.expected_qps, 1)
        out["loadgen_attempts"] = attempts  # 2: the first run was INVALID (cut short) and was run again
    out["log_dir"] = str(log_dir) if tmp is None else None
    return out


def _invalid_reason(r: dict) -> str:
    """Why LoadGen called a run INVALID, in its own words."""
    words = [str(v) for k, v in r.items() if k and ("invalid_reason" in k or k.endswith("_recommendation")) and v]
    if r.get("early_stopping_met") is False:
        words.append("early stopping not met:" + " ".join(str(r.get("early_stopping_result") or "").split()))
    if r.get("result_min_duration_met") is False:
        words.append("min duration not met")
    if r.get("result_min_queries_met") is False:
        words.append("min queries not met")
    return "; ".join(dict.fromkeys(words)) or f"LoadGen: {r.get('result_validity') or 'no result'}"
