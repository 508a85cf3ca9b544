"""A wrong set-up cannot pass (issue 20, items 7-10): the baseline is tested against chance on its counts,
wrong preprocessing is seen in the model's own BatchNorm statistics and against an expected top-1, an
input shape is never guessed, and quantize takes deploy's preprocessing flags and leaves nothing behind
when it fails."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgerep.bench.gate import GateThresholds, evaluate_gate
from edgerep.cli import main
from report_dicts import acc, drop
from user_models import digits_01, save_state_dict, small_net, trained_small_net

FAST = ["--calib-samples", "64", "--bench-seconds", "0.1", "--no-check"]
USER = ["--arch", "user_models:small_net", "--input-shape", "1,8,8"]


def _report(correct: int, n: int, classes: int, **baseline) -> dict:
    """A deploy report whose unfolded baseline got ``correct`` of ``n`` right; one engine at no drop."""
    top1 = 100.0 * correct / n
    return {"fold": {"max_rel_error": 1e-7},
            "baseline": {"accuracy": acc(top1, samples=n, classes=classes), **baseline},
            "engines": [{"name": "onnxruntime-cpu", "precision": "int8", "status": "built",
                         "accuracy": acc(top1, samples=n), "drop": drop(0.0)}]}


def _check(result, name: str):
    return next(c for c in result.checks if c.name == name)


# ------------------------------------------------------------------------------------------------
# 7. the baseline against chance: an exact binomial test on its counts, at any class count
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("correct,n,classes", [(72, 72, 2), (40, 60, 3), (30, 72, 10), (12, 12, 2)])
def test_good_classifiers_pass_the_chance_test_at_any_class_count(correct, n, classes):
    """A perfect 0-vs-1 model (2 classes) and a 3-class model at 66.7% used to fail "at most 2x chance"."""
    r = evaluate_gate(_report(correct, n, classes), GateThresholds())
    c = _check(r, "baseline_sanity")
    assert r.passed and c.passed, c.message
    assert f"{correct} of {n}" in c.message and "binomial" in c.message


def test_a_baseline_at_chance_fails_with_its_counts():
    r = evaluate_gate(_report(40, 359, 10), GateThresholds())  # 11.1%: 35.9 expected by chance
    c = _check(r, "baseline_sanity")
    assert not r.passed and not c.passed
    assert "40 of 359" in c.message and "expects 35.9" in c.message and "preprocessing" in c.message
    assert c.value is not None and c.value > 0.1  # the p-value: nowhere near significant


def test_a_majority_class_is_chance_too():
    """90% on a set that is 90% one class is what always answering that class scores: not above chance."""
    rep = _report(90, 100, 2)
    rep["baseline"]["accuracy"]["majority"] = {"class": 0, "count": 90}
    c = _check(evaluate_gate(rep, GateThresholds()), "baseline_sanity")
    assert not c.passed and "always answering class 0: 90 of 100" in c.message


def test_too_few_images_to_tell_says_so():
    c = _check(evaluate_gate(_report(8, 8, 2), GateThresholds()), "baseline_sanity")
    assert not c.passed and "cannot show" in c.message and "at least 10 images" in c.message  # 0.5**10 < 1e-3


def test_exact_binomial_matches_the_definition():
    from math import comb

    from edgerep.bench.binomial import _tail, p_at_least, p_at_most

    for k, n, p in [(3, 10, 0.1), (89, 359, 0.1), (0, 5, 0.5), (351, 359, 0.9)]:
        want = sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert p_at_least(k, n, p) == pytest.approx(want, rel=1e-9)
        assert _tail(range(k, n + 1), n, p) == pytest.approx(want, rel=1e-9)
        assert p_at_most(k, n, p) == pytest.approx(1 - want + comb(n, k) * p ** k * (1 - p) ** (n - k), rel=1e-9)


# ------------------------------------------------------------------------------------------------
# 8. wrong preprocessing: the model's BatchNorm statistics, and the expected top-1
# ------------------------------------------------------------------------------------------------
def test_scale_1_fails_naming_preprocessing_and_the_right_flags_pass(tmp_path):
    """The user's own model (trained on [0, 1] inputs) deployed with --scale 1 (0..255 inputs): its first
    BatchNorm layers see inputs ~130 running std off, so the gate fails (exit 1) naming the layer and the
    preprocessing; with its right flags the same deploy passes."""
    sd = save_state_dict(trained_small_net(), tmp_path / "small.pt")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    bad, good = tmp_path / "bad", tmp_path / "good"
    rc = main(["deploy", str(sd), *USER, "--data", "digits", "--mean", "0", "--std", "1", "--scale", "1",
               "--out", str(bad), *FAST, *cache])
    r = json.loads((bad / "report.json").read_text())
    failed = {c["name"]: c["message"] for c in r["gate"]["checks"] if not c["passed"]}
    assert rc == 1 and {"input_mean_shift", "input_var_ratio"} <= set(failed), failed
    assert "BatchNorm c1" in failed["input_mean_shift"] and "preprocessing" in failed["input_mean_shift"]
    assert "--scale" in failed["input_var_ratio"]
    assert r["input_statistics"]["layers"][0]["mean_shift"] > 10
    rc = main(["deploy", str(sd), *USER, "--data", "digits", "--mean", "0", "--std", "1", "--out", str(good),
               *FAST, *cache])
    r = json.loads((good / "report.json").read_text())
    checks = {c["name"]: c for c in r["gate"]["checks"]}
    assert rc == 0 and r["gate"]["passed"]
    assert checks["input_mean_shift"]["passed"] and checks["input_var_ratio"]["passed"]
    assert all(layer["mean_shift"] < 0.1 and layer["var_ratio"] < 1.2 for layer in r["input_statistics"]["layers"])


@pytest.mark.parametrize("shape,pre,bad", [((1, 8, 8), (0.0, 1.0), False), ((1, 16, 16), (0.0, 1.0), True),
                                           ((1, 8, 8), (0.5, 0.5), True)],
                         ids=["right", "twice the resolution", "[-1, 1] instead of [0, 1]"])
def test_bn_statistics_see_the_resolution_and_the_normalization(shape, pre, bad):
    """Subtler mistakes than a missing /255 still move the first BatchNorm layers' inputs past the limits."""
    from edgerep.bench.input_stats import bn_input_statistics, shift_problems
    from edgerep.data.base import Preprocess
    from edgerep.data.digits import DigitsDataset

    ds = DigitsDataset("calib", Preprocess(shape, (pre[0],), (pre[1],)))
    stats = bn_input_statistics(trained_small_net(), (x for x, _ in ds.batches(32, limit=64)))
    assert [layer["layer"] for layer in stats["layers"]] == ["c1.1", "c1x1.1"] and stats["samples"] == 64
    assert bool(shift_problems(stats)) == bad, stats


def test_untrained_batchnorm_statistics_are_not_compared():
    from edgerep.bench.input_stats import bn_input_statistics

    stats = bn_input_statistics(small_net().eval(), [digits_01("calib")[0][:16].numpy()])
    assert stats["layers"] == [] and "initial statistics" in stats["skipped"]


def test_expected_top1_far_below_fails_with_counts():
    rep = _report(89, 359, 10)  # 24.79%: well above chance, far below what the model really does
    assert evaluate_gate(rep, GateThresholds()).passed  # chance alone cannot see it
    r = evaluate_gate(rep, GateThresholds(expect_top1=97.77))
    c = _check(r, "baseline_expected")
    assert not r.passed and not c.passed
    assert "89 of 359" in c.message and "92.77%" in c.message and "--expect-top1" in c.message
    ok = _check(evaluate_gate(_report(339, 359, 10), GateThresholds(expect_top1=97.77)), "baseline_expected")
    assert ok.passed, ok.message  # 94.43%: within the 5-point margin
    rep["baseline"]["expected"] = {"top1": 99.07, "source": "checkpoint meta.extra.training.test_top1 on digits"}
    c = _check(evaluate_gate(rep, GateThresholds()), "baseline_expected")  # recorded by deploy
    assert not c.passed and "checkpoint meta" in c.message


def test_gate_cli_takes_expect_top1(tmp_path):
    from pathlib import Path

    saved = json.loads((Path(__file__).parent / "data" / "report_v1" / "report.json").read_text())  # a whole report
    saved["baseline"]["accuracy"]["top1"] = 100.0 * 89 / 359  # its baseline got 89 of 359 right
    (tmp_path / "r.json").write_text(json.dumps(saved))
    assert main(["gate", str(tmp_path / "r.json")]) == 0
    assert main(["gate", str(tmp_path / "r.json"), "--expect-top1", "97.77"]) == 1


def test_deploy_records_the_checkpoints_own_accuracy(demo_bundle):
    """The demo checkpoint records test_top1 0.9907 on digits: deploy expects it on digits' test split."""
    r = json.loads((demo_bundle / "report.json").read_text())
    assert r["baseline"]["expected"]["top1"] == pytest.approx(99.07)
    assert "test_top1" in r["baseline"]["expected"]["source"]
    names = {c["name"]: c["passed"] for c in r["gate"]["checks"]}
    assert names["baseline_expected"] and names["input_mean_shift"] and names["input_var_ratio"]


# ------------------------------------------------------------------------------------------------
# 9. no guessed input shape
# ------------------------------------------------------------------------------------------------
def test_pickled_module_without_input_shape_is_refused(tmp_path, capsys):
    torch.save(trained_small_net(), tmp_path / "whole.pt")
    rc = main(["deploy", str(tmp_path / "whole.pt"), "--trust-checkpoint", "--data", "digits", "--mean", "0",
               "--std", "1", "--out", str(tmp_path / "b"), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "--input-shape" in err and "no input shape" in err and not (tmp_path / "b").exists()


def test_a_stated_input_shape_is_named_as_stated(tmp_path, capsys):
    from edgerep.commands.deploy import print_data_summary

    torch.save(trained_small_net(), tmp_path / "whole.pt")
    from edgerep.checkpoint import load_checkpoint, preprocessing_of

    loaded = load_checkpoint(tmp_path / "whole.pt", trust=True, input_shape=(1, 8, 8))
    print_data_summary({"preprocessing": preprocessing_of(loaded.meta)})
    assert "input 1x8x8 (--input-shape)" in capsys.readouterr().out


def test_factory_state_dict_without_input_shape_is_refused(tmp_path, capsys):
    sd = save_state_dict(trained_small_net(), tmp_path / "small.pt")
    rc = main(["fold", str(sd), "--arch", "user_models:small_net", "-o", str(tmp_path / "f.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "--input-shape" in err and not (tmp_path / "f.pt").exists()


def test_pickled_module_with_partial_meta_gets_no_checkpoint_preprocessing(tmp_path, capsys):
    """A meta without mean/std: ImageNet class defaults are not passed off as the checkpoint's."""
    torch.save({"model": trained_small_net(), "meta": {"arch": "small", "input_shape": [1, 8, 8]}},
               tmp_path / "partial.pt")
    from edgerep.checkpoint import load_checkpoint, preprocessing_of

    pre = preprocessing_of(load_checkpoint(tmp_path / "partial.pt", trust=True).meta)
    assert pre["source"] == "default" and pre["input_shape_source"] == "checkpoint"
    rc = main(["deploy", str(tmp_path / "partial.pt"), "--trust-checkpoint", "--data", "digits",
               "--out", str(tmp_path / "b"), *FAST])
    assert rc == 2 and "--mean" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# 10. quantize: deploy's preprocessing flags, nothing guessed, nothing left behind
# ------------------------------------------------------------------------------------------------
def test_quantize_takes_deploys_preprocessing_flags(tmp_path, capsys):
    sd = save_state_dict(trained_small_net(), tmp_path / "small.pt")
    out = tmp_path / "q"
    rc = main(["quantize", str(sd), *USER, "--data", "digits", "-o", str(out), "--targets", "cpu",
               "--calib-samples", "32", "--eval-samples", "64"])
    err = capsys.readouterr().err
    assert rc == 2 and "--mean" in err and not out.exists()  # refused before anything is written
    rc = main(["quantize", str(sd), *USER, "--data", "digits", "--mean", "0", "--std", "1", "-o", str(out),
               "--targets", "cpu", "--calib-samples", "32", "--eval-samples", "64", "--json"])
    q = json.loads(capsys.readouterr().out)
    assert rc == 0 and q["reference"]["top1"] > 90
    assert (out / "model.fp32.onnx").is_file() and (out / "quantize.json").is_file()
    assert q["files"]["cpu"] == str(out / "model.int8.onnx") and not list(tmp_path.glob(".q.edgerep-tmp-*"))


def test_quantize_onnx_with_image_data_needs_stated_preprocessing(tmp_path, capsys):
    from edgerep import fold_model
    from edgerep.quant.export import export_onnx

    onnx_path = tmp_path / "m.onnx"
    export_onnx(fold_model(trained_small_net()), onnx_path, (1, 8, 8))
    out = tmp_path / "q"
    rc = main(["quantize", str(onnx_path), "--data", "digits", "-o", str(out), "--targets", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "--mean" in err and "--std" in err and not out.exists()
    rc = main(["quantize", str(onnx_path), "--data", "digits", "--mean", "0", "--std", "1", "-o", str(out),
               "--targets", "cpu", "--calib-samples", "32", "--eval-samples", "64", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["reference"]["top1"] > 90


def test_a_failed_quantize_leaves_nothing(tmp_path, capsys, monkeypatch):
    """A failure after files were written (here: calibration writes a cache and a QDQ file, then fails) leaves
    no new -o folder, and in an existing one nothing but what was there (no model.fp32.onnx, no QDQ file)."""
    import edgerep.quant.pipeline as qp
    from edgerep.errors import EdgerepError

    def broken(fp32, calib, selection, out_dir, options, **kw):
        cache_dir = options.calibration.cache_dir
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / "calib-mse-0.json").write_text("{}")
        (out_dir / "model.int8.onnx").write_bytes(b"half")
        raise EdgerepError("calibration failed")

    monkeypatch.setattr(qp, "quantize_model", broken)
    sd = save_state_dict(trained_small_net(), tmp_path / "small.pt")
    out = tmp_path / "q"
    argv = ["quantize", str(sd), *USER, "--data", "digits", "--mean", "0", "--std", "1", "-o", str(out)]
    assert main(argv) == 2 and "calibration failed" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "edgerep-tmp" in p.name]
    out.mkdir()
    (out / "quantize.json").write_text("{}")  # an earlier run's result
    assert main(argv) == 2
    assert sorted(p.name for p in out.iterdir() if p.name != "cache") == ["quantize.json"]


def test_quantize_float_npz_needs_no_preprocessing(tmp_path, capsys):
    """Model-ready float tensors are not images: an ONNX file quantizes on them without flags."""
    from edgerep import fold_model
    from edgerep.quant.export import export_onnx

    onnx_path = tmp_path / "m.onnx"
    export_onnx(fold_model(trained_small_net()), onnx_path, (1, 8, 8))
    x, y = digits_01("calib")
    np.savez(tmp_path / "c.npz", x=x.numpy(), y=y.numpy())
    rc = main(["quantize", str(onnx_path), "--data", str(tmp_path / "c.npz"), "-o", str(tmp_path / "q"),
               "--targets", "cpu", "--calib-samples", "32", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["reference"]["top1"] > 85


def test_expect_top1_out_of_range_is_refused_before_work(tmp_path, capsys):
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"
    rc = main(["deploy", str(demo), "--expect-top1", "120", "--out", str(tmp_path / "b")])
    assert rc == 2 and "--expect-top1" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_input_shape_contradicting_an_edgerep_checkpoint_is_refused(tmp_path, capsys):
    """--input-shape 1,8,8 on the 1x16x16 demo was silently ignored; now it is exit 2 naming both."""
    from pathlib import Path

    demo = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"
    rc = main(["fold", str(demo), "--input-shape", "1,8,8", "-o", str(tmp_path / "f.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "--input-shape 1,8,8" in err and "1,16,16" in err
    assert main(["fold", str(demo), "--input-shape", "1,16,16", "-o", str(tmp_path / "f.pt")]) == 0
