"""Drive one timed phase with MLPerf LoadGen (``mlperf_loadgen``, PyPI ``mlcommons-loadgen``).

LoadGen issues the queries (SingleStream: one at a time; MultiStream: N samples per query, one
query at a time; Offline: every sample at once), times them itself and writes its summary and
detail logs into ``log_dir``. The system under test here runs one engine call per query (per batch
in Offline) and records its own per-call times, which give the CV LoadGen does not report.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

LOADGEN_SCENARIOS = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "offline": "Offline"}
KEPT_LOGS = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")


def loadgen_version() -> str | None:
    """The installed LoadGen's version, or None where there is no wheel (some aarch64 Pythons)."""
    try:
        import mlperf_loadgen  # noqa: F401
    except ImportError:
        return None
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("mlcommons-loadgen", "mlcommons_loadgen", "mlperf-loadgen"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "unknown"


@dataclass
class LoadgenRun:
    """What LoadGen logged (``results``: its detail-log keys) and what the SUT timed itself."""

    results: dict
    call_ms: list[float] = field(default_factory=list)  # one entry per engine call
    first_issue: float = 0.0
    last_done: float = 0.0
    log_dir: Path | None = None
    expected_qps: float | None = None  # Offline: what LoadGen was told


def parse_detail_log(path: Path) -> dict:
    """``:::MLLOG {json}`` lines of mlperf_log_detail.txt as {key: value} (the last value wins)."""
    out: dict = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                rec = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            out[rec.get("key")] = rec.get("value")
    return out


#: Offline: LoadGen sizes its one query as expected QPS x min duration x 1.1 samples and calls a run
#: INVALID when those samples take less than the min duration; the warm-up estimate is multiplied by
#: this (the run then lasts about this many times the minimum on a host as fast as in warm-up)
OFFLINE_QPS_OVERSTATE = 2.0


def offline_expected_qps(batch: int, expected_s: float, min_queries: int, min_seconds: float) -> float:
    """The ``offline_expected_qps`` to give LoadGen: over-stated, so the run is not cut short (INVALID)."""
    target = max(min_queries * batch, 1)  # samples: at least min_queries batches
    if min_seconds <= 0:  # a fixed count: LoadGen generates qps * duration * 1.1 samples
        return target / 0.0011
    return OFFLINE_QPS_OVERSTATE * max(batch / max(expected_s, 1e-7), target / (1.1 * max(min_seconds, 1e-3)))


@dataclass(frozen=True)
class LoadgenPlan:
    """One LoadGen performance test: the scenario, the query sample library (``pool`` distinct samples),
    samples per query (multi-stream) or per engine call (Offline ``batch``), and when it may stop.

    ``expected_s`` is the expected time of one engine call (from warm-up): single- and multi-stream
    schedules are sized from it under-stated (a run stops once both minimums are met); Offline's
    expected QPS is over-stated (``offline_expected_qps``) unless ``offline_qps`` is given."""

    scenario: str
    pool: int
    samples_per_query: int = 1
    batch: int = 1
    min_queries: int = 64
    max_queries: int = 0
    min_seconds: float = 1.0
    max_seconds: float = 0.0
    expected_s: float = 1e-3
    offline_qps: float | None = None

    @property
    def offline(self) -> bool:
        return self.scenario == "offline"


def run_loadgen(call: Callable[[list[int]], None], plan: LoadgenPlan, log_dir: Path) -> LoadgenRun:
    """Run one LoadGen performance test. ``call(indices)`` runs the engine on those samples of the
    query sample library (one engine call per query, per batch in Offline); LoadGen's logs go to ``log_dir``.

    SIGINT / SIGTERM are deferred while LoadGen runs (``edgerep.interrupts.deferred_signals``): the
    SUT then answers every query at once without running the engine, LoadGen winds down, and the
    signal is raised when it has returned. An engine error is raised the same way.
    """
    import mlperf_loadgen as lg

    from edgerep.interrupts import deferred_signals

    settings = loadgen_settings(lg, plan)
    run = LoadgenRun(results={}, expected_qps=float(settings.offline_expected_qps) if plan.offline else None)
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    with deferred_signals() as stop:
        sut = _Sut(lg, call, plan, run, stop)
        lg_sut = lg.ConstructSUT(sut.issue, lambda: None)
        pool = max(int(plan.pool), 1)
        qsl = lg.ConstructQSL(pool, pool, lambda idx: None, lambda idx: None)  # every sample is in RAM already
        try:
            lg.StartTestWithLogSettings(lg_sut, qsl, settings, _log_settings(lg, log_dir), "")
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(lg_sut)
    if sut.failed:
        raise sut.failed[0]
    _keep_only_summary_and_detail(log_dir)
    run.results = parse_detail_log(log_dir / "mlperf_log_detail.txt")
    run.log_dir = log_dir
    return run


def loadgen_settings(lg, plan: LoadgenPlan):
    """LoadGen's ``TestSettings`` for ``plan`` (performance only)."""
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, LOADGEN_SCENARIOS[plan.scenario])
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_query_count = int(plan.min_queries)
    settings.max_query_count = int(plan.max_queries)
    settings.min_duration_ms = int(plan.min_seconds * 1000)
    settings.max_duration_ms = int(plan.max_seconds * 1000)
    expected_ns = max(int(plan.expected_s * 0.5e9), 1000)  # under-state: more queries pre-generated, none wasted
    settings.single_stream_expected_latency_ns = expected_ns
    settings.multi_stream_expected_latency_ns = expected_ns
    settings.multi_stream_samples_per_query = int(plan.samples_per_query)
    if plan.offline:
        settings.offline_expected_qps = plan.offline_qps or offline_expected_qps(
            plan.batch, plan.expected_s, plan.min_queries, plan.min_seconds)
        if plan.min_seconds <= 0:
            settings.min_duration_ms = 1
        settings.min_query_count = 1
    return settings


def _log_settings(lg, log_dir: Path):
    """LoadGen writes its summary and detail logs into ``log_dir``, nothing to stdout, no trace."""
    out = lg.LogOutputSettings()
    out.outdir = str(log_dir)
    out.copy_summary_to_stdout = False
    out.copy_detail_to_stdout = False
    log = lg.LogSettings()
    log.log_output = out
    log.enable_trace = False
    return log


class _Sut:
    """The system under test: one engine call per query (per ``batch`` of Offline's one query), each timed
    into ``run.call_ms``. After a signal (``stop``) or an engine error (kept in ``failed``, never raised
    across LoadGen's C++ frames) it answers every query at once without running the engine."""

    def __init__(self, lg, call: Callable[[list[int]], None], plan: LoadgenPlan, run: LoadgenRun, stop):
        self.lg, self.call, self.plan, self.run, self.stop = lg, call, plan, run, stop
        self.failed: list[BaseException] = []

    def issue(self, query_samples) -> None:
        idx = [q.index for q in query_samples]
        n, run = len(idx), self.run
        if not run.first_issue:
            run.first_issue = time.perf_counter()
        done = 0
        while done < n and not self.stop and not self.failed:  # a signal or an error: answer at once
            k = min(self.plan.batch, n - done) if self.plan.offline else n  # Offline: the big query in batches
            t0 = time.perf_counter()
            try:
                self.call(idx[done:done + k])
            except Exception as e:  # never across LoadGen's C++ frames
                self.failed.append(e)
                break
            run.call_ms.append((time.perf_counter() - t0) * 1000.0)
            done += k
        run.last_done = time.perf_counter()
        self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(q.id, 0, 0) for q in query_samples])


def _keep_only_summary_and_detail(log_dir: Path) -> None:
    """Keep the summary and the detail log; the rest is empty here."""
    for extra in log_dir.iterdir():
        if extra.name not in KEPT_LOGS and extra.is_file():
            extra.unlink()
