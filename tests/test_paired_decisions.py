"""Accuracy decisions on paired counts (issue 20, items 11-12): a budget finer than the set's
resolution cannot reject on one flipped image, a truly worse candidate is still rejected, messages
give the counts and bounds; ties inside the noise go to the simplest policy, never to a raw median."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgerep.bench.ranking import Ranking
from edgerep.quant.cpu_features import parse_cpuinfo
from edgerep.quant.mixed import Score, mixed_precision
from edgerep.quant.paired import ALPHA, Paired, drop_bounds, judge, p_value, resolution_note, tied_with_best
from edgerep.quant.pipeline import Candidate, fallback_choice
from edgerep.quant.policy import cpu_candidates

VNNI = "processor : 0\nmodel name : AMD EPYC\nflags : fpu avx avx2 avx512f avx512_vnni\n"


def counts(draw_n=st.integers(1, 3000)):
    @st.composite
    def make(draw):
        n = draw(draw_n)
        lost = draw(st.integers(0, n))
        gained = draw(st.integers(0, n - lost))
        return Paired(n, lost, gained)
    return make()


# ---- the decision ------------------------------------------------------------------------------
def test_one_flipped_image_is_below_what_the_set_can_resolve():
    for n in (72, 180):
        v = judge(100.0 / n, 0.5, Paired(n, 1, 0))
        assert v.holds, v.text
        assert f"1 of {n} flipped to wrong, 0 to right" in v.text and "coarser than the budget" in v.text
        assert v.low < 0.5 < v.high  # the interval says the set cannot tell
    assert "0.56 points" in resolution_note(180, 0.5) and resolution_note(1000, 0.5) is None


def test_a_policy_five_points_worse_is_rejected_with_its_counts():
    v = judge(5.0, 0.5, Paired(180, 9, 0))
    assert not v.holds and v.low > 0.5 and v.p_value < ALPHA
    assert "9 of 180 flipped to wrong, 0 to right" in v.text and "worse than the 0.5-point budget" in v.text


def test_without_counts_the_measure_is_compared_as_it_is():
    assert judge(0.4, 0.5).holds and not judge(0.6, 0.5).holds  # e.g. a cosine loss: continuous, no images


@given(counts(), st.floats(0.0, 5.0))
def test_bounds_bracket_the_observed_drop_and_agree_with_the_exact_p_value(p, budget):
    lo, hi = drop_bounds(p)
    assert lo <= p.drop + 1e-9 and p.drop <= hi + 1e-9
    v = judge(p.drop, budget, p)
    assert v.holds == (lo <= budget)
    pv = p_value(p, budget)
    if abs(lo - budget) > 1e-6:  # away from the boundary the bound and the test are the same decision
        assert v.holds == (pv >= ALPHA), (p, budget, lo, pv)
    if p.drop <= budget:
        assert v.holds  # a drop within the budget is never rejected


@given(counts(st.integers(2, 3000)), st.floats(0.0, 5.0))
def test_one_more_lost_image_never_turns_a_rejection_into_an_acceptance(p, budget):
    if p.lost + p.gained >= p.n:
        return
    before = judge(0, budget, p).holds
    after = judge(0, budget, Paired(p.n, p.lost + 1, p.gained)).holds
    assert before or not after


@given(st.integers(180, 5000), st.data())
def test_five_points_lost_with_nothing_gained_is_always_rejected(n, data):
    lost = data.draw(st.integers(-(-5 * n // 100), n))
    assert not judge(0, 0.5, Paired(n, lost, 0)).holds


def test_decisions_are_calibrated_on_simulated_sets():
    """A truly 5-point-worse candidate is rejected almost always; one exactly at the budget rarely."""
    rng = np.random.default_rng(0)

    def rejected(n, p_lost, p_gained, trials=300):
        k = rng.multinomial(n, [p_lost, p_gained, 1 - p_lost - p_gained], size=trials)
        return np.mean([not judge(0, 0.5, Paired(n, int(a), int(b))).holds for a, b, _ in k])

    assert rejected(360, 0.055, 0.005) > 0.95
    assert rejected(360, 0.01, 0.005) <= ALPHA + 0.02  # drop exactly 0.5 points: at most alpha
    assert rejected(72, 0.014, 0.0) <= ALPHA  # about one image of 72: not a rejection


# ---- mixed precision: the same decision --------------------------------------------------------
def _scorer(whole: Paired, without: dict[str, Paired]):
    def score(exclude, only):
        if only is not None:
            return Score(drop=1.0 if only[0] in without else 0.0, error=0.0)
        p = without.get(exclude[-1], whole) if exclude else whole
        return Score(drop=p.drop, error=0.0, paired=p)
    return score


def test_mixed_precision_keeps_nothing_in_float_for_one_flipped_image():
    res = mixed_precision(["a", "b", "c"], _scorer(Paired(72, 1, 0), {"a": Paired(72, 0, 0)}), 0.5)
    assert res.met and res.excluded == []  # before: 1.39 > 0.5, layers left INT8 to chase one image


def test_mixed_precision_still_excludes_for_a_real_loss():
    res = mixed_precision(["a", "b", "c"], _scorer(Paired(180, 9, 0), {"a": Paired(180, 0, 0)}), 0.5)
    assert res.met and [e["node"] for e in res.excluded] == ["a"]


# ---- ties: the simplest policy wins inside the noise ---------------------------------------------
def _cands(latency: dict[str, float]):
    pols = cpu_candidates(parse_cpuinfo(VNNI, "x86_64"))  # u8s8, s8s8, u8s8-w7
    return [(p, Candidate(p.name, {}, "", None, None, 0.56, 0.0, latency[p.name], False, ""), Path(p.name))
            for p in pols]


def _score(correct: np.ndarray, ref: np.ndarray, error: float) -> Score:
    p = Paired.of(ref, correct)
    return Score(drop=p.drop, error=error, paired=p, correct=correct)


def test_a_latency_tie_goes_to_the_simplest_policy_and_says_why():
    """The issue's case: all three lose one image of 180; u8s8-w7 has the largest error and the lowest raw median."""
    ref = np.ones(180, bool)
    wrong = {"u8s8": 3, "s8s8": 7, "u8s8-w7": 11}
    scores = {k: _score(np.where(np.arange(180) == i, False, ref), ref, e)
              for (k, i), e in zip(wrong.items(), (1e-4, 2e-4, 9e-4))}
    cands = _cands({"u8s8": 0.0615, "s8s8": 0.0620, "u8s8-w7": 0.0606})
    rank = Ranking("u8s8", "tie", "tie: s8s8 1.01x (95% CI 0.9-1.1), u8s8-w7 0.99x (95% CI 0.9-1.1) vs u8s8 is "
                   "within the measured noise (or slower); the simpler u8s8 wins",
                   {"u8s8": 0.0615, "s8s8": 0.0620, "u8s8-w7": 0.0606})
    pick, why = fallback_choice(cands, scores, rank)
    assert pick == "u8s8"
    assert "u8s8, s8s8, u8s8-w7 tie on accuracy" in why and "inside the noise the simplest policy wins" in why
    assert "1 lost, 0 gained of 180" in why and "most accurate" not in why


def test_a_policy_really_more_accurate_wins_even_if_not_simplest():
    ref = np.ones(180, bool)
    many = np.where(np.arange(180) < 12, False, ref)  # 12 of 180 lost
    scores = {"u8s8": _score(many, ref, 1e-3), "s8s8": _score(many, ref, 1e-3),
              "u8s8-w7": _score(ref.copy(), ref, 1e-4)}
    rank = Ranking("u8s8", "tie", "tie", {})
    pick, why = fallback_choice(_cands({"u8s8": 1.0, "s8s8": 1.0, "u8s8-w7": 1.0}), scores, rank)
    assert pick == "u8s8-w7" and "most accurate, beyond the noise" in why


def test_tied_with_best_is_a_paired_comparison():
    ref = np.ones(100, bool)
    a, b = ref.copy(), ref.copy()
    b[:2] = False
    best, tied = tied_with_best({"a": a, "b": b}, {"a": 0.0, "b": 2.0})
    assert best == "a" and tied == ["a", "b"]  # 2 of 100 apart: inside the noise
    b[:10] = False
    assert tied_with_best({"a": a, "b": b}, {"a": 0.0, "b": 10.0})[1] == ["a"]


# ---- on the real pipeline -----------------------------------------------------------------------
def test_one_flipped_image_of_72_does_not_reject_the_policy_or_keep_layers_in_float(tmp_path):
    """The trained digits model, 72 selection images, mse ranges: u8s8-w7 loses one image (1.39 points).
    Before: rejected, and mixed precision kept layers in FP32 to win that image back."""
    from edgerep.quant.calibrate import ArrayDataset
    from edgerep.quant.pipeline import CalibrationOptions, QuantizeOptions, TargetOptions, quantize_model
    from test_quant_helpers import dataset, digits_splits, export_folded, reference_fn, trained_digits

    model = trained_digits()
    fp32 = export_folded(model, tmp_path / "m.onnx")
    x, y = digits_splits()["test"]
    sel = ArrayDataset(x[:72], y[:72], name="sel72")
    opts = QuantizeOptions(TargetOptions(("cpu",), cpu_policies=("u8s8-w7",)),
                           CalibrationOptions("mse", cache_dir=tmp_path / "cache", equalize=False, bias_correction=False))
    res = quantize_model(fp32, dataset("calib"), sel, tmp_path / "out", opts, reference=reference_fn(model))
    (c,) = res.candidates
    if c.verdict["counts"]["lost"] == 0:
        pytest.skip("this host's kernels did not flip the image (nothing to decide)")
    assert c.verdict["counts"] == {"n": 72, "lost": 1, "gained": 0} and c.drop == pytest.approx(100 / 72, abs=1e-3)
    assert c.accepted and "1 of 72 flipped to wrong, 0 to right" in c.reason
    assert res.excluded_nodes == [] and res.cpu_policy.name == "u8s8-w7"
    assert "1.39 points" in res.reference["resolution_note"]


def test_two_policies_faster_than_the_simplest_are_ranked_against_each_other_not_on_raw_medians():
    from edgerep.bench.ranking import rank_times

    rng = np.random.default_rng(0)

    def rounds(level: float) -> list[list[float]]:
        return [list(level * (1 + 0.02 * rng.standard_normal(5))) for _ in range(8)]

    base = rounds(1.0)
    r = rank_times({"u8s8": base, "s8s8": rounds(0.80), "u8s8-w7": rounds(0.79)}, ["u8s8", "s8s8", "u8s8-w7"])
    assert r.latency_ms["u8s8-w7"] < r.latency_ms["s8s8"]  # w7's raw median is lower ...
    assert r.chosen == "s8s8" and "within the noise, so the simpler s8s8 stays" in r.reason  # ... inside the noise
    r = rank_times({"u8s8": base, "s8s8": rounds(0.80), "u8s8-w7": rounds(0.60)}, ["u8s8", "s8s8", "u8s8-w7"])
    assert r.chosen == "u8s8-w7" and "u8s8-w7 is faster than s8s8 beyond the noise" in r.reason


def test_auto_range_method_is_never_one_shown_less_accurate_even_with_the_lowest_logit_error():
    """`auto` picks by accuracy first (paired counts on the selection set), logit error only among the
    methods not shown less accurate: a method that flips 12 of 180 images loses to one that flips none,
    however small its logit error."""
    import numpy as np

    from edgerep.quant.mixed import Score
    from edgerep.quant.paired import Paired
    from edgerep.quant.pipeline import choose_auto_method

    ref = np.ones(180, bool)
    bad = ref.copy()
    bad[:12] = False
    scores = {
        "mse": Score(drop=6.67, error=1e-5, paired=Paired.of(ref, bad), correct=bad),
        "percentile": Score(drop=0.0, error=4e-4, paired=Paired.of(ref, ref), correct=ref),
        "minmax": Score(drop=0.0, error=5e-4, paired=Paired.of(ref, ref), correct=ref),
    }
    chosen, not_worse = choose_auto_method(scores)
    assert chosen == "percentile"
    assert "mse" not in not_worse and set(not_worse) == {"percentile", "minmax"}
    # inside the noise (one image), the continuous logit error decides
    one = ref.copy()
    one[0] = False
    scores["mse"] = Score(drop=0.56, error=1e-5, paired=Paired.of(ref, one), correct=one)
    assert choose_auto_method(scores)[0] == "mse"
