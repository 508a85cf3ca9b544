"""Three disjoint data sets: calibration, selection, test (edgerep.data.splits), and their ids."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgerep.checkpoint import CheckpointMeta
from edgerep.data import open_dataset
from edgerep.data.digits import split_indices
from edgerep.data.splits import ROLES, resolve_splits, stratified_split
from edgerep.errors import DataError

META = CheckpointMeta(arch="x", input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,), dataset=None)


@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=300), seed=st.integers(0, 5),
       k=st.integers(2, 3))
def test_stratified_split_is_a_partition_in_proportion_per_class(labels, seed, k):
    y = np.array(labels)
    weights = {r: w for r, w in list({"calibration": 0.2, "selection": 0.2, "test": 0.6}.items())[-k:]}
    parts = stratified_split(y, len(y), weights, seed)
    allidx = np.concatenate(list(parts.values()))
    assert sorted(allidx.tolist()) == list(range(len(y)))  # disjoint and complete
    total = sum(weights.values())
    cum = np.cumsum([weights[r] / total for r in ("test", "selection", "calibration") if r in weights])
    sizes = np.diff([0, *[int(round(c * len(y))) for c in cum]])
    assert [len(parts[r]) for r in ("test", "selection", "calibration") if r in parts] == sizes.tolist()
    for c in np.unique(y):
        n_c = int((y == c).sum())
        for r, idx in parts.items():
            got = int((y[idx] == c).sum())
            assert abs(got - weights[r] / total * n_c) <= 1.0 + n_c / len(y) + 1e-9  # rank-order cuts
    assert {r: v.tolist() for r, v in stratified_split(y, len(y), weights, seed).items()} == \
        {r: v.tolist() for r, v in parts.items()}  # deterministic


def _old_digits_split():
    """The split the demo checkpoints were trained with: 30% test, 10% calib, 60% train per class."""
    from edgerep.data.digits import _raw

    y = _raw()[1]
    rng = np.random.RandomState(0)
    out = {"train": [], "calib": [], "test": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test, n_calib = int(round(0.3 * len(idx))), int(round(0.1 * len(idx)))
        out["test"] += idx[:n_test].tolist()
        out["calib"] += idx[n_test:n_test + n_calib].tolist()
        out["train"] += idx[n_test + n_calib:].tolist()
    return {k: sorted(v) for k, v in out.items()}


def test_digits_val_is_carved_from_the_old_test_split_so_train_and_calib_are_unchanged():
    new, old = split_indices(), _old_digits_split()
    assert new["train"].tolist() == old["train"] and new["calib"].tolist() == old["calib"]
    assert sorted(new["test"].tolist() + new["val"].tolist()) == old["test"]
    sets = [set(new[s].tolist()) for s in ("train", "calib", "val", "test")]
    assert sum(len(s) for s in sets) == 1797 and len(set().union(*sets)) == 1797


def test_digits_resolves_to_its_own_disjoint_splits_with_sklearn_indices():
    s = resolve_splits(data="digits", meta=META)
    ids = s.ids()
    assert [len(ids[r]) for r in ROLES] == [179, 180, 359]
    assert not (set(ids["calibration"]) & set(ids["selection"])) and not (set(ids["selection"]) & set(ids["test"]))
    assert ids["test"][0] == f"digits/{split_indices()['test'][0]}"
    rep = s.to_report()
    assert rep["test"]["how"] == "split test" and rep["note"] is None and len(rep["test"]["fingerprint"]) == 16


def _npz(path, n=200, classes=5, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, size=(n, 8, 8)).astype(dtype)
    y = np.arange(n) % classes
    np.savez(path, x=x, y=y)
    return x, y


def test_one_unsplit_npz_is_split_deterministically_stratified_and_said(tmp_path):
    _, y = _npz(tmp_path / "d.npz")
    said = []
    s = resolve_splits(data=str(tmp_path / "d.npz"), meta=META, say=said.append)
    ids = s.ids()
    assert [len(ids[r]) for r in ROLES] == [40, 40, 120]
    rows = {r: [int(i.split("#")[1]) for i in ids[r]] for r in ROLES}
    assert sorted(sum(rows.values(), [])) == list(range(200))
    for r in ROLES:  # stratified: every class in proportion
        assert np.bincount(y[rows[r]], minlength=5).tolist() == [len(rows[r]) // 5] * 5
    assert said and "split it deterministically" in said[0] and s.to_report()["note"]
    # the rows read are the rows named
    x_sel, y_sel = next(s.selection.batches(1000))
    assert y_sel.tolist() == y[rows["selection"]].tolist()
    assert resolve_splits(data=str(tmp_path / "d.npz"), meta=META).ids() == ids


def test_named_sets_that_share_samples_are_refused_unless_allowed(tmp_path):
    x, y = _npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", x=x[:50], y=y[:50])  # 50 rows of a.npz again
    with pytest.raises(DataError, match="share .* samples"):
        resolve_splits(data=str(tmp_path / "a.npz"), test=str(tmp_path / "b.npz"), meta=META)
    s = resolve_splits(data=str(tmp_path / "a.npz"), test=str(tmp_path / "b.npz"), meta=META, allow_overlap=True)
    assert sum(s.overlap.values()) > 0 and "OPTIMISTIC" in s.to_report()["note"]
    _npz(tmp_path / "c.npz", seed=1)
    ok = resolve_splits(data=str(tmp_path / "a.npz"), test=str(tmp_path / "c.npz"), meta=META)
    assert ok.sources["test"].how == "named" and len(ok.test) == 200 and not ok.overlap


def _folder(root, splits, per_class=6, classes=("a", "b")):
    from PIL import Image

    rng = np.random.default_rng(0)
    for sp in splits:
        for c in classes:
            d = root / sp / c if sp else root / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(d / f"{sp or 'x'}{i}.png")


def test_a_folder_with_calib_and_test_gets_its_selection_cut_from_calib(tmp_path):
    _folder(tmp_path, ("calib", "test"))
    s = resolve_splits(data=str(tmp_path), meta=META)
    ids = s.ids()
    assert len(ids["test"]) == 12 and len(ids["calibration"]) + len(ids["selection"]) == 12
    assert all(i.startswith("calib/") for i in ids["calibration"] + ids["selection"])
    assert all(i.startswith("test/") for i in ids["test"])
    assert not set(ids["calibration"]) & set(ids["selection"])


def test_a_folder_with_all_three_subfolders_uses_them(tmp_path):
    _folder(tmp_path, ("calib", "val", "test"))
    s = resolve_splits(data=str(tmp_path), meta=META)
    assert [s.sources[r].how for r in ROLES] == ["split calib", "split val", "split test"]
    assert all(i.startswith("val/") for i in s.ids()["selection"])


def test_synthetic_roles_are_different_inputs_and_unlabelled():
    s = resolve_splits(data=None, meta=META)
    a, b = (next(s.sets[r].batches(4))[0] for r in ("calibration", "test"))
    assert not np.allclose(a, b) and not s.labelled and "no labels" in s.to_report()["note"]


def test_float_npz_is_model_ready_and_says_so(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.zeros((10, 1, 8, 8), np.float32), y=np.zeros(10, np.int64))
    meta = CheckpointMeta(arch="x", input_shape=(1, 8, 8), extra={"preprocessing_source": "default"})
    ds = open_dataset(str(tmp_path / "f.npz"), meta=meta)  # no preprocessing needed: no error
    assert "model-ready" in ds.note
