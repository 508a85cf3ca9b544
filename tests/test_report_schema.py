"""The report contract (issue 22): the published JSON Schemas in docs/schema/ are the code's, every kind of
output edgerep writes validates against them with `jsonschema`, a wrong unit is refused, and old (/1) reports
are read by `gate` and `diff` through the one migration."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edgerep.cli import main
from edgerep.report.models import KINDS, json_schema
from schema_check import FILES, SCHEMA_DIR, validate, validate_file

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"
V1 = ROOT / "tests" / "data" / "report_v1"


def test_schema_files_are_the_codes_schemas():
    """docs/schema/ holds exactly what `python -m edgerep.report.models --write docs/schema` writes."""
    assert set(FILES) == set(KINDS)
    for schema, (_, name) in KINDS.items():
        assert FILES[schema] == name
        on_disk = json.loads((SCHEMA_DIR / name).read_text())
        assert on_disk == json_schema(schema), \
            f"docs/schema/{name} is stale: run `python -m edgerep.report.models --write docs/schema`"
    assert {p.name for p in SCHEMA_DIR.glob("*.json")} == set(FILES.values())


def test_every_field_is_described():
    """Every property of every schema carries a description (it is the documentation CI authors read)."""
    def walk(node, where):
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                assert prop.get("description"), f"{where}.{name} has no description"
            for k, v in node.items():
                if k != "allOf":  # the metric -> unit rules (if / then), not fields
                    walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")
    for schema in KINDS:
        walk(json_schema(schema), schema)


def test_deploy_bundle_validates(demo_bundle):
    """report.json, manifest.json and splits.json of a real deploy fit their published schemas, and the
    accuracy / drop say their metric, unit and reference."""
    report = validate_file(demo_bundle / "report.json", "edgerep.report/2")
    validate_file(demo_bundle / "manifest.json", "edgerep.manifest/2")
    splits = validate_file(demo_bundle / "splits.json", "edgerep.splits/2")
    assert len(splits["test"]) == report["splits"]["test"]["count"]
    base = report["baseline"]["accuracy"]
    assert (base["task"], base["metric"], base["unit"], base["vs"]) == ("classify", "top1", "%", "labels")
    assert base["value"] == pytest.approx(100.0 * base["correct"] / base["samples"])
    for e in report["engines"]:
        assert e["drop"]["of"] == "top1" and e["drop"]["unit"] == "points" and e["drop"]["vs"] == "unfolded fp32"
        assert e["drop"]["value"] == pytest.approx(base["value"] - e["accuracy"]["value"], abs=1e-4)
        assert "iterations" not in e["latency"] and e["latency"]["queries"] >= 1
        assert "drop_vs_unfolded" not in e


def _bad(doc: dict, schema: str, mutate) -> str:
    """Every message (nested ones too) of the validation error a mutated copy of ``doc`` raises."""
    d = copy.deepcopy(doc)
    mutate(d)
    with pytest.raises(jsonschema.ValidationError) as e:
        validate(d, schema)

    def messages(err) -> list[str]:
        return [err.message] + [m for c in err.context for m in messages(c)]
    return " | ".join(messages(e.value))


def test_a_wrong_unit_is_refused_by_the_schema_and_the_model(demo_bundle):
    """A top-1 in dB, or a top-1 drop in %, does not fit; nor does a drop that does not say what it is of."""
    from pydantic import ValidationError

    from edgerep.report.models import Report

    report = json.loads((demo_bundle / "report.json").read_text())
    assert "'%' was expected" in _bad(report, "edgerep.report/2",
                                      lambda d: d["engines"][0]["accuracy"].update(unit="dB"))
    assert "'points' was expected" in _bad(report, "edgerep.report/2",
                                           lambda d: d["engines"][0]["drop"].update(unit="%"))
    _bad(report, "edgerep.report/2", lambda d: d["engines"][0]["drop"].pop("of"))
    _bad(report, "edgerep.report/2", lambda d: d["engines"][0].update(drop_vs_unfolded=0.0))
    wrong = copy.deepcopy(report)
    wrong["engines"][0]["accuracy"]["unit"] = "dB"
    with pytest.raises(ValidationError, match="accuracy metric 'top1' is in '%', not 'dB'"):
        Report.model_validate(wrong)
    from edgerep.report.models import Drop

    with pytest.raises(ValidationError, match="a drop of 'top1' is in 'points', not '%'"):
        Drop(of="top1", unit="%", value=0.5)
    with pytest.raises(ValidationError, match="a drop of 'psnr' is in 'dB', not 'points'"):
        Drop(of="psnr", unit="points", value=0.5)
    assert Drop(of="psnr", unit="dB", value=0.5).unit == "dB"  # super-resolution: same shape, its own unit


def test_bench_report_validates(demo_bundle, tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["bench", str(demo_bundle), "--iterations", "8", "--warmup", "1", "--timer", "builtin",
               "--log-dir", str(tmp_path / "logs"), "--out", str(out)])
    assert rc == 0
    doc = validate_file(out, "edgerep.bench-report/2")
    assert doc["baseline"]["role"] == "baseline" and all(e["latency"]["queries"] == 8 for e in doc["engines"])


def test_check_output_validates(capsys):
    rc = main(["check", str(DEMO), "--json", "--no-sensitivity", "--calib-limit", "16"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    validate(doc, "edgerep.check/2")
    assert doc["layers"]


def test_fleet_report_validates(demo_bundle):
    """A fleet report merged from one node's job, run in this process (the same function Ray runs on a node)."""
    from types import SimpleNamespace

    from edgerep.bench.gate import GateThresholds
    from edgerep.fleet.counts import shard_counts
    from edgerep.fleet.deploy import _Job
    from edgerep.fleet.gate import gate_fleet
    from edgerep.fleet.node import run_job
    from edgerep.fleet.payload import load_reference, make_shards, payload, read_bundle, test_set
    from edgerep.fleet.report import FleetOutcome, FleetSetup, build_report, serialized
    from edgerep.pipeline import TorchReference

    b = read_bundle(demo_bundle)
    ref = load_reference(b)
    ds, spec, _, same = test_set(b, ref.meta, None)
    s = next(make_shards(ds, TorchReference(ref.model), 1, limit=64))
    s = {**s, "y": np.asarray(s["y"], np.int64)}
    job_spec = {"target": "x86-cpu", "fp32": b.fp32, "int8": dict(b.int8), "session_config": b.session_config,
                "bench": {"enabled": True, "seconds": 0.05, "warmup": 1}, "x_bench": s["x"][:1],
                "input_shape": list(ref.meta.input_shape)}
    res = run_job(payload(b), job_spec, s)
    node = SimpleNamespace(label=f"{res['hostname']}-{res['node_id'][:8]}", node_id=res["node_id"],
                           hostname=res["hostname"])
    meta = {"index": s["index"], "start": s["start"], "stop": s["stop"], "classes": int(s["ref"].shape[1]),
            "reference": shard_counts(s["ref"], s["y"], None)}
    setup = FleetSetup(bundle=b, ref=ref, data=spec, same_test_set=same, targets=["x86-cpu"],
                       by_target={"x86-cpu": [node]}, shards=[meta], sharded=False, batch=1)
    report = build_report(setup, FleetOutcome(done=[(_Job("x86-cpu", node, [0], bench=True), res)], lost=[], failed=[]))
    report["gate"] = gate_fleet(report, GateThresholds()).to_dict()
    doc = serialized(report)
    validate(json.loads(json.dumps(doc)), "edgerep.fleet-report/2")
    scored = [r for r in doc["rows"] if r.get("accuracy")]
    assert scored and all(r["drop"]["of"] == "top1" and r["accuracy"]["samples"] == 64 for r in scored)
    assert report["gate"]["passed"], report["gate"]


# ---- /1 reports, read through the one migration ---------------------------------------------------

def test_v1_bundle_migrates_to_a_valid_v2_report():
    from edgerep.report.migrate import read_report
    from edgerep.report.models import dump

    doc = dump(read_report(V1 / "report.json"))
    validate(json.loads(json.dumps(doc)), "edgerep.report/2")
    v1 = json.loads((V1 / "report.json").read_text())
    for old, new in zip(v1["engines"], doc["engines"]):
        assert new["drop"] == {"of": "top1", "unit": "points", "value": old["drop_vs_unfolded"], "vs": "unfolded fp32"}
        assert new["accuracy"]["value"] == old["accuracy"]["top1"] and new["accuracy"]["correct"] == 357
        assert new["latency"]["queries"] == old["latency"]["iterations"] and "iterations" not in new["latency"]


def test_v1_unlabelled_drop_migrates_as_agreement():
    """/1 wrote 100 - agreement into the same field where no labels existed; /2 says so."""
    from edgerep.report.migrate import migrate_accuracy, migrate_drop

    acc = migrate_accuracy({"samples": 50, "top1": None, "top5": None, "cosine": 0.99, "sqnr_db": 20.0,
                            "psnr_db": 30.0, "top1_agreement": 98.0, "nonfinite": 0, "user": {}})
    assert (acc["metric"], acc["unit"], acc["vs"], acc["value"], acc["correct"]) == \
        ("top1_agreement", "%", "unfolded fp32", 98.0, 49)
    assert migrate_drop(2.0, acc) == {"of": "top1_agreement", "unit": "points", "value": 2.0, "vs": "unfolded fp32"}


def test_gate_reads_a_v1_report_with_its_drop(tmp_path, capsys):
    """`edgerep gate` on main's /1 bundle: the same verdict, and the drop it judged is /1's drop_vs_unfolded."""
    assert main(["gate", str(V1 / "report.json"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    drops = {c["engine"]: c["value"] for c in res["checks"] if c["name"] == "max_drop"}
    v1 = json.loads((V1 / "report.json").read_text())
    assert drops == {f"{e['name']}/{e['precision']}": e["drop_vs_unfolded"] for e in v1["engines"]}
    # the /1 drop decides: raise one engine's drop past the limit and the gate fails on it, naming top1 points
    worse = copy.deepcopy(v1)
    worse["engines"][1]["drop_vs_unfolded"] = 0.84
    (tmp_path / "report.json").write_text(json.dumps(worse))
    assert main(["gate", str(tmp_path / "report.json"), "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    (fail,) = [c for c in res["checks"] if not c["passed"]]
    assert fail["name"] == "max_drop" and fail["value"] == 0.84
    assert "top1 drop vs unfolded fp32 0.84 points" in fail["message"]


def test_diff_reads_a_v1_and_a_v2_bundle(demo_bundle, capsys):
    """`edgerep diff` of main's /1 bundle against a fresh /2 one: engines matched, top-1 and drops read."""
    assert main(["diff", str(V1), str(demo_bundle), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    v1 = json.loads((V1 / "report.json").read_text())
    new = json.loads((demo_bundle / "report.json").read_text())
    by_key = {e["key"]: e for e in d["engines"]}
    for old in v1["engines"]:
        key = f"{old['name']}/{old['precision']}"
        (now,) = [e for e in new["engines"] if f"{e['name']}/{e['precision']}" == key]
        e = by_key[key]
        assert e["top1_base"] == old["accuracy"]["top1"] and e["top1_new"] == now["accuracy"]["value"]
        assert e["drop_base"] == old["drop_vs_unfolded"] and e["drop_new"] == now["drop"]["value"]
        assert e["top1_delta"] == pytest.approx(now["accuracy"]["value"] - old["accuracy"]["top1"])


@pytest.mark.parametrize("command", ["gate", "diff"])
def test_an_unknown_schema_is_an_exit_2_naming_the_file(command, tmp_path, capsys):
    doc = json.loads((V1 / "report.json").read_text())
    doc["schema"] = "edgerep.report/3"
    p = tmp_path / "future" / "report.json"
    p.parent.mkdir()
    p.write_text(json.dumps(doc))
    argv = ["gate", str(p)] if command == "gate" else ["diff", str(V1), str(p)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "unknown schema 'edgerep.report/3'" in err


def test_a_report_with_a_wrong_unit_is_an_exit_2_naming_file_and_field(demo_bundle, tmp_path, capsys):
    doc = json.loads((demo_bundle / "report.json").read_text())
    doc["engines"][0]["accuracy"]["unit"] = "dB"
    p = tmp_path / "report.json"
    p.write_text(json.dumps(doc))
    assert main(["gate", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "engines.0.accuracy" in err and "'top1' is in '%', not 'dB'" in err
