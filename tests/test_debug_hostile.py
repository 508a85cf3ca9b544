"""`edgerep debug` names the layer the hostile construction broke on the detection and super-resolution
hostile benchmarks (the classification one is tests/test_debug.py), from each layer's own (isolated)
error; and on a chain where the accumulated error crosses the threshold at an innocent layer, the
isolated measure still names the broken one."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CKPTS = ROOT / "examples" / "checkpoints"


def _bench(name: str):
    """A benchmark module (benchmarks/NAME.py): the tests quantize with the benchmarks' own plain PTQ."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _hostile_bundle(tmp: Path, name: str, bench: str, calib):
    """Deploy examples/checkpoints/NAME (small sample counts, check included) and write its plain PTQ file
    with benchmarks/BENCH.py's ``plain_ptq`` on ``calib(meta)``: (the checkpoint's hostile notes, bundle,
    plain file)."""
    from edgerep.checkpoint import load_checkpoint
    from edgerep.pipeline import DeployOptions, deploy

    ckpt = CKPTS / name
    res = deploy(DeployOptions(checkpoint=ckpt, out=tmp / "bundle", eval_samples=16, calib_samples=16,
                               bench_seconds=0.02, bench_warmup=1, cache_dir=tmp / "cache", max_drop_from_task=True))
    meta = load_checkpoint(ckpt).meta
    plain = tmp / "plain.int8.onnx"
    _bench(bench).plain_ptq(res.out / "model.fp32.onnx", plain, calib(meta))
    return meta.extra["hostile"], res.out, plain


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """The hostile demo detector deployed, and its plain onnxruntime PTQ file (benchmarks/detect_ptq.py's
    plain_ptq, whole graph) calibrated on 32 scenes calib images."""
    from edgerep.data.base import Preprocess
    from edgerep.data.scenes import ScenesDataset

    return _hostile_bundle(tmp_path_factory.mktemp("debug-det"), "repdet_scenes_hostile.pt", "detect_ptq",
                           lambda meta: ScenesDataset("calib", Preprocess.from_meta(meta), n=32))


@pytest.fixture(scope="module")
def sr(tmp_path_factory):
    """The hostile ECBSR x2 deployed, and its plain onnxruntime PTQ file (benchmarks/sr_ptq.py's plain_ptq)
    calibrated on the photos calib split's patches."""
    from edgerep.data.photos import PhotosDataset
    from edgerep.data.sr import sr_preprocess

    return _hostile_bundle(tmp_path_factory.mktemp("debug-sr"), "ecbsr_x2_hostile.pt", "sr_ptq",
                           lambda meta: PhotosDataset("calib", preprocess=sr_preprocess(meta)))


@pytest.mark.slow  # one deploy of the demo detector (check included) and a plain PTQ: ~1-3 min on 2 loaded cores
def test_debug_names_the_detector_block_the_construction_broke(detector):
    """examples/make_hostile_detector.py collapses channels of stages.1.0 and stages.2.0; the consumers'
    identity BNs explode: stages.1.1 (first) and stages.2.1 are what plain PTQ breaks."""
    from edgerep.quant.debug import debug_bundle

    hostile, bundle, plain = detector
    res = debug_bundle(bundle, int8=plain, search=False, isolated_samples=16).to_dict()
    assert res["result"]["culprit_block"] == hostile["expected_layers"][0] == "backbone.stages.1.1"
    assert res["result"]["culprit_branch"] == "identity-BN"
    assert sorted(res["culprit"]["check_channels"]) == hostile["collapsed"]["backbone.stages.1.0"]
    names = {r["node"]: r["block"] for r in res["layers"]}
    assert [names[n] for n in res["broken"]] == hostile["expected_layers"]  # no other layer is broken alone


@pytest.mark.slow  # one deploy of the demo ECBSR (check included) and a plain PTQ: ~40 s on 2 loaded cores
def test_debug_names_a_body_block_the_sr_construction_broke(sr):
    """examples/make_sr_hostile.py scales output channels 0 and 5 of body blocks 0-4 by 32 (their next
    block's inputs by 1/32): the per-tensor activation ranges the blocks after them read are 32x too wide.
    The first layer reading such a tensor is backbone.1, the culprit. The residual tail (backbone.5) reads
    one too, and has the largest own error (it is the noisiest layer alone even on the clean ECBSR: 23 dB
    vs 36-42 dB for the body), so naming the worst layer would name it."""
    from edgerep.quant.debug import debug_bundle

    hostile, bundle, plain = sr
    assert hostile["blocks"] == [0, 1, 2, 3, 4] and hostile["channels"] == [0, 5]
    res = debug_bundle(bundle, int8=plain, search=False, isolated_samples=16).to_dict()
    assert res["result"]["culprit_block"] == "backbone.1"
    own = {r["block"]: r["isolated_sqnr_db"] for r in res["layers"]}
    assert own["backbone.0"] > 30 > 20 > own["backbone.1"]  # the 8-bit image input is no culprit
    assert min(own, key=own.get) == "backbone.5"  # the worst own error is the tail's: "worst" would be wrong
    assert sorted(res["culprit"]["check_channels"]) == hostile["channels"]  # the check's range setters
    check = {r["name"]: r for r in json.loads((bundle / "report.json").read_text())["check"]["layers"]}
    attr = check["backbone.1"]["attribution"]
    dom = attr.get("dominant_branch")
    assert res["culprit"]["branch"] == (attr["branches"].get(dom, dom) if dom else None)  # the check's words
    assert res["culprit"]["branch_note"] == attr["summary"]


def _chain(path_fp32: Path, path_q: Path, n: int, broken: int, inputs: np.ndarray, rng) -> list[tuple]:
    """A chain of ``n`` 1x1 convs + ReLU (8 channels) and its QDQ file: each layer's input quantized with a
    coarse step, 0.2 of its RMS on ``inputs`` (~25 dB alone: every layer adds a little error), layer
    ``broken``'s weights rounded to 5 levels (broken alone). Returns each layer's (weight, dequantized
    weight, bias, activation step)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = 8
    nodes_f, nodes_q, inits_f, inits_q = [], [], [], []
    x, xq = "input", "input"
    act = inputs
    layers = []
    for i in range(n):
        w = (np.eye(c) + 0.3 * rng.standard_normal((c, c))).astype(np.float32).reshape(c, c, 1, 1)
        b = (0.1 * rng.standard_normal(c)).astype(np.float32)
        inits_f += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes_f += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}"),
                    helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        step = float(np.abs(w).max()) / (2 if i == broken else 127)  # layer ``broken``: 5 weight levels
        wq = np.clip(np.round(w / step), -127, 127).astype(np.int8)
        a_scale = np.float32(0.2 * np.sqrt(np.mean(act ** 2)))
        layers.append((w[:, :, 0, 0], (wq.astype(np.float32) * np.float32(step))[:, :, 0, 0], b, a_scale))
        act = np.maximum(np.einsum("oi,nihw->nohw", w[:, :, 0, 0], act) + b[None, :, None, None], 0)
        inits_q += [numpy_helper.from_array(wq, f"w{i}_quantized"), numpy_helper.from_array(np.float32(step), f"ws{i}"),
                    numpy_helper.from_array(np.int8(0), f"wz{i}"), numpy_helper.from_array(b, f"b{i}"),
                    numpy_helper.from_array(a_scale, f"as{i}"), numpy_helper.from_array(np.uint8(0), f"az{i}")]
        nodes_q += [helper.make_node("QuantizeLinear", [xq, f"as{i}", f"az{i}"], [f"q{i}"], name=f"q{i}"),
                    helper.make_node("DequantizeLinear", [f"q{i}", f"as{i}", f"az{i}"], [f"dq{i}"], name=f"dq{i}"),
                    helper.make_node("DequantizeLinear", [f"w{i}_quantized", f"ws{i}", f"wz{i}"], [f"wdq{i}"],
                                     name=f"wdq{i}"),
                    helper.make_node("Conv", [f"dq{i}", f"wdq{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}"),
                    helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = xq = f"r{i}"
    io = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", c, 4, 4]),
          helper.make_tensor_value_info(x, TensorProto.FLOAT, None)]
    for nodes, inits, path in ((nodes_f, inits_f, path_fp32), (nodes_q, inits_q, path_q)):
        m = helper.make_model(helper.make_graph(nodes, "chain", io[:1], io[1:], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
        onnx.save(m, str(path))
    return layers


def test_isolated_error_names_the_broken_layer_where_the_accumulated_error_crosses_earlier(tmp_path):
    """Eight layers each adding a little error: the accumulated SQNR sinks below 20 dB at an innocent
    layer; only layer 6 is broken alone, and it is the culprit."""
    from edgerep.quant.debug import DebugBundle, find_culprit, layer_table

    rng = np.random.default_rng(0)
    f, q = tmp_path / "chain.fp32.onnx", tmp_path / "chain.int8.onnx"
    x = np.abs(rng.standard_normal((32, 8, 4, 4))).astype(np.float32) * 2
    layers = _chain(f, q, 8, 6, x, rng)
    stub = DebugBundle(tmp_path, f, q, {}, {}, {})
    rows = layer_table(stub, f, q, x, isolated_samples=32)
    acc_first = next(r.index for r in rows if r.sqnr_db < 20)
    own = [r.isolated_sqnr_db for r in rows]
    assert acc_first < 6, [r.sqnr_db for r in rows]  # the accumulated curve crosses early
    assert all(v > 20 for i, v in enumerate(own) if i != 6) and own[6] < 20, own
    # each own error is exactly its input quantizer + its weights on the FP32 input (numpy), nothing else:
    # not the rounding of its output quantizer (the next layer's input, counted there)
    act = x.astype(np.float64)
    for row, (w, wdq, b, step) in zip(rows, layers):
        conv = lambda a, k: np.maximum(np.einsum("oi,nihw->nohw", k, a) + b[None, :, None, None], 0)  # noqa: E731
        want, got = conv(act, w), conv(np.clip(np.round(act / step), 0, 255) * step, wdq)
        sqnr = 10 * np.log10(np.sum(want ** 2) / np.sum((want - got) ** 2))
        assert row.isolated_sqnr_db == pytest.approx(sqnr, abs=0.05), (row.index, row.isolated_sqnr_db, sqnr)
        act = want
    c = find_culprit(rows)
    assert c.row.index == 6 and c.rule == "first-broken" and c.broken == ["conv6"]
