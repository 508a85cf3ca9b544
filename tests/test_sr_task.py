"""`edgerep deploy` of a super-resolution checkpoint (task sr) end to end on a tiny ECBSR and a small folder of
HR photo crops: PSNR / SSIM in dB with image counts in report.json (the /2 schema), the drop in dB against the
unfolded model, the INT8 output's PSNR against FP32 beside it, the gate's --max-drop in dB, choices scored by
PSNR on the selection split, the LR method in the bundle; and the INT8 file's PSNR recomputed from the bundle and
the photos splits.json names equals the report's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgerep.blocks.testing import randomize_
from edgerep.checkpoint import CheckpointMeta, save_checkpoint
from edgerep.cli import main
from edgerep.models import create_model

FAST = ["--bench-seconds", "0.2", "--no-check", "--calib-samples", "64"]


def _photo_folder(root: Path, n: int = 10) -> Path:
    """``n`` HR crops (96 x 96) of scikit-image's astronaut, saved as PNG: 10 split by photo 6 / 1 / 1 / 2."""
    from PIL import Image
    from skimage import data

    img = data.astronaut()
    root.mkdir(parents=True)
    for i in range(n):
        top, left = 40 * (i // 5) + 60, 80 * (i % 5) + 10
        Image.fromarray(img[top:top + 96, left:left + 96]).save(root / f"crop{i:02d}.png")
    return root


def _tiny_sr_checkpoint(path: Path) -> Path:
    """A tiny ECBSR x2 (1 body block, 8 channels) near identity-plus-nearest: random small weights."""
    torch.manual_seed(0)
    m = randomize_(create_model("ecbsr_x2", module_nums=1, channel_nums=8), seed=0)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(0.3)
    meta = CheckpointMeta(arch="ecbsr_x2", arch_kwargs={"module_nums": 1, "channel_nums": 8}, input_shape=(3, 24, 24),
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), task="sr")
    save_checkpoint(path, m.eval(), meta)
    return path


@pytest.fixture(scope="module")
def sr_bundle(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("sr")
    folder = _photo_folder(base / "photos_hr")
    ckpt = _tiny_sr_checkpoint(base / "tiny_sr.pt")
    out = base / "bundle"
    rc = main(["deploy", str(ckpt), "--data", str(folder), "--out", str(out), "--max-drop", "3.0",
               "--cache-dir", str(base / "cache"), *FAST])
    assert rc == 0
    return out, folder


def test_report_has_psnr_ssim_in_db_with_counts_and_the_drop_in_db(sr_bundle):
    out, _ = sr_bundle
    rep = json.loads((out / "report.json").read_text())
    assert rep["task"]["name"] == "sr" and rep["task"]["metric"] == "psnr"
    base = rep["baseline"]["accuracy"]
    assert base["metric"] == "psnr" and base["unit"] == "dB" and base["samples"] == 2 and 0 < base["ssim"] <= 1
    int8 = next(e for e in rep["engines"] if e["precision"] == "int8")
    acc, drop = int8["accuracy"], int8["drop"]
    assert acc["unit"] == "dB" and acc["samples"] == 2 and acc["scale"] == 2
    assert drop["of"] == "psnr" and drop["unit"] == "dB"
    assert drop["value"] == pytest.approx(base["value"] - acc["value"], abs=2e-4)
    assert 20.0 < acc["output_psnr_db"] < 999.0  # INT8 moved the picture, measurably
    assert rep["quantization"]["reference"]["measure"].startswith("PSNR drop (dB")
    gate = [c for c in rep["gate"]["checks"] if c["name"] == "max_drop"]
    assert gate and all("dB" in c["message"] for c in gate)
    sr_files = json.loads((out / "sr" / "test.json").read_text())
    assert "Pillow" in sr_files["lr_method"] and sr_files["scale"] == 2  # the LR method is in the bundle


def test_the_int8_psnr_recomputed_from_the_bundle_and_the_test_photos_equals_the_report(sr_bundle):
    import onnxruntime as ort

    from edgerep.bench.sr_metrics import aggregate, image_metrics
    from edgerep.data.sr import bicubic_downscale, modcrop, read_rgb

    out, folder = sr_bundle
    rep = json.loads((out / "report.json").read_text())
    int8 = next(e for e in rep["engines"] if e["precision"] == "int8")
    splits = json.loads((out / "splits.json").read_text())
    test_ids = _role_ids(splits, "test")
    assert len(test_ids) == 2
    pol = rep["quantization"]["cpu_policy"]
    so = ort.SessionOptions()
    for k, v in (pol.get("session_config") or {}).items():
        so.add_session_config_entry(k, v)
    sess = ort.InferenceSession(str(out / "model.int8.onnx"), so, providers=["CPUExecutionProvider"])
    scores = []
    for sid in test_ids:
        hr = modcrop(read_rgb(folder / sid.split("/", 1)[1]), 2)
        lr = bicubic_downscale(hr, 2)
        x = (lr.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0))
        y = sess.run(None, {"input": x})[0][0]
        scores.append(image_metrics(y, hr.transpose(2, 0, 1), 2, layout="chw"))
    assert aggregate(scores).psnr == pytest.approx(int8["accuracy"]["value"], abs=1e-4)
    assert aggregate(scores).ssim == pytest.approx(int8["accuracy"]["ssim"], abs=1e-5)


def _role_ids(splits: dict, role: str) -> list[str]:
    """The sample ids splits.json names for ``role`` (whatever nesting the file uses)."""
    entry = splits.get("roles", splits).get(role) if isinstance(splits.get("roles", splits), dict) else None
    if entry is None:
        entry = splits[role]
    ids = entry.get("ids") if isinstance(entry, dict) else entry
    return list(ids)


def test_gate_max_drop_is_in_db_for_sr(sr_bundle):
    out, _ = sr_bundle
    rep = json.loads((out / "report.json").read_text())
    int8 = next(e for e in rep["engines"] if e["precision"] == "int8")
    d = int8["drop"]["value"]
    assert main(["gate", str(out / "report.json"), "--max-drop", f"{d + 0.01:.4f}"]) == 0
    if d > 0.002:
        assert main(["gate", str(out / "report.json"), "--max-drop", f"{d / 2:.4f}"]) == 1


def test_sr_deploy_exports_one_file_for_patches_and_whole_images(sr_bundle):
    import onnx

    out, _ = sr_bundle
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out / "model.int8.onnx")).graph.input[0]
            .type.tensor_type.shape.dim]
    assert dims[2:] == ["height", "width"]


def test_report_html_shows_the_crop_with_psnr(sr_bundle):
    out, _ = sr_bundle
    info = json.loads((out / "sr" / "crop.json").read_text())
    assert set(info["panels"]) == {"bicubic", "unfolded FP32", info["engine"], "HR"}
    rep = json.loads((out / "report.json").read_text())
    int8 = next(e for e in rep["engines"] if e["precision"] == "int8")
    # the picture's INT8 whole-image PSNR is the first test image's, as sr/<engine>.json scores it
    per = json.loads((out / int8["accuracy"]["scores_file"]).read_text())["images"][0]
    assert info["image"] == per["id"] and rep["task"]["examples"]["files"] == ["sr/crop.png"]
    assert info["panels"][info["engine"]]["psnr_db"] == pytest.approx(per["psnr_db"], abs=1e-5)
    html = (out / "report.html").read_text()
    assert 'id="sr-crop"' in html and "bicubic, unfolded FP32, INT8, HR" in html
    assert "INT8: PSNR / SSIM" in html and "top-1 –" not in html  # the gate's headline speaks dB
    assert (out / "sr" / "crop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_selection_score_is_the_psnr_drop_in_db_against_the_reference():
    """A choice is scored by PSNR on the selection images (dB), not by a cosine of the output tensor."""
    from edgerep.bench.sr_metrics import image_metrics
    from edgerep.data.photos import PhotosDataset
    from edgerep.data.sr import bicubic_upscale
    from edgerep.tasks import get_task

    val = PhotosDataset("val")
    lr, hr = val.pair(0)
    ref = (bicubic_upscale(lr, 2).transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    noisy = (ref + np.random.default_rng(0).normal(0, 0.01, ref.shape)).astype(np.float32)
    s = get_task("sr").selection_score(noisy, None, ref, dataset=val)
    want = (image_metrics(ref[0], hr.transpose(2, 0, 1), 2, layout="chw").psnr
            - image_metrics(noisy[0], hr.transpose(2, 0, 1), 2, layout="chw").psnr)
    assert s.unit == "dB" and want > 0.1 and s.drop == pytest.approx(want, abs=1e-9)
    assert "dB" in s.verdict(0.05).text


def test_whole_images_of_different_sizes_are_refused_at_load_naming_the_set(tmp_path, capsys):
    from PIL import Image
    from skimage import data

    img = data.astronaut()
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(10):  # every photo its own size (the test set's two differ) and its own pixels (the
        s = 96 + 8 * i   # selection role's 96 x 96 patches must not repeat a calibration patch)
        Image.fromarray(img[8 * i:8 * i + s, 16 * i:16 * i + s]).save(folder / f"p{i}.png")
    ckpt = _tiny_sr_checkpoint(tmp_path / "tiny.pt")
    rc = main(["deploy", str(ckpt), "--data", str(folder), "--out", str(tmp_path / "b"), *FAST])
    assert rc == 2
    assert "test set" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_quantize_command_serves_the_sr_task_like_deploy(tmp_path):
    """`edgerep quantize` of an SR checkpoint: a file for any size, choices scored by selection PSNR (dB)."""
    import onnx

    folder = _photo_folder(tmp_path / "hr")
    ckpt = _tiny_sr_checkpoint(tmp_path / "tiny.pt")
    out = tmp_path / "q"
    assert main(["quantize", str(ckpt), "--data", str(folder), "-o", str(out), "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    res = json.loads(next(out.glob("*.json")).read_text())
    assert res["reference"]["measure"].startswith("PSNR drop (dB")
    assert res["max_drop"] == 0.1  # no --max-drop: SR's default budget, in dB
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(out / "model.int8.onnx")).graph.input[0]
            .type.tensor_type.shape.dim]
    assert dims[2:] == ["height", "width"]


def test_selection_score_pools_each_photos_patches_into_its_psnr():
    """Patches of one photo pool their squared errors (the photo scores as one image), and photos are averaged:
    a mean of per-patch PSNRs would let a near-flat patch, whose PSNR moves by dBs on a tiny error, decide."""
    from skimage.metrics import peak_signal_noise_ratio

    from edgerep.bench.sr_metrics import rgb_to_y, to_pixels
    from edgerep.data.photos import PhotosDataset
    from edgerep.data.sr import bicubic_upscale
    from edgerep.tasks import get_task

    val = PhotosDataset("val")
    idx = [i for i, it in enumerate(val.items) if it.image in ("chelsea.png", "moon.png")]
    sub = PhotosDataset("val")
    sub.items = [val.items[i] for i in idx]
    ref = np.stack([bicubic_upscale(sub.pair(i)[0], 2).transpose(2, 0, 1) for i in range(len(sub))])
    ref = (ref / 255.0).astype(np.float32)
    rng = np.random.default_rng(1)
    noisy = ref.copy()
    noisy[-1] += rng.normal(0, 0.02, noisy[-1].shape).astype(np.float32)  # one moon patch only
    s = get_task("sr").selection_score(noisy, None, ref, dataset=sub)

    def y(img):
        return rgb_to_y(to_pixels(img, "chw"))[2:-2, 2:-2].ravel()

    def photo_psnr(out, photo):
        rows = [i for i, it in enumerate(sub.items) if it.image == photo]
        hr = np.concatenate([y(sub.pair(i)[1].transpose(2, 0, 1)) for i in rows])
        return peak_signal_noise_ratio(hr, np.concatenate([y(out[i]) for i in rows]), data_range=255.0)

    want = np.mean([photo_psnr(ref, p) - photo_psnr(noisy, p) for p in ("chelsea.png", "moon.png")])
    assert want > 0.01 and s.drop == pytest.approx(want, abs=1e-9)


def test_auto_range_method_for_the_demo_is_chosen_on_seven_selection_photos_never_the_test_photos(tmp_path):
    """The shipped ECBSR demo: on the one selection photo it had, percentile beat minmax by 0.006 dB and then lost
    0.14 dB on the test photos (its clipped output range clips highlights). On the seven-photo selection split the
    simulated drops order the methods as the test photos do, and auto takes minmax, by its selection drop."""
    import onnx

    from edgerep.checkpoint import load_checkpoint
    from edgerep.data.photos import ASSIGNMENT, PhotosDataset
    from edgerep.fold.model import fold_model
    from edgerep.quant.calibrate import calibrate_many
    from edgerep.quant.equalize import equalize_model
    from edgerep.quant.export import export_onnx
    from edgerep.quant.pipeline import AUTO_METHODS, _Judge, _reference_outputs, _write, choose_auto_method
    from edgerep.tasks import get_task

    root = Path(__file__).resolve().parents[1]
    model = load_checkpoint(root / "examples" / "checkpoints" / "ecbsr_x2.pt").model.eval()
    fp32 = tmp_path / "m.onnx"
    export_onnx(fold_model(model), fp32, (3, 48, 48), dynamic_hw=True)
    m = onnx.load(str(fp32))
    equalize_model(m)
    onnx.save(m, str(tmp_path / "eq.onnx"))
    cals = calibrate_many(tmp_path / "eq.onnx", PhotosDataset("calib"), AUTO_METHODS, batch_size=16)
    files = {k: _write(tmp_path / "eq.onnx", tmp_path / f"{k}.onnx", c) for k, c in cals.items()}
    val = PhotosDataset("val")
    x = np.concatenate([b for b, _ in val.batches(64)])
    ref, _ = _reference_outputs(None, fp32, x, 64)
    judge = _Judge(x, None, ref, 64, None, task=get_task("sr"), dataset=val)
    scores = {k: judge.score(f, optimization="disable") for k, f in files.items()}
    chosen, _ = choose_auto_method(scores)
    assert chosen == "minmax", {k: round(s.drop, 4) for k, s in scores.items()}
    assert scores["percentile"].drop - scores["minmax"].drop > 0.02
    assert not set(val.photos()) & set(ASSIGNMENT["test"]) and len(val.photos()) == 7


def test_sr_max_drop_defaults_to_a_tenth_of_a_db_in_deploy_and_a_bare_gate(sr_bundle, capsys):
    """No --max-drop: deploy budgets and gates an SR model at 0.1 dB (0.5 would pass a clipped output range's
    0.14 dB); a classifier keeps 0.5 points; a given value or a negative one (no gate) wins."""
    from edgerep.commands.deploy import _options, add_arguments
    from edgerep.pipeline import effective_max_drop
    from edgerep.tasks import get_task

    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    plain = _options(p.parse_args(["m.pt"]))
    assert effective_max_drop(plain, get_task("sr")) == 0.1 and effective_max_drop(plain, get_task("classify")) == 0.5
    assert effective_max_drop(_options(p.parse_args(["m.pt", "--max-drop", "0.3"])), get_task("sr")) == 0.3
    assert effective_max_drop(_options(p.parse_args(["m.pt", "--max-drop", "-1"])), get_task("sr")) is None
    out, _ = sr_bundle
    capsys.readouterr()
    main(["gate", str(out / "report.json"), "--json"])
    checks = [c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "max_drop"]
    assert checks and all(c["threshold"] == 0.1 for c in checks)


def test_sr_latency_is_timed_on_a_whole_selection_photo_not_a_patch(sr_bundle):
    """The selection split is patches; latency is timed on the first selection photo's whole LR image."""
    out, _ = sr_bundle
    rep = json.loads((out / "report.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    assert all("@" in i for i in _role_ids(splits, "selection"))  # patches
    sources = {e["latency"]["samples_source"] for e in rep["engines"] if e.get("latency")}
    assert sources and all(s.startswith("selection set: the whole LR image of ") for s in sources)
