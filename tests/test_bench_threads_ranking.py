"""Thread discipline (settled phases) and latency choices that respect the measured noise."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.bench.ranking import choose_within_noise, paired_ratio
from edgerep.bench.scenarios import ScenarioSettings, run_scenario
from edgerep.bench.threads import settle
from edgerep.engines.onnxruntime_engine import OrtEngine
from edgerep.engines.torch_engine import TorchEngine
from edgerep.quant.cpu_features import parse_cpuinfo
from edgerep.quant.export import export_onnx
from edgerep.quant.policy import by_simplicity, cpu_candidates


def _net(depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("rank")
    small, big = _net(1), _net(12)
    export_onnx(small, d / "small.onnx", (3, 32, 32))
    export_onnx(big, d / "big.onnx", (3, 32, 32))
    return {"small": (small, d / "small.onnx"), "big": (big, d / "big.onnx")}


X = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)


def busy_share(window_s: float = 0.05) -> float:
    """Share of one core this process burns while the calling thread sleeps (spinning workers)."""
    c0, w0 = time.process_time(), time.perf_counter()
    time.sleep(window_s)
    return (time.process_time() - c0) / max(time.perf_counter() - w0, 1e-9)


def test_settle_waits_until_spinning_pools_have_parked(models):
    eng = OrtEngine(models["big"][1], threads=2, session_config={"session.intra_op.allow_spinning": "1"})
    assert eng.describe()["spinning"] == {"intra_op": True, "inter_op": False, "why": "set by the session config"}
    torch.set_num_threads(2)
    tor = TorchEngine(models["big"][0])
    for _ in range(50):
        eng.run(X)
        tor.run(X)
    settle(max_wait_s=5.0)  # a loaded host stretches the workers' spin (counted in iterations) in time
    assert busy_share(0.05) < 0.3  # quiet: no pool burns a core while nothing runs


def test_each_engine_is_timed_only_after_the_previous_pools_settled(models, monkeypatch):
    """Back to back, each engine's timed queries start only after its warm-up and a settle that
    follows every run of the previous engine: the order of events, not a timing ratio (the ratios,
    which a loaded host moves, are measured by benchmarks/back_to_back.py)."""
    import edgerep.bench.scenarios as scenarios

    torch.set_num_threads(2)
    events: list[str] = []
    real_settle = scenarios.settle
    monkeypatch.setattr(scenarios, "settle", lambda *a, **k: (events.append("settle"), real_settle(*a, **k))[1])
    ort = OrtEngine(models["big"][1], threads=2, session_config={"session.intra_op.allow_spinning": "1"})
    tor = TorchEngine(models["big"][0])
    for name, eng in (("ort", ort), ("torch", tor)):
        real_run = eng.run
        monkeypatch.setattr(eng, "run", lambda x, _r=real_run, _n=name: (events.append(_n), _r(x))[1])
    s = ScenarioSettings(min_seconds=0.0, min_queries=64, max_queries=70, warmup=5, use_loadgen=False)
    res = [run_scenario(eng, X, s) for eng in (ort, tor, ort)]
    phases, i = [], 0
    for r in res:  # each phase: warm-up runs, one settle, then only its own timed runs
        name = events[i]
        j = events.index("settle", i)
        assert events[i:j] == [name] * r["warmup"], events[i:j]
        k = j + 1
        while k < len(events) and events[k] == name:
            k += 1
        assert k - j - 1 == r["queries"] >= 64, (name, k - j - 1, r["queries"])
        phases.append(name)
        i = k
    assert phases == ["ort", "torch", "ort"] and i == len(events)
    assert all(r["settle_ms"] >= 0 for r in res)


def test_paired_ratio_is_a_confidence_interval_over_rounds():
    rng = np.random.default_rng(0)
    load = rng.uniform(1, 3, 12)  # shared load per round: cancels out of the paired ratio
    ref = [list(load[i] * (1 + 0.01 * rng.standard_normal(5))) for i in range(12)]
    cand = [list(0.5 * load[i] * (1 + 0.01 * rng.standard_normal(5))) for i in range(12)]
    r = paired_ratio(cand, ref)
    assert r.low < 0.5 < r.high and r.high < 0.55 and r.rounds == 12
    same = paired_ratio(ref, ref)
    assert same.estimate == pytest.approx(1.0) and same.low == pytest.approx(1.0)


def test_identical_engines_tie_and_the_simplest_wins(models):
    a = OrtEngine(models["small"][1], threads=1)
    b = OrtEngine(models["small"][1], threads=1)
    rank = choose_within_noise({"simple": a, "flagged": b}, X, rounds=6, min_gain=0.2)
    assert rank.chosen == "simple" and rank.verdict == "tie" and rank.reason.startswith("tie")
    assert set(rank.latency_ms) == {"simple", "flagged"} and rank.ratios["flagged"].rounds >= 3


def test_a_clearly_faster_engine_wins_beyond_the_noise(models):
    slow = OrtEngine(models["big"][1], threads=1)
    fast = OrtEngine(models["small"][1], threads=1)
    rank = choose_within_noise({"simple-but-slow": slow, "fast": fast}, X, rounds=6)
    assert rank.chosen == "fast" and rank.verdict == "faster" and rank.ratios["fast"].high < 0.97
    only = choose_within_noise({"simple-but-slow": slow, "fast": fast}, X, rounds=3, among=["simple-but-slow"])
    assert only.chosen == "simple-but-slow" and only.verdict == "simplest"  # rejected ones are timed, never chosen


AVX2 = "processor : 0\nmodel name : Some AVX2 CPU\nflags : fpu sse avx avx2 fma\n"
VNNI = "processor : 0\nmodel name : AMD EPYC\nflags : fpu avx avx2 avx512f avx512_vnni\n"


@pytest.mark.parametrize("cpuinfo,first", [(AVX2, ["u8s8", "s8s8"]), (VNNI, ["u8s8", "s8s8"])])
def test_simplest_policy_order_is_8bit_without_session_flags_first(cpuinfo, first):
    order = [p.name for p in by_simplicity(cpu_candidates(parse_cpuinfo(cpuinfo, "x86_64")))]
    assert order[:2] == first
    assert order.index("u8s8-w7") > order.index("s8s8")
    if "u8s8-x64prec" in order:
        assert order[-1] == "u8s8-x64prec"  # session flags last


def test_spinning_policy_is_deliberate_and_recorded(models, monkeypatch):
    from edgerep.engines import onnxruntime_engine as oe

    monkeypatch.setattr(oe.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(oe.os, "getloadavg", lambda: (0.3, 0.3, 0.3))
    assert oe.spinning_policy("auto", 4)[0] is True
    monkeypatch.setattr(oe.os, "getloadavg", lambda: (4.4, 4.0, 4.0))
    assert oe.spinning_policy("auto", 4)[0] is True  # 8.4 <= 8.5: a quiet host's background load still spins
    monkeypatch.setattr(oe.os, "getloadavg", lambda: (6.5, 6.0, 5.0))  # other work wants the cores
    spin, why = oe.spinning_policy("auto", 4)
    assert spin is False and "load 6.5 + 4 threads > 8 cores + 0.5" in why
    assert oe.spinning_policy("auto", 1) == (False, "auto: one thread, no workers to spin")
    assert oe.spinning_policy("on", 4)[0] is True and oe.spinning_policy("off", 4)[0] is False
    eng = OrtEngine(models["small"][1], threads=4, spinning="auto")
    assert eng.describe()["spinning"] == {"intra_op": False, "inter_op": False, "why": why}
    with pytest.raises(Exception, match="spinning"):
        OrtEngine(models["small"][1], spinning="sometimes")
