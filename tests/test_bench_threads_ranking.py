"""Thread discipline (settled phases) and latency choices that respect the measured noise."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.bench.ranking import choose_within_noise, paired_ratio
from edgerep.bench.scenarios import ScenarioSettings, run_scenario
from edgerep.bench.threads import busy_share, settle
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


def test_two_engines_back_to_back_agree_with_each_alone(models):
    """Each engine's p50 right after the other engine's phase matches its p50 timed alone, over three
    alternations (generous bounds: the failure guarded against is one pool spinning against another,
    10-100x slow; a loaded host moves medians far less)."""
    torch.set_num_threads(2)
    ort = OrtEngine(models["big"][1], threads=2, session_config={"session.intra_op.allow_spinning": "1"})
    tor = TorchEngine(models["big"][0])
    s = ScenarioSettings(min_seconds=0.0, min_queries=64, warmup=5, use_loadgen=False)
    p50: dict[str, list[float]] = {k: [] for k in ("ort alone", "ort after torch", "torch alone", "torch after ort")}
    run_scenario(ort, X, s)
    for _ in range(3):
        p50["ort alone"].append(run_scenario(ort, X, s)["p50_ms"])  # right after its own phase
        p50["torch after ort"].append(run_scenario(tor, X, s)["p50_ms"])
        p50["torch alone"].append(run_scenario(tor, X, s)["p50_ms"])
        p50["ort after torch"].append(run_scenario(ort, X, s)["p50_ms"])
    med = {k: float(np.median(v)) for k, v in p50.items()}
    assert 1 / 4 < med["ort after torch"] / med["ort alone"] < 4, med
    assert 1 / 4 < med["torch after ort"] / med["torch alone"] < 4, med


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
