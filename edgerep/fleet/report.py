"""The merged fleet report: a row per node x engine (plus, when sharded, a merged row per target x
engine), the reference measured once on the CI side, and each node's versions and CPU."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from edgerep.fleet.scoring import Scorer
from edgerep.report.models import FleetReport, dump
from edgerep.report.models.outputs import FLEET_SCHEMA
from edgerep.report.fmt import metric_value
from edgerep.report.models.results import make_drop
from edgerep.report.rows import METRIC_LABELS

RAN = ("built", "cached", "fallback")  # row statuses of an engine that ran


def _label(res: dict) -> str:
    return f"{res['hostname']}-{res['node_id'][:8]}"


def _expected_engines(target: str) -> list[dict]:
    """The engines a target's profile lists that nodes run (for rows of nodes that never answered); torch
    engines run only on the CI side, as the reference."""
    try:
        from edgerep.engines.profiles import load_profile

        return [{"name": f"{s.backend}-{s.device_kind}", "precision": s.precision, "device": s.device,
                 "requested": s.key} for s in load_profile(target).engines if s.backend != "torch"]
    except Exception:  # a target this CI side has no profile for: one row stands for all its engines
        return [{"name": "*", "precision": "*", "device": "?", "requested": "*"}]


def _scored(m: "_Merge", row: dict, parts: dict[int, dict] | None, name: str | None = None) -> dict:
    """``row`` with accuracy from its shards' parts ({shard index: part}, each shard once; ``scorer``) and the drop
    vs the unfolded model on the same shards; the files it writes (named ``name``) go to ``m.files``."""
    if not parts or not sum(p.get("samples") or 0 for p in parts.values()):
        return row
    acc, files = m.scorer.accuracy(parts, name)
    m.files.update(files)
    row["accuracy"] = dump(acc) if acc is not None else None
    key = tuple(sorted(parts))
    if key not in m.ref_acc:
        m.ref_acc[key] = m.scorer.accuracy({i: m.ref_by_shard[i] for i in key})[0]
    drop = make_drop(acc, m.ref_acc[key])  # as deploy's rows
    if drop is not None:
        row["drop"] = dump(drop)
    return row


@dataclass(frozen=True)
class FleetSetup:
    """What the CI side set up before any job ran: the bundle and its reference (measured once here), the
    test data and its shards (each with the reference's counts), the targets and their nodes, the batch."""

    bundle: Any
    ref: Any
    data: str | None
    same_test_set: bool | None
    targets: list[str]
    by_target: dict
    shards: list[dict]
    sharded: bool
    batch: int
    scorer: Scorer = field(default_factory=Scorer)  # how the shards that came back are scored (the task's way)
    ground_truth: str | None = None  # detect: where the COCO ground truth came from


@dataclass
class FleetOutcome:
    """What came back: finished jobs with their results, lost jobs and failed jobs (it raised on its node),
    each with why."""

    done: list
    lost: list
    failed: list = field(default_factory=list)


@dataclass
class _Merge:
    """The report being merged from the jobs: its rows, warnings, nodes and artifacts, and what the merged
    rows need (counts and engine per (target, requested engine), the shards no count came back for, and
    which node answered or redid whose work)."""

    rows: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    nodes: dict[str, dict] = field(default_factory=dict)
    artifacts: list = field(default_factory=list)
    merged_counts: dict[tuple, dict[int, dict]] = field(default_factory=dict)  # (target, requested) -> shard -> counts
    engine_of: dict[tuple, dict] = field(default_factory=dict)
    recovered: dict[tuple, str] = field(default_factory=dict)  # (target, lost node label) -> node that redid its shards
    unscored: dict[tuple, dict[int, str]] = field(default_factory=dict)  # (target, requested) -> shard -> why no count
    answered: set = field(default_factory=set)
    scorer: Scorer = field(default_factory=Scorer)
    ref_by_shard: dict[int, dict] = field(default_factory=dict)  # the unfolded reference's part per shard
    ref_acc: dict[tuple, Any] = field(default_factory=dict)  # its accuracy per set of shards, scored once
    files: dict[str, Any] = field(default_factory=dict)  # {relative path: JSON-able}: predictions, per-image scores


def build_report(setup: FleetSetup, outcome: FleetOutcome) -> dict:
    """One report from the finished, the lost and the failed jobs (``_artifacts`` holds the plans to write).
    A failed job (it raised on its node) gives ``failed`` rows with the error: never recovered by a retry."""
    m = _Merge(scorer=setup.scorer, ref_by_shard={s["index"]: s["reference"] for s in setup.shards})
    ref_acc = _reference_accuracy(m, setup.shards)
    for job, res in outcome.done:
        _add_done(m, job, res, setup.sharded)
    _add_lost(m, outcome.lost)
    _add_failed(m, outcome.failed)
    for tg in setup.targets:
        if not setup.by_target.get(tg):
            m.rows += [{"target": tg, "node": "-", "scope": "node", **e, "status": "no node",
                        "reason": "no node for target (no live node advertises edgerep-target:" + tg + ")"}
                       for e in _expected_engines(tg)]
    if setup.sharded and setup.shards:
        _add_merged(m)
    return _report(setup, m, ref_acc)


def _reference_accuracy(m: _Merge, shards: list[dict]) -> dict | None:
    """The reference's accuracy over every shard (with the class count), None without shards; its files
    (detect: ``predictions/torch-cpu-unfolded-fp32.json``) into ``m.files``."""
    acc, files = m.scorer.accuracy(m.ref_by_shard, "torch-cpu-unfolded-fp32") if shards else (None, {})
    m.files.update(files)
    ref_acc = dump(acc) if acc is not None else None
    if ref_acc is not None and shards[0].get("classes"):
        ref_acc["classes"] = shards[0]["classes"]
    return ref_acc


def _file_name(*parts: str) -> str:
    """A row's files' name: ``<target>-[<node>-]<engine>-<precision>``, safe as one path component."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


def _add_done(m: _Merge, job: Any, res: dict, sharded: bool) -> None:
    """A finished job: its node, a version warning, its counts for the merged rows and, unless it redid
    another node's shards, its own rows."""
    import edgerep

    label = _label(res)
    m.nodes[label] = {"node_id": res["node_id"], "hostname": res["hostname"], "versions": res["versions"],
                      "host": res["host"], "timings_s": res["timings_s"]}
    theirs = (res.get("versions") or {}).get("edgerep")
    if theirs != edgerep.__version__ and not any(label in w for w in m.warnings):
        m.warnings.append(f"node {label} runs edgerep {theirs}, this CI side {edgerep.__version__}")
    redo_elsewhere = job.retry_of is not None and job.retry_of != label
    if redo_elsewhere:
        m.recovered[(job.target, job.retry_of)] = label
    else:
        m.answered.add((job.target, label))
        m.artifacts.append((job.target, label, res["artifacts"]))
    for r in res["rows"]:
        _count_row(m, job.target, label, res["shards"], r)
        if redo_elsewhere:
            continue
        row = {"target": job.target, "node": label, "node_id": res["node_id"], "hostname": res["hostname"],
               "scope": "shard" if sharded else "node", "shards": res["shards"],
               **{k: v for k, v in r.items() if k != "counts"}}
        if job.retry_of:
            row["note"] = "answered on a retry"
        name = None if sharded else _file_name(job.target, label, r["name"], r["precision"])  # a whole test set
        m.rows.append(_scored(m, row, {int(i): c for i, c in r["counts"].items()}, name))


def _count_row(m: _Merge, target: str, label: str, shards: list, r: dict) -> None:
    """One engine row's counts per shard for the merged rows, the engine that ran (a run beats a failure),
    and the shards it could not score when it failed on this node."""
    key = (target, r["requested"])
    if key not in m.engine_of or m.engine_of[key]["status"] not in RAN and r["status"] in RAN:
        m.engine_of[key] = {k: r[k] for k in ("name", "precision", "device", "status", "reason", "requested")}
    if r["status"] not in RAN and r["status"] != "skipped":  # the engine failed on this node
        for i in shards:
            m.unscored.setdefault(key, {})[int(i)] = f"{label}: {r['status']} ({r.get('reason') or ''})"
    for i, c in r["counts"].items():
        m.merged_counts.setdefault(key, {})[int(i)] = c


def _add_lost(m: _Merge, lost: list) -> None:
    """A ``lost`` row per engine the target lists, for each lost job no retry on the same node answered."""
    for job, why in lost:
        if (job.target, job.node.label) in m.answered or job.retry_of is not None and job.retry_of != job.node.label:
            continue  # a retry on the same node answered; or a failed retry, whose original row already says lost
        for e in _expected_engines(job.target):
            row = {"target": job.target, "node": job.node.label, "node_id": job.node.node_id,
                   "hostname": job.node.hostname, "scope": "node", **e, "status": "lost", "reason": f"lost: {why}"}
            if (job.target, job.node.label) in m.recovered:
                row["recovered_by"] = m.recovered[(job.target, job.node.label)]
            m.rows.append(row)


def _add_failed(m: _Merge, failed: list) -> None:
    """A ``failed`` row per engine the target lists, with the error; its shards are unscored."""
    for job, why in failed or []:
        for e in _expected_engines(job.target):
            row = {"target": job.target, "node": job.node.label, "node_id": job.node.node_id,
                   "hostname": job.node.hostname, "scope": "node", **e, "status": "failed",
                   "reason": f"failed on the node: {why}"}
            if job.retry_of is not None and job.retry_of != job.node.label:
                row["note"] = f"while redoing {job.retry_of}'s shards"
            m.rows.append(row)
            for i in job.shards:
                m.unscored.setdefault((job.target, e["requested"]), {})[int(i)] = f"{job.node.label}: failed ({why})"


def _add_merged(m: _Merge) -> None:
    """A merged row per target x engine: the shards that came back scored together (each once), the drop against
    the reference on those very shards; a shard missing makes it lost, one an engine failed on makes it failed."""
    want = set(m.ref_by_shard)
    for (tg, req), per in sorted(m.merged_counts.items()):
        e = m.engine_of[(tg, req)]
        if e["status"] == "skipped":
            continue
        row = {"target": tg, "node": f"merged ({len(per)} shard(s))", "scope": "merged", **e}
        missing = sorted(want - set(per))
        why_not = {i: w for i, w in (m.unscored.get((tg, req)) or {}).items() if i in missing}
        if why_not:
            row.update(status="failed", reason=f"shard(s) {sorted(why_not)} not scored: "
                                               + "; ".join(sorted(set(why_not.values()))))
        elif missing:
            row.update(status="lost", reason=f"lost: shard(s) {missing} never came back")
        if missing:
            row["shards_missing"] = missing
        # the drop against the reference on the very shards this row scored, never on all of them
        m.rows.append(_scored(m, row, per, _file_name(tg, e["name"], e["precision"])))


def _report(setup: FleetSetup, m: _Merge, ref_acc: dict | None) -> dict:
    """The fleet report dict."""
    bundle, ref, data, shards, sharded, batch = setup.bundle, setup.ref, setup.data, setup.shards, setup.sharded, setup.batch
    same_test_set, targets = setup.same_test_set, setup.targets
    nodes, rows, warnings, artifacts = m.nodes, m.rows, m.warnings, m.artifacts
    return {
        "schema": FLEET_SCHEMA, "kind": "fleet", "created_unix": time.time(),
        "bundle": str(bundle.path), "model": bundle.report.get("model") or {"name": bundle.name},
        "fold": bundle.report.get("fold"),
        "quantization": {k: v for k, v in (bundle.report.get("quantization") or {}).items() if k == "int8_failure"},
        "baseline": {"name": "torch-cpu", "precision": "fp32", "device": "cpu", "status": "built",
                     "accuracy": ref_acc, "note": "the unfolded reference, measured once on the CI side",
                     **({"expected": e} if (e := (bundle.report.get("baseline") or {}).get("expected")) else {})},
        "input_statistics": bundle.report.get("input_statistics"),
        "data": {"evaluation": data, "split": "test", "sharded": sharded, "same_as_bundle": same_test_set,
                 **({"task": setup.scorer.task["name"]} if setup.shards else {}),
                 **({"ground_truth": setup.ground_truth} if setup.ground_truth else {}),
                                                   "shards": shards and [{k: s[k] for k in ("index", "start", "stop")}
                                                                         for s in shards]},
        "reference": {"source": ref.source, "accuracy": ref_acc,
                      "measured_on": "the CI side, once"},
        "bench": {"batch": batch}, "targets": targets, "nodes": nodes, "rows": rows, "warnings": warnings,
        "_artifacts": artifacts, "_files": m.files,
    }


COLUMNS = ("target", "node", "engine", "precision", "status", "p50 ms", "p99 ms", "img/s", "metric", "value",
           "samples", "drop", "note")


def metric_name(acc: dict | None) -> str:
    """What a row's accuracy measures, in words: ``top-1``, ``mAP``, ``PSNR``, ``top-1 agreement``, ``cosine``."""
    if not acc:
        return ""
    return "top-1" if acc.get("metric") == "top1" else METRIC_LABELS.get(acc.get("metric"), acc.get("metric") or "")


def drop_cell(drop: dict | None) -> str:
    """A drop with its unit and metric: ``+0.05 points mAP``, ``+0.02 dB PSNR``, ``+0.10 points top-1``."""
    if not drop:
        return ""
    return f"{drop['value']:+.2f} {drop['unit']} {metric_name({'metric': drop['of']})}"


def table_rows(report: dict) -> list[list[str]]:
    """The report's rows as table cells, in COLUMNS order: each names its metric, and its value and drop their unit."""
    out = []
    for r in report.get("rows", []):
        lat = r.get("latency") or {}
        acc = r.get("accuracy") or {}
        f = (lambda v, p=3: "" if v is None else f"{v:.{p}f}")
        note = r.get("reason") or r.get("note") or ""
        if r.get("recovered_by"):
            note += f" (shards re-ran on {r['recovered_by']})"
        out.append([r["target"], r["node"], r["name"], r["precision"], r["status"], f(lat.get("p50_ms")),
                    f(lat.get("p99_ms")), f(lat.get("throughput_ips"), 0), metric_name(acc),
                    metric_value(acc) if acc else "", str(acc.get("samples", "")) if acc else "",
                    drop_cell(r.get("drop")), note])
    return out


def node_lines(report: dict) -> list[str]:
    """One line per node: versions, CPU and ISA (every latency names its machine)."""
    out = []
    for label, n in sorted((report.get("nodes") or {}).items()):
        v = n.get("versions") or {}
        out.append(f"{label}: edgerep {v.get('edgerep')}, torch {v.get('torch')}, onnxruntime {v.get('onnxruntime')}, "
                   f"TensorRT {v.get('tensorrt') or 'none'}, JetPack {v.get('jetpack') or 'n/a'}; "
                   f"{v.get('cpu')} ({v.get('arch')}, INT8 ISA {v.get('int8_isa')})")
    return out


def markdown(report: dict) -> str:
    """report.md: the rows, the reference, the nodes and the gate."""
    ref = report.get("reference") or {}
    acc = ref.get("accuracy") or {}
    lines = [f"# edgerep fleet deploy: {report.get('model', {}).get('name', '')}", "",
             f"Reference (unfolded FP32, {ref.get('measured_on')}): {ref.get('source')}; "
             f"{metric_name(acc) or 'accuracy'} {metric_value(acc)} on {acc.get('samples', 0) if acc else 0} test "
             "samples.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in table_rows(report)]
    lines += ["", "## Nodes", ""] + [f"- {s}" for s in node_lines(report)]
    lines += [f"- warning: {w}" for w in report.get("warnings", [])]
    gate = report.get("gate") or {}
    if gate:
        lines += ["", "## Gate: " + ("PASSED" if gate.get("passed") else "FAILED"), ""]
        lines += [f"- {c['message']}" for c in gate.get("checks", []) if not c["passed"]]
    return "\n".join(lines) + "\n"


def serialized(report: dict) -> dict:
    """The fleet report as report.json holds it: the ``FleetReport`` model, serialized (private keys dropped)."""
    return dump(FleetReport.model_validate({k: v for k, v in report.items() if not k.startswith("_")}))
