"""Every row of docs/errors.md: a bad input or fault ends in exit code 2 (1 for a gate) and ONE line on
stderr that names the file or field and what to do, --debug shows the traceback, and nothing partial is
left at the output path. Errors are triggered before the heavy deploy steps wherever the row allows;
one full (light) deploy covers "fewer calibration samples than asked", which warns and proceeds.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from edgerep.bundle import TMP_MARK, atomic_bundle
from edgerep.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"
FAST = ["--no-check", "--calib-samples", "64", "--bench-seconds", "0.1"]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def run_cli(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_error_line(err: str, command: str) -> str:
    """The single ``edgerep <command>: ...`` line; no traceback anywhere."""
    lines = [ln for ln in err.splitlines() if ln.startswith(f"edgerep {command}: ")]
    assert len(lines) == 1, err
    assert not any(ln.startswith("Traceback") for ln in err.splitlines()), err
    assert "internal error" not in lines[0], lines[0]
    return lines[0]


def expect_error(capsys, argv: list, needles: list[str], *, code: int = 2) -> str:
    rc, err = run_cli(capsys, *argv)
    line = one_error_line(err, str(argv[0]))
    assert rc == code, (rc, err[-2000:])
    for n in needles:
        assert n in line, (n, line)
    return line


def nothing_left(out: Path) -> None:
    """No bundle and no hidden temporary directory of it."""
    assert not out.exists(), out
    if out.parent.is_dir():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}{TMP_MARK}")]


@lru_cache(maxsize=1)
def _demo_obj() -> dict:
    return torch.load(DEMO, map_location="cpu", weights_only=True)


def demo_obj() -> dict:
    """A fresh shallow copy of the demo checkpoint's dict (meta and state_dict copied one level)."""
    o = _demo_obj()
    return {**o, "meta": dict(o["meta"]), "state_dict": dict(o["state_dict"])}


def first_key(sd: dict, suffix: str) -> str:
    return next(k for k in sd if k.endswith(suffix))


# ------------------------------------------------------------------------------------------
# checkpoints: each builder writes a bad file into d and returns (path, extra args)
# ------------------------------------------------------------------------------------------
def _save(d: Path, name: str, obj) -> Path:
    torch.save(obj, d / name)
    return d / name


def _meta(**changes):
    def build(d: Path):
        o = demo_obj()
        o["meta"].update(changes)
        return _save(d, "meta.pt", o), []
    return build


def _truncated(d):
    raw = DEMO.read_bytes()
    (d / "t.pt").write_bytes(raw[: len(raw) // 2])
    return d / "t.pt", []


def _crc_flip(d):
    import zipfile

    raw = bytearray(DEMO.read_bytes())
    with zipfile.ZipFile(DEMO) as zf:
        big = max(zf.infolist(), key=lambda i: i.file_size)
    start = big.header_offset + 30 + len(big.filename.encode()) + len(big.extra)
    raw[start + 64:start + 68] = b"\x01\x02\x03\x04"  # finite float32 bits: only the CRC can tell
    (d / "flip.pt").write_bytes(bytes(raw))
    return d / "flip.pt", []


def _write(name: str, data: bytes):
    def build(d):
        (d / name).write_bytes(data)
        return d / name, []
    return build


def _png_as_ckpt(d):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "img.pt", format="PNG")
    return d / "img.pt", []


def _npz_as_ckpt(d):
    with open(d / "arrays.pt", "wb") as f:  # (np.savez would append .npz to a path)
        np.savez(f, x=np.zeros(3))
    return d / "arrays.pt", []


def _pickled_module(d):
    return _save(d, "module.pt", torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))), []


def _plain_sd(arch: str | None):
    def build(d):
        p = _save(d, "plain.pt", demo_obj()["state_dict"])
        return p, (["--arch", arch] if arch else [])
    return build


def _other_arch_flag(d):
    return DEMO, ["--arch", "repvgg_a0"]


def _other_input_shape_flag(d):
    return DEMO, ["--input-shape", "3,16,16"]


def _plain_sd_wrong_input_shape(d):
    p = _save(d, "plain.pt", demo_obj()["state_dict"])
    return p, ["--arch", "repvgg_digits", "--arch-kwargs", '{"num_classes": 10, "in_channels": 1}',
               "--input-shape", "3,16,16", "--mean", "0.5", "--std", "0.5", "--data", "digits"]


def _sd_change(fn):
    def build(d):
        o = demo_obj()
        fn(o["state_dict"])
        return _save(d, "changed.pt", o), []
    return build


def _nan_weight(sd):
    k = first_key(sd, "conv.weight")
    sd[k] = sd[k].clone()
    sd[k][0, 0, 0, 0] = float("nan")


def _inf_running_var(sd):
    k = first_key(sd, "running_var")
    sd[k] = sd[k].clone()
    sd[k][1] = float("inf")


def _negative_running_var(sd):
    k = first_key(sd, "running_var")
    sd[k] = -sd[k].abs() - 1.0


def _drop_state_dict(d):
    o = demo_obj()
    del o["state_dict"]
    return _save(d, "nosd.pt", o), []


def _no_meta(d):
    o = demo_obj()
    o["meta"] = None
    return _save(d, "nometa.pt", o), []


def _directory(d):
    (d / "adir.pt").mkdir()
    return d / "adir.pt", []


CHECKPOINT_ROWS = {
    "missing file": (lambda d: (d / "nope.pt", []), ["nope.pt", "no such checkpoint file"]),
    "a directory": (_directory, ["adir.pt", "is a directory"]),
    "empty file": (_write("empty.pt", b""), ["empty.pt", "not a PyTorch checkpoint"]),
    "truncated download": (_truncated, ["t.pt", "truncated", "re-download"]),
    "flipped bytes (CRC mismatch)": (_crc_flip, ["flip.pt", "CRC-32"]),
    "random bytes": (_write("rand.pt", np.random.default_rng(0).bytes(4096)), ["rand.pt", "not a PyTorch"]),
    "text file": (_write("notes.pt", b"hello, I am not a checkpoint\n"), ["notes.pt", "not a PyTorch checkpoint"]),
    "an image": (_png_as_ckpt, ["img.pt", "not a PyTorch checkpoint"]),
    "an .npz zip": (_npz_as_ckpt, ["arrays.pt", "cannot read checkpoint"]),
    "garbage .pt2": (_write("prog.pt2", b"junk" * 64), ["prog.pt2", "torch.export"]),
    "pickled module without --trust-checkpoint": (_pickled_module, ["module.pt", "--trust-checkpoint"]),
    "plain state_dict without --arch": (_plain_sd(None), ["plain.pt", "--arch"]),
    "state_dict of another architecture": (_plain_sd("repvgg_a0"), ["plain.pt", "do not fit the architecture",
                                                                    "likely cause"]),
    "--arch that contradicts the checkpoint": (_other_arch_flag, ["repvgg_a0", "drop --arch"]),
    "--arch module that does not import": (_plain_sd("nosuchpkg.mod:make"), ["nosuchpkg", "cannot import"]),
    "meta.arch unknown": (_meta(arch="no_such_arch"), ["no_such_arch", "edgerep zoo"]),
    "meta.arch_kwargs rejected": (_meta(arch_kwargs={"no_such_kwarg": 1}), ["no_such_kwarg"]),
    "meta.input_shape wrong type": (_meta(input_shape=["a", 16, 16]), ["meta.pt", "wrong type"]),
    "meta.input_shape wrong rank": (_meta(input_shape=[16, 16]), ["meta.input_shape"]),
    "meta.std zero": (_meta(std=[0.0]), ["meta.std"]),
    "meta.format_version newer": (_meta(format_version=99), ["format_version", "upgrade edgerep"]),
    "meta missing": (lambda d: _no_meta(d), ["nometa.pt", "'meta'"]),
    "state_dict missing": (_drop_state_dict, ["nosd.pt", "state_dict"]),
    "NaN weight": (_sd_change(_nan_weight), ["changed.pt", "NaN or Inf", "conv.weight"]),
    "Inf BN running_var": (_sd_change(_inf_running_var), ["changed.pt", "NaN or Inf", "running_var"]),
    "negative BN running_var": (_sd_change(_negative_running_var), ["running_var", "not a valid variance"]),
    "input shape does not fit the model": (_meta(input_shape=[3, 16, 16]), [
        "meta.pt: its input shape 3,16,16 (from the checkpoint's metadata) does not fit the model",
        "pass --input-shape C,H,W"]),
    "--input-shape does not fit the model": (_plain_sd_wrong_input_shape, [
        "--input-shape 3,16,16: does not fit the model of", "plain.pt"]),
    "--input-shape that contradicts the checkpoint": (_other_input_shape_flag, [
        "--input-shape 3,16,16", "carries its input shape 1,16,16", "drop --input-shape"]),
}


@pytest.mark.parametrize("row", list(CHECKPOINT_ROWS))
def test_bad_checkpoint(row, tmp_path, capsys):
    build, needles = CHECKPOINT_ROWS[row]
    ckpt, extra = build(tmp_path)
    out = tmp_path / "out" / "bundle"
    expect_error(capsys, ["deploy", ckpt, "--out", out, *extra, *FAST], needles)
    nothing_left(out)


def test_pickled_module_loads_only_with_trust(tmp_path):
    """The flag is the gate: the same file loads with trust=True (in eval mode)."""
    from edgerep.checkpoint import load_checkpoint
    from edgerep.errors import CheckpointError

    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).train()
    torch.save(m, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="pickled Python objects") as info:
        load_checkpoint(tmp_path / "m.pt")
    assert "--trust-checkpoint" in info.value.one_line()
    loaded = load_checkpoint(tmp_path / "m.pt", trust=True, input_shape=(1, 8, 8))  # never guessed (issue 20.9)
    assert loaded.source_format == "pickled-module"
    assert not loaded.model.training and not any(mod.training for mod in loaded.model.modules())


def test_model_left_in_training_mode(tmp_path):
    """A module saved in training mode is loaded in eval mode; folding a model still in training mode is refused
    with the module path (BN batch statistics would make any fold inexact)."""
    from edgerep.checkpoint import load_checkpoint
    from edgerep.errors import FoldError
    from edgerep.fold.model import fold_model

    loaded = load_checkpoint(DEMO)
    assert not loaded.model.training
    with pytest.raises(FoldError, match="train") as info:
        fold_model(loaded.model.train(), loaded.example_input(2))
    assert info.value.path  # names the module


def test_zero_bn_running_var_is_valid_and_folds_exactly():
    """Zero variance is legal (eps keeps 1/sqrt(var+eps) finite): edgerep proceeds, and the fold is exact."""
    from edgerep.checkpoint import load_checkpoint
    from edgerep.fold.model import fold_model, verify_fold

    loaded = load_checkpoint(DEMO)
    bn = next(m for m in loaded.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var[:2] = 0.0
    x = loaded.example_input(2)
    rep = verify_fold(loaded.model, fold_model(loaded.model, x), x)
    assert rep.max_rel_error < 1e-4


# ------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------
def _digits_uint8(n: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:n] * (255 / 16)).astype(np.uint8), d.target[:n].astype(np.int64)


def _folder(d: Path, files: dict[str, bytes | None]) -> Path:
    root = d / "images"
    root.mkdir()
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            p.write_bytes(data)
    return root


def _png_bytes(mode: str = "L") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _npz(**arrays):
    def build(d):
        np.savez(d / "data.npz", **arrays)
        return d / "data.npz"
    return build


def _data_file(name: str, data: bytes):
    def build(d):
        (d / name).write_bytes(data)
        return d / name
    return build


def _npz_corrupt_member(d):
    x, y = _digits_uint8(20)
    np.savez(d / "data.npz", x=x, y=y)  # stored, not compressed: the bytes of x sit in the file as is
    raw = bytearray((d / "data.npz").read_bytes())
    i = raw.find(x.tobytes()[:32])
    raw[i + 100:i + 104] = b"\xde\xad\xbe\xef"
    (d / "data.npz").write_bytes(bytes(raw))
    return d / "data.npz"


_X, _Y = _digits_uint8(20)
DATA_ROWS = {
    "data path missing": (lambda d: d / "nowhere", ["nowhere", "no such file or directory"]),
    "empty data directory": (lambda d: _folder(d, {}), ["images", "no class sub-folders"]),
    "class folders without images": (lambda d: _folder(d, {"3/readme.txt": b"x"}), ["no images"]),
    "class folder not among the model's classes": (lambda d: _folder(d, {"cat/a.png": _png_bytes()}),
                                                   ["cat", "class names"]),
    "truncated image": (lambda d: _folder(d, {"0/a.png": _png_bytes()[:40], "1/b.png": _png_bytes()}),
                        ["a.png", "cannot read image"]),
    "text file named .png": (lambda d: _folder(d, {"0/a.png": b"not an image"}), ["a.png", "cannot read image"]),
    "unsupported data file": (_data_file("data.txt", b"1,2,3"), ["data.txt", "not a directory or .npz"]),
    ".npz that is not a zip": (_data_file("data.npz", b"garbage"), ["data.npz", "not a readable .npz"]),
    ".npz with wrong keys": (_npz(images=_X, labels=_Y), ["data.npz", "no array 'x'", "np.savez"]),
    ".npz x of strings": (_npz(x=np.full((4, 8, 8), "a"), y=_Y[:4]), ["data.npz", "dtype"]),
    ".npz x complex": (_npz(x=np.zeros((4, 8, 8), np.complex64), y=_Y[:4]), ["data.npz", "dtype"]),
    ".npz x bool": (_npz(x=np.zeros((4, 8, 8), bool), y=_Y[:4]), ["data.npz", "dtype"]),
    ".npz x of Python objects": (_npz(x=np.array([{"a": 1}] * 4, dtype=object), y=_Y[:4]),
                                 ["data.npz", "Python objects"]),
    ".npz x 5-D": (_npz(x=np.zeros((4, 1, 1, 8, 8), np.uint8), y=_Y[:4]), ["data.npz", "'x' has shape"]),
    ".npz y of another length": (_npz(x=_X, y=_Y[:5]), ["data.npz", "'y' has shape"]),
    ".npz y not integers": (_npz(x=_X, y=_Y + 0.5), ["data.npz", "non-integer labels"]),
    ".npz y of strings": (_npz(x=_X, y=np.array(["a"] * 20)), ["data.npz", "dtype"]),
    ".npz float x with NaN": (_npz(x=np.full((4, 1, 16, 16), np.nan, np.float32), y=_Y[:4]),
                              ["data.npz", "NaN or Inf"]),
    ".npz float x of another shape (input shape mismatch)": (
        _npz(x=np.zeros((4, 3, 8, 8), np.float32), y=_Y[:4]), ["data.npz", "(1, 16, 16)"]),
    ".npz with a corrupt member (CRC)": (_npz_corrupt_member, ["data.npz", "Bad CRC-32"]),
}


@pytest.mark.parametrize("row", list(DATA_ROWS))
def test_bad_data(row, tmp_path, capsys):
    build, needles = DATA_ROWS[row]
    data = build(tmp_path)
    out = tmp_path / "out" / "bundle"
    expect_error(capsys, ["deploy", DEMO, "--data", data, "--out", out, *FAST], needles)
    nothing_left(out)


@pytest.mark.parametrize("flag", ["--calib-data", "--eval-data"])
def test_bad_data_per_role_flag(flag, tmp_path, capsys):
    out = tmp_path / "bundle"
    expect_error(capsys, ["deploy", DEMO, flag, tmp_path / "missing.npz", "--out", out, *FAST], ["missing.npz"])
    nothing_left(out)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_damaged_deep_inside_a_member(compressed, tmp_path):
    """Damage far from the header is met mid-read (zip checks a member's CRC at its end): one DataError."""
    from edgerep.data import open_dataset
    from edgerep.errors import DataError

    x = np.random.default_rng(0).integers(0, 255, (3000, 8, 8), dtype=np.uint8)
    (np.savez_compressed if compressed else np.savez)(tmp_path / "big.npz", x=x, y=np.zeros(3000, np.int64))
    raw = bytearray((tmp_path / "big.npz").read_bytes())
    raw[len(raw) * 2 // 5:len(raw) * 2 // 5 + 8] = b"\x00\xff" * 4
    (tmp_path / "big.npz").write_bytes(bytes(raw))
    ds = open_dataset(tmp_path / "big.npz", split="calib")  # the header is intact
    with pytest.raises(DataError, match="big.npz: x.npy is corrupt"):
        for _ in ds.batches(256):
            pass


def test_image_without_read_permission(tmp_path, monkeypatch):
    """EACCES on one image (simulated: tests run as root here, where chmod 000 does not stop reads)."""
    from PIL import Image

    from edgerep.checkpoint import load_checkpoint
    from edgerep.data import open_dataset
    from edgerep.errors import DataError

    root = _folder(tmp_path, {"0/a.png": _png_bytes(), "1/locked.png": _png_bytes()})
    real_open = Image.open

    def guarded(fp, *a, **k):
        if str(fp).endswith("locked.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(fp))
        return real_open(fp, *a, **k)

    monkeypatch.setattr(Image, "open", guarded)
    ds = open_dataset(root, split="calib", meta=load_checkpoint(DEMO).meta)
    with pytest.raises(DataError, match="locked.png: cannot read image .*Permission denied"):
        list(ds.batches(4))


def test_mixed_mode_images_are_converted(tmp_path):
    """Gray, RGB, RGBA, palette, 1-bit, gray+alpha and 16-bit PNGs in one folder: all read as the model's
    channels, finite and in range."""
    from edgerep.checkpoint import load_checkpoint
    from edgerep.data import open_dataset

    modes = ["L", "RGB", "RGBA", "P", "1", "LA", "I;16"]
    root = _folder(tmp_path, {f"{i % 10}/{m.replace(';', '_')}.png": _png_bytes(m) if m != "I;16" else None
                              for i, m in enumerate(modes)})
    from PIL import Image

    Image.fromarray((np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)).save(root / "6" / "I_16.png")
    meta = load_checkpoint(DEMO).meta
    ds = open_dataset(root, split="calib", meta=meta)
    x, y = next(ds.batches(len(ds)))
    assert len(ds) == len(modes) and x.shape == (len(modes), *meta.input_shape)
    assert np.isfinite(x).all() and x.dtype == np.float32
    assert sorted(y.tolist()) == list(range(len(modes)))


def test_fewer_calibration_samples_than_asked_warns_and_proceeds(tmp_path, capsys):
    """20 samples for --calib-samples 64: a warning naming both counts, the deploy goes on, the report keeps it."""
    x, y = _digits_uint8(20)
    np.savez(tmp_path / "small.npz", x=x, y=y)
    out = tmp_path / "bundle"
    rc, err = run_cli(capsys, "deploy", DEMO, "--data", tmp_path / "small.npz", "--out", out, "--no-check",
                      "--calib-samples", "64", "--bench-seconds", "0.05", "--calib-method", "minmax",
                      "--cache-dir", tmp_path / "cache")
    assert rc == 0, err[-2000:]
    assert "has 4 samples, fewer than the 64 asked" in err
    report = json.loads((out / "report.json").read_text())
    assert any("fewer than the 64 asked" in w for w in report["warnings"])
    # one unsplit .npz: 20% of it calibrates (the rest selects and tests), all of which is used
    assert report["data"]["calibration_samples"] == report["splits"]["calibration"]["count"] == 4
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


# ------------------------------------------------------------------------------------------
# options, targets, engines, ONNX
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--calib-samples", "0"), ("--batch", "0"), ("--bench-seconds", "-1"),
                                        ("--eval-samples", "0")])
def test_bad_numeric_option(flag, value, tmp_path, capsys):
    out = tmp_path / "bundle"
    argv = ["deploy", DEMO, "--out", out, "--no-check", flag, value]
    expect_error(capsys, argv, [flag])
    nothing_left(out)


def test_unknown_target(tmp_path, capsys):
    expect_error(capsys, ["deploy", DEMO, "--target", "no-such-board", "--out", tmp_path / "b", *FAST],
                 ["no-such-board", "known:"])


def test_malformed_target_toml(tmp_path, capsys):
    (tmp_path / "t.toml").write_text("name = [unclosed\n")
    expect_error(capsys, ["deploy", DEMO, "--target", tmp_path / "t.toml", "--out", tmp_path / "b", *FAST],
                 ["t.toml", "TOML"])
    nothing_left(tmp_path / "b")


def _gpu_stack_present() -> bool:
    from edgerep.engines.tensorrt_engine import tensorrt_status
    from edgerep.engines.torch_engine import cuda_available

    return bool(tensorrt_status()[0]) and cuda_available()


@pytest.mark.skipif("_gpu_stack_present()", reason="TensorRT and a GPU are present: nothing is missing here")
def test_gpu_target_without_fallback_is_refused(tmp_path, capsys):
    """A profile with fallback = "none": TensorRT / the GPU missing is exit 2 before any work."""
    text = (ROOT / "engines" / "dgpu.toml").read_text().replace('fallback = "onnxruntime-cpu"', 'fallback = "none"')
    assert 'fallback = "none"' in text
    (tmp_path / "strict.toml").write_text(text.replace('name = "dgpu"', 'name = "strict-gpu"'))
    out = tmp_path / "bundle"
    expect_error(capsys, ["deploy", DEMO, "--target", tmp_path / "strict.toml", "--out", out, *FAST],
                 ["strict-gpu", "cannot run on this machine", "fallback"])
    nothing_left(out)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    from edgerep.quant.export import export_onnx

    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 8 * 8, 3)).eval()
    p = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(m, p, (1, 8, 8))
    return p


@pytest.mark.skipif("_gpu_stack_present()", reason="TensorRT and a GPU are present: nothing is missing here")
def test_build_for_gpu_target_without_fallback_is_refused(tiny_onnx, tmp_path, capsys):
    """`edgerep build` refuses a fallback = "none" profile whose engines cannot run here, like deploy."""
    text = (ROOT / "engines" / "dgpu.toml").read_text().replace('fallback = "onnxruntime-cpu"', 'fallback = "none"')
    (tmp_path / "strict.toml").write_text(text.replace('name = "dgpu"', 'name = "strict-gpu"'))
    out = tmp_path / "b"
    expect_error(capsys, ["build", tiny_onnx, "--target", tmp_path / "strict.toml", "--out", out],
                 ["strict-gpu", "cannot run on this machine", "fallback"])
    assert not out.exists()


@pytest.mark.skipif("_gpu_stack_present()", reason="TensorRT and a GPU are present: nothing is missing here")
def test_gpu_target_falls_back_and_says_why(tiny_onnx, tmp_path, capsys):
    """The shipped GPU profile (fallback onnxruntime-cpu) on a machine without TensorRT/GPU: exit 0, and every
    TensorRT engine is reported as a fallback, skipped or failed, with the reason."""
    rc = main(["build", str(tiny_onnx), "--target", "dgpu", "--out", str(tmp_path / "b"), "--json"])
    assert rc == 0
    built = json.loads((tmp_path / "b" / "build.json").read_text())
    rows = built["engines"] if isinstance(built, dict) else built
    trt = [r for r in rows if r["spec"]["backend"] == "tensorrt"]
    assert trt and all(r["status"] in ("fallback", "skipped", "failed") and "TensorRT" in r["reason"] for r in trt)
    # no QDQ file was given: the INT8 engine is asked for and not built, which says so (never a quiet skip)
    assert all(r["status"] == "failed" and "no INT8 QDQ ONNX" in r["reason"] for r in trt if r["spec"]["precision"] == "int8")
    assert any(r["status"] in ("built", "fallback") and r["engine"] for r in rows)


@pytest.fixture()
def corrupt_onnx(tmp_path) -> Path:
    p = tmp_path / "broken.onnx"
    p.write_bytes(b"\x08\x07garbage that is not a protobuf" * 8)
    return p


def test_corrupt_onnx_build(corrupt_onnx, tmp_path, capsys):
    expect_error(capsys, ["build", corrupt_onnx, "--out", tmp_path / "b"], ["broken.onnx"])
    assert not (tmp_path / "b").exists()


def test_corrupt_onnx_bench(corrupt_onnx, capsys):
    expect_error(capsys, ["bench", corrupt_onnx, "--seconds", "0.05"], ["broken.onnx"])


def test_corrupt_onnx_engine(corrupt_onnx):
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.errors import EngineError

    with pytest.raises(EngineError, match="broken.onnx"):
        OrtEngine(corrupt_onnx, precision="fp32")


def test_corrupt_onnx_quantize(corrupt_onnx, tmp_path, capsys):
    expect_error(capsys, ["quantize", corrupt_onnx, "--data", "digits", "--out", tmp_path / "q"], ["broken.onnx"])


# ------------------------------------------------------------------------------------------
# output path and faults while writing
# ------------------------------------------------------------------------------------------
def test_output_path_is_a_file(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("precious")
    expect_error(capsys, ["deploy", DEMO, "--out", f, *FAST], ["taken", "is a file"])
    assert f.read_text() == "precious"


def test_output_parent_is_a_file(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("precious")
    expect_error(capsys, ["deploy", DEMO, "--out", f / "bundle", *FAST], ["taken", "cannot create output directory"])
    assert f.read_text() == "precious"


def test_existing_bundle_needs_force(tmp_path, capsys):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "report.json").write_text("{}")
    expect_error(capsys, ["deploy", DEMO, "--out", out, *FAST], ["bundle", "already exists", "--force"])
    assert [p.name for p in out.iterdir()] == ["report.json"]


def test_two_deploys_to_the_same_output(tmp_path, capsys):
    """While one writer holds the bundle, a second deploy to it stops with one line; the first finishes intact."""
    out = tmp_path / "bundle"
    with atomic_bundle(out) as tmp:
        (tmp / "first.txt").write_text("first writer")
        expect_error(capsys, ["deploy", DEMO, "--out", out, *FAST], ["bundle", "another edgerep process"])
    assert sorted(p.name for p in out.iterdir()) == ["first.txt"]
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_no_space_left_while_writing_the_bundle(tmp_path, capsys, monkeypatch):
    """ENOSPC from the first file written into the bundle (simulated: torch.save writes a little, then fails)."""
    def full_disk(obj, f, *a, **k):  # noqa: ARG001
        f.write(b"\0" * 1024)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "bundle"
    expect_error(capsys, ["deploy", DEMO, "--out", out, *FAST], ["bundle", "no space left", "free some space"])
    nothing_left(out)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("err,words", [(errno.EACCES, "permissions"), (errno.EROFS, "read-only")])
def test_os_error_while_writing_the_bundle(err, words, tmp_path, capsys, monkeypatch):
    """Permission denied / read-only file system mid-write (simulated): one line naming the file, exit 2."""
    def refuse(obj, f, *a, **k):  # noqa: ARG001
        name = f.name if isinstance(f.name, str) else os.readlink(f"/proc/self/fd/{f.name}")  # os.fdopen'd file
        raise OSError(err, os.strerror(err), name)

    monkeypatch.setattr(torch, "save", refuse)
    out = tmp_path / "bundle"
    line = expect_error(capsys, ["deploy", DEMO, "--out", out, *FAST], [os.strerror(err), words])
    assert "model.folded.pt" in line
    nothing_left(out)


def test_bad_metric_fails_before_any_work(tmp_path, capsys):
    out = tmp_path / "bundle"
    expect_error(capsys, ["deploy", DEMO, "--out", out, "--metric", "nosuchpkg.metrics:f1", *FAST],
                 ["--metric", "nosuchpkg"])
    nothing_left(out)


def test_cache_dir_is_a_file(tmp_path, capsys):
    (tmp_path / "cache").write_text("x")
    out = tmp_path / "bundle"
    expect_error(capsys, ["deploy", DEMO, "--out", out, "--cache-dir", tmp_path / "cache", *FAST],
                 ["--cache-dir", "not a directory"])
    nothing_left(out)


@pytest.mark.parametrize("sig,code,words", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_signal_mid_deploy(sig, code, words, tmp_path):
    out = tmp_path / "bundle"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "edgerep", "deploy", str(DEMO), "--out", str(out), *FAST],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, cwd=tmp_path)
    deadline = time.time() + 180
    while time.time() < deadline and not [q for q in tmp_path.iterdir() if TMP_MARK in q.name]:
        if p.poll() is not None:
            pytest.fail(f"deploy ended before it could be interrupted: {p.stderr.read()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err[-2000:]
    line = one_error_line(err, "deploy")
    assert words in line and "nothing partial" in line
    nothing_left(out)


# ------------------------------------------------------------------------------------------
# --debug shows the traceback (before or after the command name)
# ------------------------------------------------------------------------------------------
def test_debug_shows_traceback_of_a_data_error(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 8, 8), np.uint8))
    rc, err = run_cli(capsys, "deploy", "--debug", DEMO, "--data", tmp_path / "d.npz", "--out", tmp_path / "b")
    assert rc == 2 and "Traceback (most recent call last)" in err and "DataError" in err
    assert err.strip().splitlines()[-1].startswith("edgerep deploy: error:") and "no array 'x'" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_traceback(where, tmp_path, capsys):
    (tmp_path / "t.pt").write_bytes(DEMO.read_bytes()[:1000])
    args = ["deploy", str(tmp_path / "t.pt"), "--out", str(tmp_path / "b")]
    argv = ["--debug", *args] if where == "before" else [args[0], "--debug", *args[1:]]
    rc, err = run_cli(capsys, *argv)
    assert rc == 2
    assert "Traceback (most recent call last)" in err and "CheckpointError" in err
    assert err.strip().splitlines()[-1].startswith("edgerep deploy: error:")
