"""`edgerep fleet deploy` of a detector and of an SR bundle (issues 24, 25): nodes send their shards' detections /
per-image PSNR and SSIM; the lead takes each shard once, scores mAP once with pycocotools against the bundle's
annotations/test.json cut to the images it ran, and averages PSNR over images.

The node's job runs in this process (``edgerep.fleet.node.run_job``, the function Ray runs on a node, as
tests/test_report_schema.py does): 2 shards give the single-host deploy's report to the last digit. The last test
runs the same through a Ray cluster on loopback (a head and 2 nodes, `--node-ip-address 127.0.0.1`)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("pycocotools", reason="pycocotools (the 'detect' extra) is not installed: no mAP")

from edgerep.bench.gate import GateThresholds  # noqa: E402
from edgerep.fleet.deploy import _Job, prepare_shards  # noqa: E402
from edgerep.fleet.gate import gate_fleet  # noqa: E402
from edgerep.fleet.node import run_job  # noqa: E402
from edgerep.fleet.payload import load_reference, payload, read_bundle  # noqa: E402
from edgerep.fleet.payload import test_set as bundle_test_set  # noqa: E402 (not a test)
from edgerep.fleet.report import FleetOutcome, FleetSetup, build_report, markdown, serialized  # noqa: E402
from edgerep.fleet.scoring import lead_scorer, task_of  # noqa: E402
from tests.detect_helpers import pycocotools_stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EVAL = 100  # test (and selection) images of the detector bundle (2 shards of 50); as tests/test_demo_detector.py
KEYS = [("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8")]


@pytest.fixture(scope="module")
def det_bundle(demo_detector_bundle) -> Path:
    """The shipped demo detector deployed on 100 scenes test images (the session's, shared with
    tests/test_demo_detector.py: read only)."""
    return demo_detector_bundle


@pytest.fixture(scope="module")
def sr_bundle(tmp_path_factory) -> Path:
    """A tiny ECBSR x2 deployed on 15 crops of a photo: 3 test images (2 shards of 2 and 1: a mean over shards is
    not the mean over images)."""
    from edgerep.cli import main
    from tests.test_sr_task import FAST, _photo_folder, _tiny_sr_checkpoint

    base = tmp_path_factory.mktemp("fleet-sr")
    folder = _photo_folder(base / "photos_hr", n=15)
    out = base / "bundle"
    rc = main(["deploy", str(_tiny_sr_checkpoint(base / "tiny_sr.pt")), "--data", str(folder), "--out", str(out),
               "--max-drop", "3.0", "--cache-dir", str(base / "cache"), *FAST])
    assert rc == 0
    return out


def _node(k: int) -> SimpleNamespace:
    """Node k as the lead lists it (label hostname-nodeid)."""
    return SimpleNamespace(label=f"n{k}-{str(k) * 8}", node_id=str(k) * 8, hostname=f"n{k}")


class InProcess:
    """What fleet deploy does on the lead (``prepare_shards``, ``lead_scorer``), with each shard's node job run
    here once; ``report(jobs)`` merges any set of answers ((node, shards, retry_of) per job) into a report."""

    def __init__(self, bundle: Path, shards: int, eval_samples: int | None = None):
        b = read_bundle(bundle)
        task, ref = task_of(b), load_reference(b)
        ds, spec, cap, same = bundle_test_set(b, ref.meta, None)
        metas, parts, targets = [], [], []
        for m, s, t in prepare_shards(task, ds, ref.model, shards, limit=eval_samples or cap):
            metas.append(m)
            parts.append(s)
            targets += t
        scorer, source = lead_scorer(task, b, ds, metas, targets or None, same)
        self.bundle = b
        self.setup = FleetSetup(bundle=b, ref=ref, data=spec, same_test_set=same, targets=["x86-cpu"],
                                by_target={"x86-cpu": [_node(0), _node(1)]}, shards=metas, sharded=True, batch=1,
                                scorer=scorer, ground_truth=source)
        job = {"target": "x86-cpu", "fp32": b.fp32, "int8": dict(b.int8), "session_config": b.session_config,
               "bench": {"enabled": False}, "x_bench": parts[0]["x"][:1], "input_shape": list(parts[0]["x"].shape[1:]),
               "task": task}
        self.results = [run_job(payload(b), job, s) for s in parts]  # one answer per shard

    def report(self, jobs: list[tuple[int, int, int | None]]) -> dict:
        """The report of answers ``(node k, shard i, retry_of node)``: node k's answer for shard i."""
        done = []
        for k, i, retry_of in jobs:
            node = _node(k)
            res = {**self.results[i], "hostname": node.hostname, "node_id": node.node_id}
            job = _Job("x86-cpu", node, [i], bench=retry_of is None,
                       retry_of=None if retry_of is None else _node(retry_of).label)
            done.append((job, res))
        return build_report(self.setup, FleetOutcome(done=done, lost=[], failed=[]))


@pytest.fixture(scope="module")
def det_fleet(det_bundle) -> InProcess:
    return InProcess(det_bundle, 2)


@pytest.fixture(scope="module")
def sr_fleet(sr_bundle) -> InProcess:
    return InProcess(sr_bundle, 2)


def _merged(report: dict) -> dict:
    return {(r["name"], r["precision"]): r for r in report["rows"] if r["scope"] == "merged"}


def _single(bundle: Path) -> dict:
    rep = json.loads((bundle / "report.json").read_text())
    return {"baseline": rep["baseline"], **{(e["name"], e["precision"]): e for e in rep["engines"]}}


def _write(report: dict, out: Path) -> dict:
    """The report's files under ``out`` (as fleet deploy writes them); the report without its private keys."""
    for rel, content in report.pop("_files").items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(json.dumps(content))
    report.pop("_artifacts")
    return report


def test_sharded_detector_map_equals_the_single_host_deploy_and_pycocotools(det_fleet, det_bundle, tmp_path):
    report = _write(det_fleet.report([(0, 0, None), (1, 1, None)]), tmp_path)
    single, merged = _single(det_bundle), _merged(report)
    assert set(merged) == set(KEYS) and report["data"]["ground_truth"] == "the bundle's annotations/test.json"
    ref, base = report["reference"]["accuracy"], single["baseline"]["accuracy"]
    assert {k: v for k, v in ref.items() if k != "fidelity"} == {k: v for k, v in base.items() if k != "fidelity"}
    gt = json.loads((det_bundle / "annotations" / "test.json").read_text())
    for key in KEYS:
        m, s = merged[key], single[key]
        acc = m["accuracy"]
        assert (acc["metric"], acc["unit"], m["drop"]["of"], m["drop"]["unit"]) == ("map", "points", "map", "points")
        for f in ("value", "map50", "samples", "instances", "detections", "per_class_ap"):
            assert acc[f] == s["accuracy"][f], (key, f)  # the same floats, not close
        assert acc["samples"] == EVAL and acc["instances"] == len(gt["annotations"]) and m["drop"] == s["drop"]
        name = f"x86-cpu-{key[0]}-{key[1]}"
        assert acc["predictions_file"] == f"predictions/{name}.json"
        preds = json.loads((tmp_path / acc["predictions_file"]).read_text())
        assert preds == json.loads((det_bundle / f"predictions/{key[0]}-{key[1]}.json").read_text())
        stats, _, _ = pycocotools_stats(det_bundle, tmp_path / acc["predictions_file"])  # pycocotools alone
        assert acc["value"] == pytest.approx(max(0.0, stats[0]) * 100, abs=1e-4)
        assert acc["map50"] == pytest.approx(max(0.0, stats[1]) * 100, abs=1e-4)
    shard_rows = [r for r in report["rows"] if r["scope"] == "shard" and r.get("accuracy")]
    assert sorted(r["accuracy"]["samples"] for r in shard_rows) == [EVAL // 2] * 4
    assert all("predictions_file" not in r["accuracy"] or r["accuracy"]["predictions_file"] is None
               for r in shard_rows)  # a shard's own mAP is shown, its predictions are in the merged file
    report["gate"] = gate_fleet(report, GateThresholds(max_drop=0.5)).to_dict()
    drops = [c for c in report["gate"]["checks"] if c["name"] == "max_drop"]
    assert report["gate"]["passed"] and len(drops) == 2 and all("points" in c["message"] for c in drops)
    from schema_check import validate

    validate(json.loads(json.dumps(serialized(report))), "edgerep.fleet-report/2")
    md = markdown(serialized(report))
    assert f"| mAP | {merged[KEYS[1]]['accuracy']['value']:.2f} points | {EVAL} | " \
           f"{merged[KEYS[1]]['drop']['value']:+.2f} points mAP |" in md


def test_a_retried_or_duplicated_shard_counts_once(det_fleet, det_bundle, tmp_path):
    """Node 1's answer for shard 1 and node 0's answer on a retry of it both came back: shard 1 counts once."""
    report = _write(det_fleet.report([(0, 0, None), (1, 1, None), (0, 1, 1)]), tmp_path)
    single, merged = _single(det_bundle), _merged(report)
    for key in KEYS:
        acc = merged[key]["accuracy"]
        assert merged[key]["node"] == "merged (2 shard(s))" and merged[key]["status"] == "built"
        assert (acc["value"], acc["samples"], acc["detections"]) == (single[key]["accuracy"]["value"], EVAL,
                                                                     single[key]["accuracy"]["detections"])
        assert len(json.loads((tmp_path / acc["predictions_file"]).read_text())) == acc["detections"]


def test_the_lead_scores_only_the_images_the_fleet_ran(det_bundle, tmp_path):
    """--eval-samples 10 of the bundle's 100: mAP against annotations/test.json cut to those 10 image ids."""
    fleet = InProcess(det_bundle, 2, eval_samples=10)
    report = _write(fleet.report([(0, 0, None), (1, 1, None)]), tmp_path)
    gt = json.loads((det_bundle / "annotations" / "test.json").read_text())
    ids = {im["id"] for im in gt["images"][:10]}
    cut = {**gt, "images": [im for im in gt["images"] if im["id"] in ids],
           "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    (tmp_path / "gt10.json").write_text(json.dumps(cut))
    for key in KEYS:
        acc = _merged(report)[key]["accuracy"]
        assert acc["samples"] == 10 and acc["instances"] == len(cut["annotations"]) < len(gt["annotations"])
        stats, _, preds = pycocotools_stats(det_bundle, tmp_path / acc["predictions_file"], tmp_path / "gt10.json")
        assert {p["image_id"] for p in preds} <= ids
        assert acc["value"] == pytest.approx(max(0.0, stats[0]) * 100, abs=1e-4)


def test_sharded_sr_psnr_equals_the_single_host_deploy(sr_fleet, sr_bundle, tmp_path):
    report = _write(sr_fleet.report([(0, 0, None), (1, 1, None), (0, 1, 1)]), tmp_path)  # shard 1 twice
    single, merged = _single(sr_bundle), _merged(report)
    assert report["reference"]["accuracy"]["psnr_sum_db"] == pytest.approx(
        single["baseline"]["accuracy"]["psnr_sum_db"], abs=1e-6)
    shard_rows = [r for r in report["rows"] if r["scope"] == "shard" and r.get("accuracy")]
    assert sorted(r["accuracy"]["samples"] for r in shard_rows) == [1, 1, 2, 2]  # uneven shards
    for key in KEYS:
        acc, s = merged[key]["accuracy"], single[key]["accuracy"]
        assert (acc["metric"], acc["unit"], merged[key]["drop"]["unit"]) == ("psnr", "dB", "dB")
        assert acc["samples"] == s["samples"] == 3
        assert acc["value"] == pytest.approx(s["value"], abs=1e-6)  # the single-host PSNR, to 1e-6 dB
        assert acc["psnr_sum_db"] == pytest.approx(s["psnr_sum_db"], abs=1e-6)
        assert acc["ssim"] == pytest.approx(s["ssim"], abs=1e-6)
        assert acc["output_psnr_db"] == pytest.approx(s["output_psnr_db"], abs=1e-4)
        assert merged[key]["drop"]["value"] == pytest.approx(single[key]["drop"]["value"], abs=1e-6)
        rows = json.loads((tmp_path / acc["scores_file"]).read_text())["images"]
        want = json.loads((sr_bundle / "sr" / f"{key[0]}-{key[1]}.json").read_text())["images"]
        assert [r["id"] for r in rows] == [r["id"] for r in want]
        assert [r["psnr_db"] for r in rows] == pytest.approx([r["psnr_db"] for r in want], abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# the same through Ray, on loopback
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fleet_deploy_on_ray_scores_detector_and_sr_shards_as_single_host(det_bundle, sr_bundle, tmp_path):
    """A head and 2 `x86-cpu` nodes on 127.0.0.1 (stopped by process group whatever happens): --shard on the
    detector gives the single-host mAP with the predictions file in the output folder; on the SR bundle the
    single-host PSNR, and the gate's default --max-drop is SR's 0.1 dB."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgerep[fleet]')")
    from edgerep.fleet.deploy import FleetOptions, fleet_deploy
    from edgerep.fleet.local import LocalFleet

    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
           "OMP_NUM_THREADS": "1", "EDGEREP_CACHE_DIR": str(tmp_path / "node-cache")}
    with LocalFleet(["x86-cpu", "x86-cpu"], env=env, log_dir=tmp_path) as fleet:
        det = fleet_deploy(FleetOptions(bundle=det_bundle, address=fleet.address, out=tmp_path / "det", shard=True,
                                        bench_seconds=0.02, timeout_s=240))
        sr = fleet_deploy(FleetOptions(bundle=sr_bundle, address=fleet.address, out=tmp_path / "sr", shard=True,
                                       bench_seconds=0.02, timeout_s=240))
    single = _single(det_bundle)
    for key in KEYS:
        acc = _merged(det.report)[key]["accuracy"]
        assert acc["value"] == single[key]["accuracy"]["value"] and acc["samples"] == EVAL
        stats, _, _ = pycocotools_stats(det_bundle, det.out / acc["predictions_file"])
        assert acc["value"] == pytest.approx(max(0.0, stats[0]) * 100, abs=1e-4)
    assert len({r["node_id"] for r in det.report["rows"] if r["scope"] == "shard"}) == 2
    single = _single(sr_bundle)
    for key in KEYS:
        acc = _merged(sr.report)[key]["accuracy"]
        assert acc["value"] == pytest.approx(single[key]["accuracy"]["value"], abs=1e-6) and acc["samples"] == 3
    assert det.passed and sr.passed, (det.report["gate"], sr.report["gate"])
    drops = [c for c in sr.report["gate"]["checks"] if c["name"] == "max_drop"]
    assert drops and all(c["threshold"] == 0.1 and "dB" in c["message"] for c in drops)
    assert "dB" in (sr.out / "gate.xml").read_text() and "PSNR" in (sr.out / "report.md").read_text()
