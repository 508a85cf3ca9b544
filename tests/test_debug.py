"""`edgerep debug`: on the quant-hostile digits RepVGG (the classification hostile benchmark's model) the
culprit (from each layer's own, isolated error) is the layer and branch the construction broke; the
float-set search meets its budget and no single layer of its result can go back to INT8; bad bundles are
one line, exit 2."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edgerep", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The hostile construction of benchmarks/hostile_ptq.py on the shipped digits RepVGG, deployed, and its
    plain PTQ file (min-max, per-tensor weights, no equalization or bias correction) that loses accuracy."""
    from edgerep.checkpoint import load_checkpoint, save_checkpoint
    from edgerep.data import open_dataset
    from edgerep.quant.calibrate import calibrate
    from edgerep.quant.hostile import hostile_digits
    from edgerep.quant.qdq import QdqConfig, write_qdq

    tmp = tmp_path_factory.mktemp("debug")
    loaded = load_checkpoint(CKPT)
    meta = loaded.meta
    train = open_dataset("digits", split="train", meta=meta)
    h = hostile_digits(loaded.model, meta.input_shape, train)
    ckpt = tmp / "hostile_digits.pt"
    save_checkpoint(ckpt, h.model, meta)
    bundle = tmp / "bundle"
    r = _cli("deploy", str(ckpt), "-o", str(bundle), "--bench-seconds", "0.02", "--calib-samples", "64",
             "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    plain = tmp / "plain.int8.onnx"
    cal = calibrate(bundle / "model.fp32.onnx", open_dataset("digits", split="calib", meta=meta), method="minmax",
                    cache_dir=tmp / "cache")
    write_qdq(bundle / "model.fp32.onnx", plain, cal, QdqConfig(activation="u8", per_channel=False,
                                                                 bias_correction=False))
    return h, bundle, plain


def test_debug_names_the_layer_and_branch_the_construction_broke(hostile, tmp_path):
    h, bundle, plain = hostile
    html = tmp_path / "debug.html"
    r = _cli("debug", str(bundle), "--int8", str(plain), "--no-search", "--json", "--html", str(html))
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["schema"] == "edgerep.debug/2"
    assert doc["note"] == "per-layer: QDQ simulated with fusions off; end-to-end: the optimized session"
    assert doc["data"]["role"] == "selection" and "splits.json" in doc["data"]["source"]
    # the first consumer of a collapsed producer (identity-BN gamma/sigma exploded) is the culprit
    assert doc["result"]["culprit_block"] == h.expected_layers[0] == "stage2.1"
    assert doc["result"]["culprit_branch"] == "identity-BN"
    culprit = doc["culprit"]
    assert sorted(culprit["check_channels"]) == h.collapsed["stage2.0"]
    assert culprit["isolated_sqnr_db"] < 10 and culprit["drop_db"] > 20  # alone and accumulated, it loses tens of dB
    names = {r["node"]: r["block"] for r in doc["layers"]}
    assert [names[n] for n in doc["broken"]] == h.expected_layers  # both broken layers, no other
    assert doc["isolated"]["images"] == 32 and doc["isolated"]["passes"] == 1 + len(doc["layers"])
    assert set(doc["measures"]) >= {"isolated_sqnr_db", "sqnr_db"}  # which number is which
    before = [r for r in doc["layers"] if r["index"] < culprit["index"]]
    assert before and all(r["sqnr_db"] > 25 and r["isolated_sqnr_db"] > 25 for r in before)
    assert doc["end_to_end"]["top1_drop"] >= 1.0  # the plain PTQ file really is broken end to end
    page = html.read_text()
    assert "data:image/png;base64," in page and "stage2.1" in page and "own SQNR" in page


def test_debug_of_the_bundle_file_compares_against_the_equalized_source(hostile):
    """The bundle's own INT8 file was quantized from the equalized FP32 model: per-layer numbers are
    against that (an unequalized reference would read ~0 dB at every layer) and the recipe reproduces it;
    no layer is broken alone, so the culprit is the layer with the lowest own SQNR."""
    from edgerep.quant.debug import debug_bundle

    h, bundle, _ = hostile
    res = debug_bundle(bundle, search=False)
    assert "equalized" in res.reference
    assert all(r.sqnr_db > 20 and r.isolated_sqnr_db > 20 for r in res.layers)
    c = res.culprit
    assert c.rule == "worst-own" and not c.broken and c.row.block in h.expected_layers
    assert c.row.isolated_sqnr_db == min(r.isolated_sqnr_db for r in res.layers)
    assert "reproduced exactly" in res.search_note or res.search_note.startswith("not asked")
    # each layer is compared where the next layer reads it (after its ReLU and output Q/DQ), in both files
    import onnx

    for path, attr in ((bundle / "model.int8.onnx", "tensor_int8"), (bundle / "model.fp32.onnx", "tensor_fp32")):
        nodes = {n.name: n for n in onnx.load(str(path)).graph.node}
        for row, nxt in zip(res.layers, res.layers[1:]):
            if nxt.node.startswith("/stage"):  # a conv reads the previous conv's handed-on tensor directly
                assert nodes[nxt.node].input[0] == getattr(row, attr), (row.node, attr)


def test_search_result_meets_the_budget_and_no_layer_can_return_to_int8(hostile):
    from edgerep.quant.debug import (Budget, Scorer, bundle_recipe, debug_bundle, load_data, open_bundle,
                                     reference_file)

    h, bundle, _ = hostile
    lines: list[str] = []
    res = debug_bundle(bundle, min_sqnr_db=40.0, say=lines.append)
    s = res.search
    assert s is not None and s.met and s.float_layers, res.search_note
    assert any(line.startswith("step 1 (start)") for line in lines)  # each step printed as it goes
    assert s.files_written == len({frozenset(t.float_layers) for t in s.steps})
    # ranked by each layer's own error (the bundle keeps no layer in float: the ranking is on its own file)
    assert not res.excluded_in_bundle
    assert s.ranking == [r.node for r in sorted(res.layers, key=lambda r: (-r.isolated_nsr, r.index))]
    # re-measured independently of the search: the result meets, each single removal misses
    b = open_bundle(bundle)
    d = load_data(b)
    import tempfile

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        ref, _ = reference_file(b, tmp)
        rec = bundle_recipe(b, ref, tmp)
        scorer = Scorer(b.fp32, d.x, d.y, b.session_config)
        budget = Budget(min_sqnr_db=40.0)
        f = tmp / "check.onnx"
        rec.write(f, s.float_layers)
        assert budget.met(scorer(f))
        for n in s.float_layers:
            rec.write(f, [k for k in s.float_layers if k != n])
            assert not budget.met(scorer(f)), n


def test_search_bisection_and_pruning_on_a_known_score():
    """A synthetic monotone score: layers a and c together are needed; bisection over the ranking then
    pruning must return exactly {a, c}."""
    from edgerep.quant.debug import Budget, Score, search_float_set

    calls = []

    def score(layers):
        calls.append(tuple(layers))
        return Score(sqnr_db=10.0 + 20.0 * ("a" in layers) + 15.0 * ("c" in layers), cosine=1.0)

    res = search_float_set(["a", "b", "c", "d", "e"], score, Budget(min_sqnr_db=40.0))
    assert res.met and sorted(res.float_layers) == ["a", "c"]
    assert res.files_written == len(set(map(frozenset, calls))) == len(calls)


def test_top1_budget_counts_points():
    from edgerep.quant.debug import Budget, Score

    b = Budget(max_drop=0.5)
    assert b.met(Score(30.0, 0.99, 97.0, 0.5)) and b.met(Score(30.0, 0.99, 97.5, 0.0))
    assert not b.met(Score(60.0, 1.0, 96.9, 0.56)) and not b.met(Score(60.0, 1.0))  # no top-1: not met


def test_debug_refuses_the_test_split_unless_asked(hostile):
    from edgerep.quant.debug import load_data, open_bundle

    _, bundle, _ = hostile
    b = open_bundle(bundle)
    sel = load_data(b)
    test = load_data(b, use_test=True)
    assert sel.role == "selection" and test.role == "test"
    assert len(sel.x) == len(json.loads((bundle / "splits.json").read_text())["selection"])
    assert "TEST split" in test.source and "TEST" not in sel.source
    assert not np.array_equal(sel.x[:5], test.x[:5])


@pytest.mark.parametrize("damage", ["no-dir", "no-int8", "no-splits", "bad-report", "splits-differ"])
def test_bad_bundle_is_exit_2_with_one_line(hostile, tmp_path, damage):
    _, bundle, _ = hostile
    b = tmp_path / "b"
    if damage != "no-dir":
        shutil.copytree(bundle, b, ignore=shutil.ignore_patterns("loadgen"))
    if damage == "no-int8":
        (b / "model.int8.onnx").unlink()
    elif damage == "no-splits":
        (b / "splits.json").unlink()
    elif damage == "bad-report":
        (b / "report.json").write_text("{not json")
    elif damage == "splits-differ":  # the images re-opened are not the ones deploy chose on
        doc = json.loads((b / "splits.json").read_text())
        doc["selection"] = doc["selection"][1:]
        (b / "splits.json").write_text(json.dumps(doc))
    r = _cli("debug", str(b))
    assert r.returncode == 2, (r.returncode, r.stderr[-1500:])
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    want = {"no-dir": "no such bundle", "no-int8": "model.int8.onnx", "no-splits": "splits.json",
            "bad-report": "report.json", "splits-differ": "not the one splits.json names"}[damage]
    assert want in lines[0]
