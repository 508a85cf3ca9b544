"""The quant-hostile RepVGG is flagged at the right layers with the identity-BN branch named;
the same network in QARepVGG form passes."""
from __future__ import annotations

import pytest
import torch

from edgerep.quant.check import check_model
from edgerep.quant.hostile import build_hostile_model, synthetic_batches


def _check(kind: str):
    h = build_hostile_model(kind)
    calib = synthetic_batches(h.input_shape, n_batches=2, batch_size=16, seed=7)
    evals = synthetic_batches(h.input_shape, n_batches=1, batch_size=8, seed=8)
    report = check_model(h.model, example_input=calib[0][:2], calib_batches=calib, eval_batches=evals)
    return h, report


@pytest.fixture(scope="module")
def hostile():
    return _check("repvgg")


@pytest.fixture(scope="module")
def control():
    return _check("qarepvgg")


def test_mechanism_is_measured_not_written(hostile):
    h, _ = hostile
    mods = dict(h.model.named_modules())
    assert h.expected_layers == ["stage2.1", "stage3.2"]
    for producer, consumer in zip(h.collapsed, h.expected_layers):
        var = mods[consumer].identity.running_var
        collapsed = torch.tensor(h.collapsed[producer])
        others = torch.ones_like(var, dtype=torch.bool)
        others[collapsed] = False
        # the collapse happened in the producer's gammas; the consumer's statistics were re-estimated on data
        assert var[collapsed].max() < 1e-3 < var[others].min()


def test_check_flags_the_consumer_layers_and_names_the_identity_bn(hostile):
    h, report = hostile
    assert not report.passed
    bad = [r.name for r in report.layers if r.verdict == "bad"]
    assert set(h.expected_layers) <= set(bad)
    for name in h.expected_layers:
        r = report.layer(name)
        producer = list(h.collapsed)[h.expected_layers.index(name)]
        attr = r.attribution
        assert attr.dominant_branch == "identity" and attr.branches["identity"] == "identity-BN"
        assert {c.channel for c in attr.channels} == set(h.collapsed[producer])
        assert all("identity-BN gamma/sigma" in c.sentence for c in attr.channels)
        kinds = {a.kind for a in r.advice}
        assert "retrain_qarepvgg" in kinds
    # a RepVGG block whose input channels did not collapse is not blamed on its identity branch
    assert report.layer("stage3.1").verdict != "bad"
    assert report.layer("stage3.1").attribution.outlier_channels == 0
    assert any("QARepVGG" in line for line in report.summary["top_advice"])


def test_same_network_in_qarepvgg_form_passes(control):
    h, report = control
    assert report.passed, [(r.name, r.reasons) for r in report.layers if r.verdict == "bad"]
    for name in h.expected_layers:
        r = report.layer(name)
        assert r.verdict != "bad"
        assert r.attribution.outlier_channels == 0
        assert r.weight.channel_spread < 3
    assert not any(a.kind == "retrain_qarepvgg" for r in report.layers for a in r.advice)


def test_make_hostile_picks_producers_that_feed_identity_blocks():
    from edgerep.quant.hostile import hostile_arch, make_hostile

    torch.manual_seed(1)
    model = hostile_arch("repvgg", widths=(8, 8, 16, 16, 16), depths=(1, 3, 3, 1))
    h = make_hostile(model, input_shape=(3, 16, 16), n_blocks=2, n_channels=2,
                     batches=synthetic_batches((3, 16, 16), n_batches=2, batch_size=8))
    assert len(h.collapsed) == 2 and len(h.expected_layers) == 2
    mods = dict(model.named_modules())
    for producer, consumer in zip(h.collapsed, h.expected_layers):
        assert mods[consumer].identity is not None
        assert mods[consumer].identity.running_var[h.collapsed[producer]].max() < 1e-3
    assert not model.training
