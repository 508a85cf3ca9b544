"""MLPerf scenarios through LoadGen and through the built-in timer: the same fields, the same rules."""
from __future__ import annotations

import re
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from edgerep.bench import early_stopping
from edgerep.bench.latency import percentile
from edgerep.bench.loadgen_driver import loadgen_version, parse_detail_log
from edgerep.bench.loadgen_driver import offline_expected_qps
from edgerep.bench.noise import NoiseThresholds, assess, repeat_p50s, robust_spread
from edgerep.bench.runner import best_batch
from edgerep.bench.scenarios import ScenarioSettings, run_scenario
from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.errors import EdgerepError
from edgerep.quant.export import export_onnx

FIELDS = ("scenario", "queries", "p50_ms", "p90_ms", "p99_ms", "throughput_ips", "cv", "loadgen", "noisy",
          "noise_reason", "spread", "p50_repeats_ms", "settings_note", "samples_pool", "p90_kind", "p99_kind")
needs_loadgen = pytest.mark.skipif(loadgen_version() is None, reason="mlcommons-loadgen is not installed")


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("scen") / "m.onnx"
    export_onnx(m, path, (3, 8, 8))
    return path


@pytest.fixture()
def x():
    return np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)


class _Jittery:
    """An Engine whose every 4th call stalls 20 ms: a workload with a known heavy tail."""

    name, precision, device = "jittery", "fp32", "cpu"

    def __init__(self):
        self.calls = 0

    def run(self, x):
        self.calls += 1
        time.sleep(0.02 if self.calls % 4 == 0 else 0.0005)
        return x

    def describe(self):
        return {}


# ---- early stopping ------------------------------------------------------------------------------
def test_early_stopping_query_minimums_are_loadgens():
    assert early_stopping.min_queries(90) == 64 and early_stopping.min_queries(99) == 662
    assert early_stopping.estimate(np.arange(63.0), 90) is None
    assert early_stopping.estimate(np.arange(64.0), 90) == 63.0  # one over-latency query allowed: the max
    assert early_stopping.estimate(np.arange(661.0), 99) is None


@given(st.lists(st.floats(0.01, 100), min_size=64, max_size=400))
def test_early_stopping_estimate_is_never_below_the_plain_percentile(ts):
    t = np.sort(np.asarray(ts))
    est = early_stopping.estimate(t, 90)
    assert est is not None and est >= np.quantile(t, 0.9, method="lower") and est <= t[-1]


@needs_loadgen
def test_early_stopping_discards_as_many_queries_as_loadgen(small_onnx, x, tmp_path):
    eng = OrtEngine(small_onnx, threads=1)
    r = run_scenario(eng, x, ScenarioSettings(min_seconds=0.05, min_queries=300, log_dir=tmp_path), log_name="ss")
    text = parse_detail_log(tmp_path / "ss" / "mlperf_log_detail.txt")["early_stopping_result"]
    discarded = int(re.search(r"Would discard (\d+) highest", text).group(1))
    assert discarded == early_stopping.overlatency_allowed(r["queries"], 90) - 1


# ---- noise ---------------------------------------------------------------------------------------
def _row(times, p50=None, p99=None, p90=None) -> dict:
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "spread": robust_spread(times),
            "p50_repeats_ms": repeat_p50s(times)}


def test_noise_assessment_names_its_reasons():
    quiet = np.full(200, 1.0) + np.linspace(0, 0.1, 200)
    assert assess(_row(quiet, 1.0, 1.1)) == (False, None)
    noisy, why = assess(_row(np.r_[np.ones(95), np.full(5, 40.0)], 1.0, 40.0))
    assert noisy and "p99/p50 40.00 > 3" in why and "spread" not in why
    assert assess(_row(quiet, 1.0, 2.0), NoiseThresholds(tail=1.5))[1] == "p99/p50 2.00 > 1.5"


def test_noise_is_judged_on_the_figures_shown():
    """A row showing p99/p50 = 3.59 is marked, whatever the engine's own call times say."""
    quiet = np.full(700, 1.0)
    noisy, why = assess(_row(quiet, p50=1.0, p99=3.59))
    assert noisy and why == "p99/p50 3.59 > 3"
    assert assess(_row(quiet, p50=1.0, p90=3.5))[1] == "p90/p50 3.50 > 3"  # no p99 shown: the shown p90


def test_one_preemption_is_not_noise_but_a_drifting_p50_is():
    rng = np.random.default_rng(0)
    base = 1.0 + 0.02 * rng.standard_normal(400)
    one_stall = base.copy()
    one_stall[200] = 100.0  # one preempted query: the CV explodes, the robust spread does not move
    assert np.std(one_stall) / np.mean(one_stall) > 0.5
    assert assess(_row(one_stall, 1.0, 1.05)) == (False, None)
    drifting = np.r_[base[:200], 2.9 * base[200:]]  # the p50 moves 2.9x between repeats
    noisy, why = assess(_row(drifting, float(np.median(drifting)), float(np.quantile(drifting, 0.99))))
    assert noisy and "quarters moves 2.9" in why


@pytest.mark.parametrize("use_loadgen", [None, False])
def test_a_heavy_tailed_engine_is_marked_noisy(use_loadgen, tmp_path):
    if use_loadgen is None and loadgen_version() is None:
        pytest.skip("mlcommons-loadgen is not installed")
    r = run_scenario(_Jittery(), np.zeros((1, 1), np.float32),
                     ScenarioSettings(min_seconds=0.0, min_queries=80, warmup=1, use_loadgen=use_loadgen,
                                      log_dir=tmp_path))
    assert r["noisy"] and "p90/p50" in r["noise_reason"] and r["cv"] > 1.0
    # throughput from the total time: samples / duration, not 1 / mean latency of the engine calls
    assert r["throughput_ips"] == pytest.approx(r["samples"] / r["duration_s"], rel=0.1)


# ---- scenarios -----------------------------------------------------------------------------------
@needs_loadgen
@pytest.mark.parametrize("scenario,batch", [("single-stream", 1), ("multi-stream", None), ("offline", 4)])
def test_loadgen_scenarios_report_the_fields(scenario, batch, small_onnx, x, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    eng = OrtEngine(small_onnx, threads=1)
    s = ScenarioSettings(scenario=scenario, min_seconds=0.05, samples_per_query=2, log_dir=tmp_path / "logs")
    r = run_scenario(eng, x, s, batch=batch, log_name="eng")
    assert all(k in r for k in FIELDS)
    assert r["scenario"] == scenario and r["loadgen"] == loadgen_version() and r["timer"] == "loadgen"
    assert r["queries"] >= 64 and r["p90_ms"] is not None and r["p50_ms"] <= r["p90_ms"]
    if scenario == "multi-stream":  # N samples per query, and 662 queries so that the p99 exists
        assert r["batch"] == 2 and r["queries"] >= 662 and r["p99_ms"] >= r["p90_ms"]
    if scenario == "offline":
        assert r["batch"] == 4 and r["samples"] == 4 * r["queries"]
    logs = sorted(p.name for p in (tmp_path / "logs" / "eng").iterdir())
    assert logs == ["mlperf_log_detail.txt", "mlperf_log_summary.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # nothing in the current folder


@needs_loadgen
def test_a_fixed_query_count_gives_no_tail_percentiles(small_onnx, x):
    r = run_scenario(OrtEngine(small_onnx, threads=1), x, ScenarioSettings(max_queries=20, warmup=1))
    assert r["queries"] == 20 and r["p50_ms"] > 0 and r["p90_ms"] is None and r["p99_ms"] is None
    assert r["log_dir"] is None  # no log folder asked for: LoadGen wrote into a temporary one


def test_builtin_timer_applies_the_same_rules_and_says_so(small_onnx, x, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # as on a host with no LoadGen wheel
    eng = OrtEngine(small_onnx, threads=1)
    r = run_scenario(eng, x, ScenarioSettings(min_seconds=0.02, min_queries=100))
    assert r["loadgen"] is None and r["timer"] == "built-in" and "not installed" in r["timer_note"]
    assert r["queries"] >= 100 and r["p90_ms"] is not None and (r["p99_ms"] is None) == (r["queries"] < 662)
    with pytest.raises(EdgerepError, match="LoadGen asked for but not installed"):
        run_scenario(eng, x, ScenarioSettings(use_loadgen=True))
    r = run_scenario(eng, x, ScenarioSettings(scenario="multi-stream", samples_per_query=3, min_seconds=0.0))
    assert r["batch"] == 3 and r["queries"] == 662 and r["p99_ms"] >= r["p90_ms"] >= r["p50_ms"]


def test_builtin_percentiles_follow_the_calls():
    eng = _Jittery()
    r = run_scenario(eng, np.zeros((1, 1), np.float32),
                     ScenarioSettings(max_queries=80, warmup=1, use_loadgen=False))
    assert r["queries"] == 80 and eng.calls == 81
    assert r["p50_ms"] < 5 and r["p90_ms"] > 15  # a quarter of the calls stall 20 ms


def test_bad_settings_are_refused(x, small_onnx):
    eng = OrtEngine(small_onnx, threads=1)
    for bad in (ScenarioSettings(scenario="server"), ScenarioSettings(min_queries=0),
                ScenarioSettings(samples_per_query=0), ScenarioSettings(min_seconds=-1)):
        with pytest.raises(EdgerepError):
            run_scenario(eng, x, bad)


def test_percentile_rule_unchanged_for_p50():
    assert percentile(np.arange(1.0, 101.0), 50) == 50.0


# ---- what the harness serves and says ------------------------------------------------------------
class _Recorder:
    """An Engine that records the samples it was given (first value of each row)."""

    name, precision, device = "recorder", "fp32", "cpu"

    def __init__(self):
        self.seen: list[float] = []

    def run(self, x):
        self.seen.extend(float(v) for v in x.reshape(x.shape[0], -1)[:, 0])
        return x

    def describe(self):
        return {}


@pytest.mark.parametrize("use_loadgen", [None, False])
@pytest.mark.parametrize("scenario,batch", [("single-stream", 1), ("offline", 4)])
def test_queries_are_served_distinct_samples_of_the_pool(use_loadgen, scenario, batch, tmp_path):
    if use_loadgen is None and loadgen_version() is None:
        pytest.skip("mlcommons-loadgen is not installed")
    pool = np.arange(32, dtype=np.float32).reshape(32, 1, 1)
    eng = _Recorder()
    r = run_scenario(eng, pool, ScenarioSettings(scenario=scenario, max_queries=40, warmup=1,
                                                 use_loadgen=use_loadgen, log_dir=tmp_path), batch=batch)
    assert r["samples_pool"] == 32 and r["samples_distinct"]
    assert len(set(eng.seen)) >= 16, sorted(set(eng.seen))  # not one pre-built batch served to every query


def test_settings_say_they_are_not_a_submission(small_onnx, x):
    r = run_scenario(OrtEngine(small_onnx, threads=1), x, ScenarioSettings(min_seconds=0.01, use_loadgen=False))
    assert r["settings_note"].startswith(f"MLPerf-style: {r['queries']} queries ran (64 queries / 0.01 s minimum)")
    assert "a submission needs 1024 queries / 600 s" in r["settings_note"]
    s = ScenarioSettings(mlperf_minimums=True)
    assert s.queries_floor() == 1024 and s.floor_seconds() == 600.0
    assert ScenarioSettings(scenario="offline", mlperf_minimums=True).floor_seconds() == 600.0


def test_a_p90_at_the_query_floor_says_it_is_the_maximum(small_onnx, x):
    r = run_scenario(OrtEngine(small_onnx, threads=1), x, ScenarioSettings(max_queries=64, warmup=1,
                                                                           use_loadgen=False))
    assert r["p90_ms"] == r["max_ms"] and r["p90_kind"].startswith("maximum") and r["p99_kind"] is None
    r = run_scenario(OrtEngine(small_onnx, threads=1), x, ScenarioSettings(max_queries=300, warmup=1,
                                                                           use_loadgen=False))
    assert r["p90_kind"] == "early-stopping estimate"


@needs_loadgen
def test_multi_stream_p90_is_labelled_a_plain_percentile(small_onnx, x, tmp_path):
    r = run_scenario(OrtEngine(small_onnx, threads=1), x, ScenarioSettings(scenario="multi-stream", min_seconds=0.0,
                                                                           samples_per_query=2, warmup=1))
    assert r["p90_kind"] == "plain percentile" and r["p99_kind"] != "plain percentile"


@needs_loadgen
def test_offline_run_is_valid(small_onnx, x, tmp_path):
    """LoadGen's own log says VALID: expected QPS over-stated (warm-up is slower than the run)."""
    s = ScenarioSettings(scenario="offline", min_seconds=0.3, log_dir=tmp_path, warmup=10)
    r = run_scenario(OrtEngine(small_onnx, threads=1), np.repeat(x, 64, axis=0), s, batch=8, log_name="off")
    summary = (tmp_path / "off" / "mlperf_log_summary.txt").read_text()
    assert "Result is : VALID" in summary and r["valid"] is True, summary
    assert r["loadgen_attempts"] == 1, "the first LoadGen run was cut short (INVALID) and had to be rerun"
    assert offline_expected_qps(8, 1e-3, 64, 1.0) == pytest.approx(2 * 8000)  # warm-up's 8000/s, doubled


def test_an_invalid_offline_run_is_never_the_result():
    by_batch = {"1": {"throughput_ips": 100.0, "valid": True}, "8": {"throughput_ips": 900.0, "valid": False},
                "32": {"throughput_ips": 500.0, "valid": True}}
    assert best_batch(by_batch) == "32"
    assert best_batch({"8": {"throughput_ips": 900.0, "valid": False}}) is None
    assert best_batch({"8": {"throughput_ips": 9.0, "valid": None}}) == "8"  # built-in timer: no LoadGen verdict
