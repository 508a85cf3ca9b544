"""``--train-data``: the set the recovery ladder's learning steps (AdaRound, QAT) learn on instead of the
calibration set; read from its train split (else all of it), never from a test split, and refused when it shares
a sample with the selection or test set (it may share with calibration); recorded in splits.json and the report."""
from __future__ import annotations

import numpy as np
import pytest

from edgerep.errors import DataError


def _npz(path, n=200, seed=0):
    """Random 8 x 8 uint8 images with 5 classes (as tests/test_splits.py makes them)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, size=(n, 8, 8)).astype(np.uint8)
    np.savez(path, x=x, y=np.arange(n) % 5)
    return x


def _meta():
    from edgerep.checkpoint import CheckpointMeta

    return CheckpointMeta(arch="x", input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,), dataset=None)


def test_train_data_is_a_fourth_role_disjoint_from_selection_and_test(tmp_path):
    from edgerep.data.splits import resolve_splits

    sp = resolve_splits(data="digits", train="digits")
    assert sp.train is not None and sp.sources["train"].split == "train"
    assert sp.roles() == ("calibration", "selection", "test", "train")
    assert set(sp.ids()["train"]).isdisjoint(sp.ids()["test"]) and sp.to_report()["train"]["count"] == len(sp.train)
    assert resolve_splits(data="digits").train is None and "train" not in resolve_splits(data="digits").to_report()


def test_train_data_sharing_selection_or_test_samples_is_refused_unless_allowed(tmp_path):
    """A train set holding rows of the deploy's data: those that landed in selection or test are refused;
    rows shared with calibration only are fine (learning on calibration images is the default)."""
    from edgerep.data.splits import resolve_splits

    x = _npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=x[:100], y=np.arange(100) % 5)  # 100 rows of a.npz again
    with pytest.raises(DataError, match=r"the train set .* and the (selection|test) set .* share \d+ samples"):
        resolve_splits(data=str(tmp_path / "a.npz"), train=str(tmp_path / "b.npz"), meta=_meta())
    sp = resolve_splits(data=str(tmp_path / "a.npz"), train=str(tmp_path / "b.npz"), meta=_meta(), allow_overlap=True)
    shared = sum(v for k, v in sp.overlap.items() if k.startswith("train/"))
    assert shared > 0 and "OPTIMISTIC" in " ".join(sp.notes)
    _npz(tmp_path / "c.npz", seed=1)  # other images: accepted
    assert len(resolve_splits(data=str(tmp_path / "a.npz"), train=str(tmp_path / "c.npz"), meta=_meta()).train) == 200
    assert not any(k.endswith("calibration") for k in sp.overlap)  # sharing calibration images is allowed


def test_train_data_with_a_test_split_is_refused(tmp_path):
    from edgerep.data.splits import resolve_splits

    rng = np.random.default_rng(2)
    np.savez(tmp_path / "t.npz", x_test=rng.integers(0, 255, (20, 8, 8)).astype(np.uint8), y_test=np.arange(20) % 5)
    _npz(tmp_path / "a.npz")
    with pytest.raises(DataError, match="holds a test split"):
        resolve_splits(data=str(tmp_path / "a.npz"), train=str(tmp_path / "t.npz"), meta=_meta())


def test_the_ladder_learns_on_the_train_set_when_given(tmp_path):
    """Same model, budget and steps: learning on the train set gives other learned integers than on the
    calibration set, and the report and progress say which set was used."""
    from edgerep.quant.options import QuantizeOptions, RecoveryOptions, TargetOptions
    from edgerep.quant.pipeline import quantize_model
    from test_quant_helpers import dataset, export_folded, reference_fn
    from test_recover import _dead_digits

    model = _dead_digits()
    fp32 = export_folded(model, tmp_path / "m.onnx")
    opts = QuantizeOptions(TargetOptions(("tensorrt",)), recovery=RecoveryOptions("adaround", iters=30))
    said: list[str] = []
    runs = {name: quantize_model(fp32, dataset("calib"), dataset("test"), tmp_path / name, opts,
                                 reference=reference_fn(model), progress=said.append, train=train)
            for name, train in (("calib", None), ("train", dataset("train")))}
    assert runs["calib"].recovery.learned_on == "calibration" and runs["train"].recovery.to_dict()["learned_on"] == "train"
    assert any("adaround on 256 train samples" in m for m in said), [m for m in said if "adaround on" in m]
    a, b = (runs[k].recovery.learned["tensorrt+adaround"] for k in ("calib", "train"))
    assert any(not np.array_equal(a[n], b[n]) for n in a)


def test_quantize_cli_passes_the_train_set_to_the_ladder(tmp_path):
    import json

    from edgerep.cli import main
    from test_quant_helpers import export_folded
    from test_recover import _dead_digits

    fp32 = export_folded(_dead_digits(), tmp_path / "m.onnx")
    rc = main(["quantize", str(fp32), "--data", "digits", "--mean", "0.3", "--std", "0.4", "--train-data", "digits",
               "--recover", "adaround",
               "--targets", "tensorrt", "--method", "minmax", "-o", str(tmp_path / "q")])
    assert rc == 0
    q = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert q["recovery"]["learned_on"] == "train"


def test_deploy_records_the_train_set_in_splits_json_and_the_report(tmp_path):
    import json
    from pathlib import Path

    from edgerep.cli import main

    demo = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"
    out = tmp_path / "b"
    rc = main(["deploy", str(demo), "--out", str(out), "--train-data", "digits", "--recover", "auto", "--no-check",
               "--bench-seconds", "0.2", "--calib-samples", "64", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    ids = json.loads((out / "splits.json").read_text())
    rep = json.loads((out / "report.json").read_text())
    assert ids["train"] and set(ids["train"]).isdisjoint(ids["test"]) and set(ids["train"]).isdisjoint(ids["selection"])
    assert rep["splits"]["train"]["count"] == len(ids["train"])
    assert rep["quantization"]["recovery"]["learned_on"] == "train"


def test_train_data_without_the_ladder_is_said_to_be_unused(tmp_path, capsys):
    from edgerep.cli import main
    from test_quant_helpers import export_folded, trained_digits

    fp32 = export_folded(trained_digits(), tmp_path / "m.onnx")
    rc = main(["quantize", str(fp32), "--data", "digits", "--mean", "0.3", "--std", "0.4", "--train-data", "digits",
               "--targets", "tensorrt", "--method", "minmax", "-o", str(tmp_path / "q")])
    out = capsys.readouterr()
    assert rc == 0 and "with --recover none nothing learns on it" in out.out + out.err
