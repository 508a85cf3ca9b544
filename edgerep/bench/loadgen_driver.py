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


def run_loadgen(call: Callable[[int], None], scenario: str, *, log_dir: Path, samples_per_query: int = 1,
                batch: int = 1, min_queries: int = 64, max_queries: int = 0, min_seconds: float = 1.0,
                max_seconds: float = 0.0, expected_s: float = 1e-3) -> LoadgenRun:
    """Run one LoadGen performance test. ``call(n)`` runs the engine on ``n`` samples (one batch).

    ``expected_s`` is the expected time of one engine call (from warm-up): LoadGen sizes its query
    schedule from it, so it is under-stated on purpose (a run stops once both minimums are met).
    """
    import mlperf_loadgen as lg

    run = LoadgenRun(results={})
    times = run.call_ms

    def issue(query_samples) -> None:
        n = len(query_samples)
        if not run.first_issue:
            run.first_issue = time.perf_counter()
        done = 0
        while done < n:  # Offline: the one big query in batches; otherwise one call per query
            k = min(batch, n - done) if scenario == "offline" else n
            t0 = time.perf_counter()
            call(k)
            times.append((time.perf_counter() - t0) * 1000.0)
            done += k
        run.last_done = time.perf_counter()
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q.id, 0, 0) for q in query_samples])

    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, LOADGEN_SCENARIOS[scenario])
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_query_count = int(min_queries)
    settings.max_query_count = int(max_queries)
    settings.min_duration_ms = int(min_seconds * 1000)
    settings.max_duration_ms = int(max_seconds * 1000)
    expected_ns = max(int(expected_s * 0.5e9), 1000)  # under-state: more queries pre-generated, none wasted
    settings.single_stream_expected_latency_ns = expected_ns
    settings.multi_stream_expected_latency_ns = expected_ns
    settings.multi_stream_samples_per_query = int(samples_per_query)
    if scenario == "offline":
        target = max(min_queries * batch, 1)  # samples: at least min_queries batches
        qps = max(batch / max(expected_s, 1e-7), target / (1.1 * max(min_seconds, 1e-3)))
        if min_seconds <= 0:  # a fixed count: LoadGen generates qps * duration * 1.1 samples
            settings.min_duration_ms = 1
            qps = target / 0.0011
        settings.offline_expected_qps = qps
        settings.min_query_count = 1
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    out = lg.LogOutputSettings()
    out.outdir = str(log_dir)
    out.copy_summary_to_stdout = False
    out.copy_detail_to_stdout = False
    log = lg.LogSettings()
    log.log_output = out
    log.enable_trace = False
    pool = max(1024, samples_per_query)
    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(pool, pool, lambda idx: None, lambda idx: None)
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log, "")
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    for extra in log_dir.iterdir():  # keep the summary and the detail log; the rest is empty here
        if extra.name not in KEPT_LOGS and extra.is_file():
            extra.unlink()
    run.results = parse_detail_log(log_dir / "mlperf_log_detail.txt")
    run.log_dir = log_dir
    return run
