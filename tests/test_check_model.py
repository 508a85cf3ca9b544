"""``check_model`` on the trained digits demo: its per-layer SQNR numbers against an independent
computation (edgerep's own fold_model, numpy fake-quant), and the report's contract."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgerep.quant.check import check_model
from edgerep.quant.sensitivity import Reference, as_batches, layer_sensitivity, reference_outputs
from edgerep.quant.attribution import fold_for_check

CKPT = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"
N_CALIB, N_EVAL = 48, 16


def np_q(x: np.ndarray, amax: float) -> np.ndarray:
    s = amax / 127.0 if amax > 0 else 1.0
    return np.clip(np.round(x / s), -127, 127) * s


def np_sqnr(ref: np.ndarray, q: np.ndarray) -> float:
    ref, q = ref.astype(np.float64), q.astype(np.float64)
    return 10 * math.log10((ref ** 2).sum() / ((ref - q) ** 2).sum())


@pytest.fixture(scope="module")
def demo():
    from edgerep.checkpoint import load_checkpoint
    from edgerep.data import open_dataset

    ck = load_checkpoint(CKPT)
    calib = list(open_dataset("digits", split="calib", meta=ck.meta).batches(16, N_CALIB))
    evals = list(open_dataset("digits", split="test", meta=ck.meta).batches(16, N_EVAL))
    before = copy.deepcopy(ck.model.state_dict())
    report = check_model(ck.model, example_input=ck.example_input(2), calib_batches=calib, eval_batches=evals)
    return ck, calib, evals, report, before


def test_report_sqnr_matches_an_independent_computation(demo):
    import edgerep

    ck, calib, evals, report, _ = demo
    folded = edgerep.fold_model(ck.model, generic=False)  # the project's folder, not check's own
    layers = [(n, m) for n, m in folded.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == len(report.layers)
    inputs: dict[str, list[np.ndarray]] = {n: [] for n, _ in layers}
    hooks = [m.register_forward_pre_hook(lambda _m, i, n=n: inputs[n].append(i[0].detach().numpy().copy()))
             for n, m in layers]
    with torch.no_grad():
        for x, _ in calib:
            folded(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    for (name, mod), r in zip(layers, report.layers):
        w = mod.weight.detach().numpy().astype(np.float64)
        assert abs(r.weight.sqnr_per_tensor_db - np_sqnr(w, np_q(w, np.abs(w).max()))) < 0.1, r.name
        rows = w.reshape(w.shape[0], -1)
        qc = np.stack([np_q(row, np.abs(row).max()) for row in rows])
        assert abs(r.weight.sqnr_per_channel_db - np_sqnr(rows, qc)) < 0.1, r.name
        x = np.concatenate([a.reshape(-1) for a in inputs[name]])
        amax = float(np.abs(x).max())
        assert math.isclose(r.activation.amax, amax, rel_tol=1e-6)
        assert abs(r.activation.sqnr_minmax_db - np_sqnr(x, np_q(x, amax))) < 0.1, r.name
        ax = np.abs(x).astype(np.float64)  # float64 reference: float32 interpolation differs by an ulp or so
        for q, v in r.activation.abs_percentiles.items():  # small layers: every value is used, so exact
            assert math.isclose(v, float(np.percentile(ax, float(q))), rel_tol=1e-4, abs_tol=1e-6), (name, q)
        p = float(np.percentile(np.abs(x), 99.99))
        assert abs(r.activation.sqnr_percentile_db - np_sqnr(x, np_q(x, p))) < 0.1, r.name

    # sensitivity, plain: only this layer's weight (per-tensor) and input (min-max) in INT8
    xs = torch.cat([torch.from_numpy(x) for x, _ in evals])
    with torch.no_grad():
        ref = folded(xs).numpy()
    for (name, mod), r in zip(layers, report.layers):
        m2 = copy.deepcopy(folded)
        sub = dict(m2.named_modules())[name]
        w = sub.weight.detach().numpy().astype(np.float64)
        with torch.no_grad():
            sub.weight.copy_(torch.from_numpy(np_q(w, np.abs(w).max())))
        amax = r.activation.amax
        sub.register_forward_pre_hook(lambda _m, i, a=amax: (torch.from_numpy(np_q(i[0].numpy(), a)).float(),))
        with torch.no_grad():
            got = m2(xs).numpy()
        assert abs(r.sensitivity.plain.sqnr_db - np_sqnr(ref, got)) < 0.1, name


def test_report_contract_and_model_untouched(demo):
    ck, calib, evals, report, before = demo
    after = ck.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not ck.model.training
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["schema"] == "edgerep.check/2"
    assert [layer["name"] for layer in d["layers"]] == [r.name for r in report.layers]
    assert d["layers"][0]["name"] == "stage0" and d["layers"][-1]["name"] == "linear"
    for layer in d["layers"]:
        assert layer["verdict"] in ("ok", "warn", "bad")
        assert layer["advice"] and layer["metrics"]["weight"]["sqnr_per_tensor_db"] is not None
    s = d["summary"]
    assert sum(s["counts"].values()) == len(report.layers)
    assert s["worst_layer"] in [r.name for r in report.layers]
    assert d["data"] == {"calib_images": N_CALIB, "eval_images": N_EVAL, "eval_source": "eval", "labels": True}
    # fp32 top-1 is the train-time model's accuracy on exactly the eval images
    with torch.no_grad():
        hits = sum(int((ck.model(torch.from_numpy(x)).argmax(1).numpy() == y).sum()) for x, y in evals)
    assert math.isclose(d["fp32"]["top1"], hits / N_EVAL)
    assert d["fp32"]["top1_agreement"] == 1.0 and d["fp32"]["sqnr_db"] is None  # compared with itself: exact
    # ... and INT8-friendly: RepVGG's BN-scaled identity still costs some layers a few dB, but none is bad
    assert report.passed


def test_replaying_earlier_layers_changes_nothing():
    """Sensitivity replays the fp32 output of layers that run before the quantized one; an in-place
    residual add after a conv must not corrupt the replayed tensors."""

    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 6, 3, padding=1)
            self.b = nn.Conv2d(6, 6, 3, padding=1)
            self.c = nn.Conv2d(6, 6, 1)
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            y = self.a(x)
            z = self.b(torch.relu(y))
            z += y  # in place, on b's output
            z = self.c(z)
            z.relu_()
            return self.fc(z.mean((2, 3)))

    torch.manual_seed(0)
    model = Res().eval()
    folded, layers = fold_for_check(model)
    batches = as_batches([torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)])
    ref = reference_outputs(folded, batches, layers)
    assert ref.cache is not None and ref.order == ["a", "b", "c", "fc"]
    fast = layer_sensitivity(folded, layers, batches, ref=ref)
    slow = layer_sensitivity(folded, layers, batches, ref=Reference(ref.outputs, ref.order, None, ref.fidelity))
    for name in ref.order:
        assert math.isclose(fast[name].plain.sqnr_db, slow[name].plain.sqnr_db, rel_tol=1e-9), name
        assert math.isclose(fast[name].fixed.sqnr_db, slow[name].fixed.sqnr_db, rel_tol=1e-9), name
    with torch.no_grad():  # and the model still computes what it did
        x = batches[0][0]
        assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_kept_inputs_and_a_second_pass_give_the_same_numbers():
    from edgerep.quant.hostile import build_hostile_model, synthetic_batches
    from edgerep.quant.sensitivity import activation_stats

    h = build_hostile_model("repvgg", widths=(8, 8, 16, 16, 16), depths=(1, 2, 2, 1))
    folded, layers = fold_for_check(h.model)
    batches = as_batches(synthetic_batches(h.input_shape, n_batches=2, batch_size=8, seed=1))
    kept = activation_stats(folded, layers, batches, out_images=4)
    rerun = activation_stats(folded, layers, batches, out_images=4, cache_bytes=0)
    assert kept.keys() == rerun.keys() and len(kept) == len(layers)
    _assert_same_stats(kept, rerun)


def _assert_same_stats(a_stats: dict, b_stats: dict) -> None:
    """Every layer's activation statistics equal (floats within 1e-9 relative)."""
    assert a_stats.keys() == b_stats.keys()
    for name in a_stats:
        a, b = a_stats[name].to_dict(), b_stats[name].to_dict()
        for k in a:
            if isinstance(a[k], float):
                assert math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12), (name, k)
            else:
                assert a[k] == b[k], (name, k)


def _hostile_with_kept_spy(monkeypatch, batch_size: int, seed: int):
    """The small hostile RepVGG folded for the check, 4 synthetic batches, and every ``KeptInputs`` made from
    here on (appended to the list returned)."""
    import edgerep.quant.sensitivity as sens
    from edgerep.quant.hostile import build_hostile_model, synthetic_batches

    h = build_hostile_model("repvgg", widths=(8, 8, 16, 16, 16), depths=(1, 2, 2, 1))
    folded, layers = fold_for_check(h.model)
    batches = as_batches(synthetic_batches(h.input_shape, n_batches=4, batch_size=batch_size, seed=seed))
    made = []

    class Spy(sens.KeptInputs):
        def __init__(self, *a):
            super().__init__(*a)
            made.append(self)

    monkeypatch.setattr(sens, "KeptInputs", Spy)
    return sens, folded, layers, batches, made


def test_inputs_that_will_not_fit_are_dropped_during_the_first_batch(monkeypatch):
    """Whether the kept inputs fit the budget is known from the first batch: one byte short of fitting, the
    check holds no more than part of that batch (not the budget, as it did before dropping), and its numbers
    are those of keeping every input."""
    sens, folded, layers, batches, made = _hostile_with_kept_spy(monkeypatch, batch_size=8, seed=3)
    activation_stats = sens.activation_stats
    every = activation_stats(folded, layers, batches, out_images=4, cache_bytes=1 << 40)
    total = made[-1].peak
    assert made[-1].on and total > 0
    short = activation_stats(folded, layers, batches, out_images=4, cache_bytes=total - 1)
    assert not made[-1].on and 0 < made[-1].peak < total / 4  # 4 batches: part of the first one
    fits = activation_stats(folded, layers, batches, out_images=4, cache_bytes=total)
    assert made[-1].on and made[-1].peak == total
    for other in (short, fits):
        _assert_same_stats(every, other)


def test_replay_outputs_that_will_not_fit_are_dropped_during_the_first_batch(monkeypatch):
    """The sensitivity reference keeps every replay unit's output only when all fit PREFIX_CACHE_BYTES, and knows
    it during the first batch: one byte short, it holds part of that batch, not the budget; the sensitivities
    are those of the kept outputs either way."""
    sens, folded, layers, batches, made = _hostile_with_kept_spy(monkeypatch, batch_size=4, seed=6)
    full = sens.reference_outputs(folded, batches, layers)
    total = made[-1].peak
    assert full.cache is not None and total > 0 and all(len(v) == 4 for v in full.cache.values())
    monkeypatch.setattr(sens, "PREFIX_CACHE_BYTES", total - 1)
    short = sens.reference_outputs(folded, batches, layers)
    assert short.cache is None and 0 < made[-1].peak < total / 4 and short.order == full.order
    act = sens.activation_stats(folded, layers, batches)
    a = sens.layer_sensitivity(folded, layers, batches, act, full)
    b = sens.layer_sensitivity(folded, layers, batches, act, short)
    assert a.keys() == b.keys() and a
    for name in a:  # replayed from the kept outputs or recomputed: the same numbers (as the fast/slow test above)
        assert math.isclose(a[name].plain.sqnr_db, b[name].plain.sqnr_db, rel_tol=1e-9), name


def test_layer_output_noise_is_measured_in_the_forward_pass(monkeypatch):
    """The INT8-weight output noise of each kept image is measured inside the forward pass that produced it: no
    layer's inputs and outputs wait for the pass to end (8 images of every layer: 115 MB at 224, 0.9 GB at 640)."""
    import edgerep.quant.sensitivity as sens
    from edgerep.quant.hostile import build_hostile_model, synthetic_batches

    h = build_hostile_model("repvgg", widths=(8, 8, 16, 16, 16), depths=(1, 2, 2, 1))
    folded, layers = fold_for_check(h.model)
    batches = as_batches(synthetic_batches(h.input_shape, n_batches=3, batch_size=4, seed=4))
    state = {"in_forward": False}
    folded.register_forward_pre_hook(lambda *_: state.update(in_forward=True))
    folded.register_forward_hook(lambda *_: state.update(in_forward=False))
    calls = []
    real = sens._output_noise
    monkeypatch.setattr(sens, "_output_noise", lambda *a: calls.append((state["in_forward"], len(a[2]))) or real(*a))
    stats = sens.activation_stats(folded, layers, batches, out_images=6)
    assert calls and all(inside for inside, _ in calls)
    assert sum(n for _, n in calls) == 6 * len(layers)  # 6 images per layer: the first batch and 2 of the second
    assert all(s.out_sqnr_w_per_tensor_db is not None for s in stats.values())


def test_replay_units_skip_the_activation_and_agree_with_full_runs():
    from edgerep.quant.hostile import build_hostile_model, synthetic_batches
    from edgerep.quant.sensitivity import replay_units

    h = build_hostile_model("repvgg", widths=(8, 8, 16, 16, 16), depths=(1, 2, 2, 1))
    folded, layers = fold_for_check(h.model)
    units = replay_units(folded, layers)
    mods = dict(folded.named_modules())
    assert units["stage2.1"] is mods["stage2.1"]  # the folded block (conv + ReLU), not just its conv
    assert units["linear"] is mods["linear"]
    batches = as_batches(synthetic_batches(h.input_shape, n_batches=2, batch_size=4, seed=2))
    ref = reference_outputs(folded, batches, layers)
    fast = layer_sensitivity(folded, layers, batches, ref=ref)
    slow = layer_sensitivity(folded, layers, batches, ref=Reference(ref.outputs, ref.order, None, ref.fidelity))
    for name in ref.order:
        assert math.isclose(fast[name].plain.sqnr_db, slow[name].plain.sqnr_db, rel_tol=1e-9), name


def test_html_page_with_data_and_sensitivity(demo, tmp_path):
    from edgerep.report.check_html import write_check_html

    _, _, _, report, _ = demo
    page = write_check_html(report, tmp_path / "page")
    html = page.read_text()
    assert page.name == "check.html" and "PASS" in html and "fp32 top-1" in html
    for r in report.layers:
        assert f"<td>{r.name}</td>" in html
    assert (tmp_path / "page" / "check_sqnr.png").stat().st_size > 2000
    assert len(list((tmp_path / "page").glob("check_weights_*.png"))) == 3
    # rewriting replaces the page and its plots, leaving no stale files or temporary folders
    write_check_html(report, tmp_path / "page")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page"]


def test_data_that_does_not_fit_the_model_is_a_one_line_data_error():
    from edgerep.errors import DataError

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()
    with pytest.raises(DataError, match=r"example_input of shape \(1, 1, 8, 8\)"):
        check_model(model, example_input=torch.randn(1, 1, 8, 8))
    with pytest.raises(DataError, match=r"calibration batch of shape \(2, 5, 8, 8\)"):
        check_model(model, example_input=torch.randn(1, 3, 8, 8), calib_batches=[torch.randn(2, 5, 8, 8)])


@pytest.mark.parametrize("channels", [16, 1280])
def test_weights_plot_marks_the_outlier_channel_and_draws_wide_layers_as_lines(channels):
    """A 1,280-channel layer's per-channel plot is line collections (a bar per channel took 0.9 s a plot), the
    outlier channel red and drawn last; a narrow layer keeps its bars; the histogram is one patch."""
    from types import SimpleNamespace as NS

    from matplotlib.colors import to_hex

    from edgerep.report.check_html import BAR_CHANNELS, weights_figure

    absmax = [0.5] * channels
    absmax[3], absmax[5] = 4.0, 0.0  # an outlier and a dead channel (log axis)
    w = NS(histogram={"edges": [-1.0, 0.0, 1.0], "counts": [5, 0]}, kurtosis=3.0, channel_absmax=absmax,
           channel_spread=8.0)
    fig = weights_figure(NS(name="l", weight=w, attribution=NS(outlier_channels=[3], channels=[NS(channel=3)])))
    hist_ax, ch_ax = fig.axes
    assert len(hist_ax.patches) == 1
    if channels <= BAR_CHANNELS:
        assert len(ch_ax.patches) == channels and to_hex(ch_ax.patches[3].get_facecolor()) == "#c62828"
        return
    assert not ch_ax.patches
    grey, red = ch_ax.collections
    assert len(grey.get_segments()) == channels - 1 and to_hex(red.get_colors()[0]) == "#c62828"
    (x0, y0), (x1, y1) = red.get_segments()[0]
    assert x0 == x1 == 3 and y1 == 4.0
    assert min(seg[1][1] for seg in grey.get_segments()) > 0  # the dead channel sits at the floor, not at 0
