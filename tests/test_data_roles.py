"""Data roles under misuse (issue 20, items 1-3): one resolver for every role, however it is named,
refuses calibration or selection on test samples, finds the same image in two containers, drops a
source's duplicates before splitting, and reads a train/test-only source."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgerep.checkpoint import CheckpointMeta
from edgerep.cli import main
from edgerep.data.splits import ROLES, resolve_splits
from edgerep.errors import DataError
from edgerep.pipeline import DeployOptions, resolve_calibration, resolve_data

META = CheckpointMeta(arch="x", input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,), dataset=None)
DEMO = Path(__file__).resolve().parents[1] / "examples" / "checkpoints" / "repvgg_digits.pt"


def _images(n=40, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8), np.arange(n) % classes


def _png_folder(root: Path, x, y, rgb=False):
    from PIL import Image

    for i, (img, c) in enumerate(zip(x, y)):
        d = root / str(c)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([img] * 3, -1) if rgb else img).save(d / f"{i}.png")
    return root


def _content_disjoint(s, arrays: dict[str, np.ndarray]):
    """No two roles share an image, by the bytes of the rows their ids name (``file#key/row``)."""
    def content(i):
        key, row = i.split("#")[1].rsplit("/", 1) if "/" in i.split("#")[1] else ("x", i.split("#")[1])
        return arrays[key][int(row)].tobytes()

    d = {r: {content(i) for i in s.ids()[r]} for r in ROLES}
    return not (d["calibration"] & d["selection"] or d["calibration"] & d["test"] or d["selection"] & d["test"])


# ---- 1. calibration or selection on the test split -----------------------------------------------------------

def _recipe(tmp_path, split):
    p = tmp_path / f"{split}.toml"
    p.write_text(f"[calibration]\ndata = 'digits'\nsplit = '{split}'\nsamples = 64\n")
    return p


def test_a_recipe_that_calibrates_on_the_test_split_is_refused_naming_the_recipe(tmp_path):
    from edgerep.checkpoint import load_checkpoint

    meta = load_checkpoint(DEMO).meta
    opts = DeployOptions(checkpoint=DEMO, calib_recipe=str(_recipe(tmp_path, "test")))
    with pytest.raises(DataError, match="calibration set would read the test split of digits") as e:
        resolve_data(opts, meta, resolve_calibration(opts, meta))
    assert "test.toml" in e.value.one_line()
    # the same recipe with another test set: no shared split, no shared sample, still test samples
    np.savez(tmp_path / "other.npz", x=_images(30)[0], y=_images(30)[1])
    opts = DeployOptions(checkpoint=DEMO, calib_recipe=str(_recipe(tmp_path, "test")),
                         eval_data=str(tmp_path / "other.npz"))
    with pytest.raises(DataError, match="calibration set would read the test split of digits"):
        resolve_data(opts, meta, resolve_calibration(opts, meta))
    # allowed: the overlap is counted and the report says the figures are optimistic
    opts = DeployOptions(checkpoint=DEMO, calib_recipe=str(_recipe(tmp_path, "test")), allow_overlap=True)
    s = resolve_data(opts, meta, resolve_calibration(opts, meta))
    assert s.overlap == {"calibration/test": 359} and "OPTIMISTIC" in s.to_report()["note"]
    # train is a fine calibration split; a recipe on the selection split is two roles on one split
    opts = DeployOptions(checkpoint=DEMO, calib_recipe=str(_recipe(tmp_path, "train")))
    assert resolve_data(opts, meta, resolve_calibration(opts, meta)).sources["calibration"].split == "train"
    opts = DeployOptions(checkpoint=DEMO, calib_recipe=str(_recipe(tmp_path, "val")))
    with pytest.raises(DataError, match="calibration and the selection set both read split 'val' of digits"):
        resolve_data(opts, meta, resolve_calibration(opts, meta))


def test_deploy_with_a_test_split_recipe_exits_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "b"
    rc = main(["deploy", str(DEMO), "--calib-recipe", str(_recipe(tmp_path, "test")), "--out", str(out),
               "--bench-seconds", "0.1", "--no-check"])
    err = capsys.readouterr().err
    assert rc == 2 and "test split of digits" in err and "--allow-overlap" in err and not out.exists()


@pytest.mark.parametrize("flag", ["calib", "val"])
def test_a_set_named_for_calibration_or_selection_never_reads_a_test_split(tmp_path, flag):
    x, y = _images(60)
    np.savez(tmp_path / "only_test.npz", x_test=x, y_test=y)  # a file whose only samples are test samples
    np.savez(tmp_path / "other.npz", x=_images(30, seed=3)[0], y=_images(30, seed=3)[1])
    role = {"calib": "calibration", "val": "selection"}[flag]
    with pytest.raises(DataError, match=f"the {role} set would read the test split of .*only_test.npz .--{flag}-data"):
        resolve_splits(data=str(tmp_path / "other.npz"), **{flag: str(tmp_path / "only_test.npz")}, meta=META)


# ---- 2. the same image in two containers, or twice in one source -------------------------------------------

@pytest.mark.parametrize("rgb", [False, True], ids=["grey png", "rgb png"])
def test_the_same_images_as_png_folders_and_as_a_uint8_npz_are_one_sample(tmp_path, rgb):
    x, y = _images(40)
    folder = _png_folder(tmp_path / "pngs", x, y, rgb=rgb)
    np.savez(tmp_path / "same.npz", x=x, y=y)
    np.savez(tmp_path / "val.npz", x=_images(20, seed=7)[0], y=_images(20, seed=7)[1])
    kw = dict(data=None, calib=str(folder), val=str(tmp_path / "val.npz"), test=str(tmp_path / "same.npz"), meta=META)
    with pytest.raises(DataError, match="share 40 samples \\(same decoded pixels\\)"):
        resolve_splits(**kw)
    assert resolve_splits(**kw, allow_overlap=True).overlap == {"calibration/test": 40}
    np.savez(tmp_path / "half.npz", x=x[:10], y=y[:10])  # part of it, as NHWC
    with pytest.raises(DataError, match="share 10 samples"):
        resolve_splits(**{**kw, "test": str(tmp_path / "half.npz")})


def test_an_unsplit_source_storing_every_image_twice_is_deduplicated_before_splitting(tmp_path):
    x, y = _images(100, classes=5)
    order = np.random.default_rng(1).permutation(200)
    np.savez(tmp_path / "twice.npz", x=np.concatenate([x, x])[order], y=np.concatenate([y, y])[order])
    said = []
    s = resolve_splits(data=str(tmp_path / "twice.npz"), meta=META, say=said.append)
    assert sum(len(s.sets[r]) for r in ROLES) == 100 and _content_disjoint(s, {"x": np.concatenate([x, x])[order]})
    assert any("dropped 100 duplicate samples" in m for m in said)
    assert s.to_report()["duplicates_dropped"] == 100 and "dropped 100 duplicate" in s.to_report()["note"]
    s.write(tmp_path / "splits.json")
    doc = json.loads((tmp_path / "splits.json").read_text())
    assert len(doc["duplicates_dropped"]) == 100
    kept = set(doc["calibration"] + doc["selection"] + doc["test"])
    assert all(k in kept and d not in kept for d, k in doc["duplicates_dropped"].items())


def test_duplicates_across_a_sources_own_splits_are_refused(tmp_path):
    x, y = _images(60)
    np.savez(tmp_path / "leaky.npz", x_calib=x[:20], y_calib=y[:20], x_val=x[20:40], y_val=y[20:40],
             x_test=np.concatenate([x[40:], x[:5]]), y_test=np.concatenate([y[40:], y[:5]]))
    with pytest.raises(DataError, match="calibration set .* and the test set .* share 5 samples"):
        resolve_splits(data=str(tmp_path / "leaky.npz"), meta=META)


# ---- 3. a source with only train and test ----------------------------------------------------------------------

def _check_train_test(s, n_train, n_test, prefix_train, prefix_test):
    ids = s.ids()
    assert len(ids["test"]) == n_test and all(i.startswith(prefix_test) for i in ids["test"])
    assert len(ids["calibration"]) + len(ids["selection"]) == n_train
    assert all(i.startswith(prefix_train) for i in ids["calibration"] + ids["selection"])
    assert s.sources["test"].how == "split test"
    for r in ("calibration", "selection"):  # carved stratified: every class in proportion
        counts = np.bincount(s.sets[r].labels(), minlength=4)
        assert counts.tolist() == [len(ids[r]) // 4] * 4, (r, counts)
        assert s.sources[r].how.startswith("split train, cut 2-way")


def test_an_npz_with_only_train_and_test_feeds_calibration_and_selection_from_train(tmp_path):
    x, y = _images(80)
    xt, yt = _images(40, seed=2)
    np.savez(tmp_path / "tt.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    said = []
    s = resolve_splits(data=str(tmp_path / "tt.npz"), meta=META, say=said.append)
    _check_train_test(s, 80, 40, "tt.npz#x_train/", "tt.npz#x_test/")
    assert _content_disjoint(s, {"x_train": x, "x_test": xt})
    assert "cut from its train split" in said[0]


def test_train_and_test_folders_feed_calibration_and_selection_from_train(tmp_path):
    x, y = _images(16)
    xt, yt = _images(8, seed=2)
    _png_folder(tmp_path / "d" / "train", x, y)
    _png_folder(tmp_path / "d" / "test", xt, yt)
    s = resolve_splits(data=str(tmp_path / "d"), meta=META)
    _check_train_test(s, 16, 8, "train/", "test/")


def test_quantize_reads_a_train_test_npz(tmp_path):
    """The command line that crashed (KeyError 'selection', exit 3) now calibrates from train."""
    x, y = _images(48)
    xt, yt = _images(24, seed=2)
    np.savez(tmp_path / "tt.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    ck = tmp_path / "m.pt"
    from edgerep.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(DEMO)
    save_checkpoint(ck, loaded.model, loaded.meta.__class__.from_dict({**loaded.meta.to_dict(), "dataset": None}))
    rc = main(["quantize", str(ck), "--data", str(tmp_path / "tt.npz"), "-o", str(tmp_path / "q"),
               "--targets", "cpu", "--calib-samples", "16", "--method", "minmax", "--max-drop", "-1", "--json"])
    assert rc in (0, 1)
    q = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert q["reference"]["role"] == "selection" and q["reference"]["samples"] == 24


# ---- 4. --calib-method auto is chosen on the selection set ---------------------------------------------------

def test_auto_range_method_is_judged_on_the_selection_set_not_the_calibration_data(tmp_path):
    """The errors auto compares are the ones recomputed on the selection inputs, not on calibration's."""
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.quant.calibrate import ArrayDataset, calibrate_many
    from edgerep.quant.pipeline import AUTO_METHODS, CalibrationOptions, QuantizeOptions, TargetOptions, quantize_model
    from edgerep.quant.policy import TENSORRT
    from edgerep.quant.qdq import write_qdq
    from test_quant_helpers import digits_splits, export_folded, trained_digits

    fp32 = export_folded(trained_digits(), tmp_path / "m.onnx")
    calib = ArrayDataset(*digits_splits()["calib"])
    x_sel = digits_splits()["test"][0][:96] * 2.5  # inputs the calibration data never showed: ranges matter
    select = ArrayDataset(x_sel, digits_splits()["test"][1][:96])
    res = quantize_model(fp32, calib, select, tmp_path / "out", QuantizeOptions(
        TargetOptions(("tensorrt",)),
        CalibrationOptions("auto", samples=64, cache_dir=tmp_path / "cache", equalize=False, bias_correction=False)))
    cals = calibrate_many(fp32, calib, AUTO_METHODS, limit=64, cache_dir=tmp_path / "cache")  # the cached ranges

    def errors(x):
        ref = OrtEngine(fp32).run(x).astype(np.float64)
        out = {}
        for m, c in cals.items():
            write_qdq(fp32, tmp_path / f"{m}.onnx", c, TENSORRT)
            y = OrtEngine(tmp_path / f"{m}.onnx", optimization="disable").run(x)
            out[m] = float(np.mean((y - ref) ** 2) / np.mean(ref ** 2))
        return out

    on_selection, on_calibration = errors(x_sel), errors(calib.x[:64])
    assert any(abs(on_selection[m] - on_calibration[m]) > 0.5 * on_selection[m] for m in AUTO_METHODS)
    for m in AUTO_METHODS:
        assert res.calibration["auto_logit_error"][m] == pytest.approx(on_selection[m], rel=1e-3)
    assert res.calibration["method"] == min(on_selection, key=on_selection.get)
    assert res.calibration["auto_judged_on"] == "selection"


# ---- 5. --eval-data is the test set in every command ---------------------------------------------------------

@pytest.fixture(scope="module")
def undeclared_demo(tmp_path_factory):
    """The demo checkpoint without a data set of its own (so --data decides)."""
    from edgerep.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(DEMO)
    ck = tmp_path_factory.mktemp("ck") / "m.pt"
    save_checkpoint(ck, loaded.model, loaded.meta.__class__.from_dict({**loaded.meta.to_dict(), "dataset": None}))
    return ck


def test_quantize_eval_data_is_the_test_set_never_the_selection_set(tmp_path, undeclared_demo, capsys):
    x, y = _images(60)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    xt, yt = _images(30, seed=5)
    np.savez(tmp_path / "t.npz", x=xt, y=yt)
    q = ["quantize", str(undeclared_demo), "--data", str(tmp_path / "a.npz"), "--targets", "cpu", "--calib-samples",
         "16", "--method", "minmax", "--max-drop", "-1", "--json"]
    assert main([*q, "--eval-data", str(tmp_path / "t.npz"), "-o", str(tmp_path / "q")]) in (0, 1)
    ref = json.loads((tmp_path / "q" / "quantize.json").read_text())["reference"]
    # choices on a part of --data (the test set is held out of it: calibration and selection only)
    assert ref["role"] == "selection" and "t.npz" not in ref["data"] and ref["samples"] == 30
    capsys.readouterr()
    np.savez(tmp_path / "a_again.npz", x=x[:12], y=y[:12])  # a test set sharing samples with --data's parts
    assert main([*q, "--eval-data", str(tmp_path / "a_again.npz"), "-o", str(tmp_path / "q2")]) == 2
    assert "share" in capsys.readouterr().err
    from edgerep.commands import quantize

    import argparse
    p = argparse.ArgumentParser()
    quantize.add_arguments(p)
    helps = {a.dest: a.help for a in p._actions}
    assert "test set" in helps["eval_data"] and "selection set" in helps["val_data"]


# ---- 6. role isolation: the test split cannot be read before evaluate -----------------------------------------

class EarlyTestRead(AssertionError):
    """The test set was read before the evaluate stage."""


class GuardedSplit:
    """One role's data set behind a guard: every read is logged by role, and while ``closed`` any read
    of the data (batches, rows, labels) raises ``EarlyTestRead``. Size and names stay readable."""

    def __init__(self, inner, role: str, log: list, closed: bool = False):
        self.inner, self.role, self.log, self.closed = inner, role, log, closed
        for k in ("name", "has_labels", "class_names", "pre", "note"):
            setattr(self, k, getattr(inner, k, None))

    def _use(self, what: str) -> None:
        if self.closed:
            raise EarlyTestRead(f"the {self.role} set was read ({what}) before evaluate")
        self.log.append(self.role)

    def __len__(self) -> int:
        return len(self.inner)

    def batches(self, batch_size, limit=None):
        self._use("batches")
        yield from self.inner.batches(batch_size, limit)

    def _read(self, start, stop):
        self._use("_read")
        return self.inner._read(start, stop)

    def _read_rows(self, rows):
        self._use("_read_rows")
        return self.inner._read_rows(rows)

    def labels(self):
        self._use("labels")
        return self.inner.labels()

    def sample_ids(self):
        return self.inner.sample_ids()

    def fingerprint(self):
        return self.inner.fingerprint()


def test_the_guard_raises_on_an_early_read_of_the_test_split():
    from edgerep.data import open_dataset

    g = GuardedSplit(open_dataset("digits", split="test"), "test", [], closed=True)
    with pytest.raises(EarlyTestRead):
        next(g.batches(4))
    g.closed = False
    assert next(g.batches(4))[0].shape[0] == 4


def test_fold_check_and_quantize_read_calibration_and_selection_only_and_evaluate_reads_test(tmp_path):
    """Deploy's stages up to evaluate run with the test split guarded; fold verification reads real
    selection inputs, the check's sensitivity reads the selection set, and only evaluate reads test."""
    from edgerep.pipeline import (stage_build, stage_check, stage_evaluate, stage_export, stage_fold, stage_load,
                                  stage_quantize)

    opts = DeployOptions(checkpoint=DEMO, calib_samples=32, eval_samples=48, cache_dir=str(tmp_path / "cache"))
    say = lambda step, msg: None  # noqa: E731
    load = stage_load(opts=opts, say=say)
    log: list[str] = []
    sets = load.splits.sets
    for r in ROLES:
        sets[r] = GuardedSplit(sets[r], r, log, closed=(r == "test"))
    tmp = tmp_path / "bundle"
    tmp.mkdir()

    fold = stage_fold(opts=opts, load=load)
    assert log == ["selection"]  # the fold's real-data verification: selection inputs
    sel = next(load.splits.selection.inner.batches(16, limit=16))[0]
    assert np.array_equal(fold.real_x, sel)

    del log[:]
    check = stage_check(opts=opts, say=say, bundle_dir=tmp, load=load, fold=fold)
    assert "selection" in log and set(log) <= {"calibration", "selection"}  # sensitivity on the selection set
    assert check.report["layers"]

    del log[:]
    export = stage_export(bundle_dir=tmp, load=load, fold=fold)
    quantize = stage_quantize(opts=opts, say=say, bundle_dir=tmp, load=load, fold=fold, export=export)
    assert set(log) == {"calibration", "selection"}
    assert quantize.report["reference"]["role"] == "selection"

    build = stage_build(say=say, bundle_dir=tmp, load=load, fold=fold, export=export, quantize=quantize)
    sets["test"].closed = False  # evaluate is the first stage allowed to read it
    del log[:]
    evaluate = stage_evaluate(opts=opts, say=say, user_metric=None, bundle_dir=tmp, load=load, quantize=quantize,
                              build=build)
    assert log and set(log) == {"test"} and evaluate.baseline["accuracy"]["value"] > 90
