"""Data sets: digits splits, .npz streaming, image folders, synthetic inputs."""
from __future__ import annotations

import numpy as np
import pytest

from edgerep.checkpoint import CheckpointMeta
from edgerep.data import open_dataset
from edgerep.data.digits import split_indices
from edgerep.errors import DataError


def _all(ds, bs=64):
    xs, ys = zip(*ds.batches(bs))
    return np.concatenate(xs), (np.concatenate(ys) if ys[0] is not None else None)


# ---- digits ---------------------------------------------------------------------------------
def test_digits_splits_are_disjoint_complete_stratified_and_fixed():
    idx = split_indices()
    sets = {k: set(v.tolist()) for k, v in idx.items()}
    assert sum(len(v) for v in sets.values()) == 1797
    assert not (sets["train"] & sets["calib"]) and not (sets["train"] & sets["test"])
    assert not (sets["calib"] & sets["test"])  # calibration never sees a test image
    assert not (sets["val"] & (sets["test"] | sets["calib"] | sets["train"]))  # selection is its own
    assert [len(sets[k]) for k in ("train", "calib", "val", "test")] == [1079, 179, 180, 359]
    from sklearn.datasets import load_digits

    y = load_digits().target
    for c in range(10):
        frac = np.mean(y[idx["test"]] == c) / np.mean(y == c)
        assert abs(frac - 1.0) < 0.05  # each class is ~20% test, as in the whole set


def test_digits_batches_are_preprocessed_to_the_meta():
    ds = open_dataset("digits", split="train")
    x, y = _all(ds)
    assert x.shape == (1079, 1, 16, 16) and x.dtype == np.float32 and y.dtype == np.int64
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-3  # train stats normalize train
    meta = CheckpointMeta("m", input_shape=(3, 32, 32), mean=(0.5,), std=(0.25,), class_names=list("0123456789"))
    x3, _ = next(open_dataset("digits", split="calib", meta=meta).batches(5))
    assert x3.shape == (5, 3, 32, 32)
    assert np.array_equal(x3[:, 0], x3[:, 2])
    assert float(x3.min()) == pytest.approx(-2.0)  # background 0 -> (0 - 0.5) / 0.25


def test_digits_limit_and_fingerprints():
    ds = open_dataset("digits", split="test")
    assert sum(len(b[1]) for b in ds.batches(100, limit=250)) == 250
    assert ds.fingerprint() == open_dataset("digits", split="test").fingerprint()
    assert ds.fingerprint() != open_dataset("digits", split="calib").fingerprint()
    other = CheckpointMeta("m", input_shape=(1, 8, 8), mean=(0.3,), std=(0.3,))
    assert ds.fingerprint() != open_dataset("digits", split="test", meta=other).fingerprint()
    with pytest.raises(DataError, match="split"):
        open_dataset("digits", split="validation")


# ---- npz --------------------------------------------------------------------------------------
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_streams_uint8_nhwc_like_a_whole_load(tmp_path, compressed):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(37, 8, 8, 3), dtype=np.uint8)
    y = rng.integers(0, 5, size=37)
    path = tmp_path / "d.npz"
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)
    meta = CheckpointMeta("m", input_shape=(3, 8, 8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    ds = open_dataset(path, meta=meta)
    assert len(ds) == 37 and ds.has_labels
    got_x, got_y = _all(ds, bs=10)
    want = (x.transpose(0, 3, 1, 2) / 255.0 - np.array([0.5, 0.4, 0.3]).reshape(1, 3, 1, 1)) / 0.2
    np.testing.assert_allclose(got_x, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_y, y)


def test_npz_float_rows_are_taken_as_preprocessed_and_split_keys_win(tmp_path):
    x = np.random.default_rng(1).standard_normal((6, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "p.npz", x=x, x_calib=x[:2], y_calib=np.array([1, 0]))
    meta = CheckpointMeta("m", input_shape=(1, 4, 4), mean=(0.0,), std=(1.0,))
    test = open_dataset(tmp_path / "p.npz", split="test", meta=meta)
    assert not test.has_labels and np.array_equal(_all(test)[0], x)
    calib = open_dataset(tmp_path / "p.npz", split="calib", meta=meta)
    assert len(calib) == 2 and list(_all(calib)[1]) == [1, 0]
    wrong = CheckpointMeta("m", input_shape=(1, 8, 8), mean=(0.0,), std=(1.0,))
    with pytest.raises(DataError, match="the model takes"):
        _all(open_dataset(tmp_path / "p.npz", meta=wrong))


def test_npz_errors_name_the_file(tmp_path):
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match="bad.npz.*no array 'x'"):
        open_dataset(tmp_path / "bad.npz")
    np.savez(tmp_path / "lab.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2))
    with pytest.raises(DataError, match="'y' has shape"):
        open_dataset(tmp_path / "lab.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.npz"):
        open_dataset(tmp_path / "junk.npz")


# ---- image folder -------------------------------------------------------------------------------
def _write_folder(root, classes=("cat", "dog"), n=3, size=(10, 12)):
    from PIL import Image

    rng = np.random.default_rng(2)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_reads_labels_in_the_models_class_order(tmp_path):
    _write_folder(tmp_path / "imgs")
    meta = CheckpointMeta("m", input_shape=(3, 8, 8), class_names=["dog", "cat", "bird"])
    ds = open_dataset(tmp_path / "imgs", meta=meta)
    x, y = _all(ds, bs=4)
    assert x.shape == (6, 3, 8, 8) and x.dtype == np.float32
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert y[0] == 1  # "cat" files come first on disk but are class 1 for this model
    gray = CheckpointMeta("m", input_shape=(1, 5, 5), mean=(0.0,), std=(1.0,))
    xg, _ = _all(open_dataset(tmp_path / "imgs", meta=gray))
    assert xg.shape == (6, 1, 5, 5) and 0.0 <= xg.min() and xg.max() <= 1.0


def test_image_folder_errors(tmp_path):
    _write_folder(tmp_path / "imgs")
    meta = CheckpointMeta("m", input_shape=(3, 8, 8), class_names=["dog", "bird"])
    with pytest.raises(DataError, match="cat"):
        open_dataset(tmp_path / "imgs", meta=meta)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        open_dataset(tmp_path / "empty")
    (tmp_path / "imgs" / "dog" / "3.png").write_bytes(b"broken")
    with pytest.raises(DataError, match="3.png"):
        _all(open_dataset(tmp_path / "imgs"))


# ---- synthetic and bad specs ----------------------------------------------------------------------
def test_synthetic_is_seeded_unlabelled_and_shaped():
    meta = CheckpointMeta("m", input_shape=(2, 5, 7))
    a = _all(open_dataset("synthetic", meta=meta, limit=9), bs=4)
    b = _all(open_dataset("synthetic", meta=meta, limit=9), bs=9)
    assert a[1] is None and a[0].shape == (9, 2, 5, 7)
    np.testing.assert_array_equal(a[0], b[0])  # sample i does not depend on the batch size


def test_unknown_spec_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(DataError, match="not a directory or .npz"):
        open_dataset(tmp_path / "x.csv")


def test_npz_batches_can_be_read_again_and_out_of_order(tmp_path):
    x = np.arange(20 * 4, dtype=np.uint8).reshape(20, 1, 2, 2)
    np.savez_compressed(tmp_path / "s.npz", x=x, y=np.arange(20))
    ds = open_dataset(tmp_path / "s.npz", meta=CheckpointMeta("m", input_shape=(1, 2, 2), mean=(0.0,), std=(1.0,)))
    first = [y.tolist() for _, y in ds.batches(6)]
    again = [y.tolist() for _, y in ds.batches(6)]  # the stream rewinds for a second pass
    assert first == again == [list(range(0, 6)), list(range(6, 12)), list(range(12, 18)), [18, 19]]
    assert ds._read(3, 5)[1].tolist() == [3, 4] and ds._read(15, 16)[1].tolist() == [15]
