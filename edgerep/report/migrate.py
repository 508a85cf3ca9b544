"""One way to read a saved output: any known schema version -> the current (/2) model. `gate`, `diff`,
`render`, `bench` and the fleet read reports through ``read_report`` / ``migrate``, so a report written by an
older edgerep (``edgerep.report/1``) is judged with the same numbers.

/1 -> /2: ``accuracy`` gains its task, metric, unit and counts (``top1`` becomes ``value`` with ``metric: top1``;
without labels ``top1_agreement`` is the metric; cosine / SQNR / PSNR move under ``fidelity``), the bare
``drop_vs_unfolded`` becomes ``drop: {of, unit, value, vs}``, and latency's ``iterations`` (a copy of ``queries``)
goes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from edgerep.errors import EdgerepError
from edgerep.report.models import KINDS, dump
from edgerep.report.models.results import Accuracy, Drop, make_accuracy

REPORT_V1, FLEET_V1, MANIFEST_V1, CHECK_V1 = ("edgerep.report/1", "edgerep.fleet-report/1", "edgerep.manifest/1",
                                              "edgerep.check/1")


def _count(pct: float | None, n: int) -> int | None:
    return None if pct is None else int(round(float(pct) * n / 100.0))


def migrate_accuracy(acc: dict | None) -> dict | None:
    """A /1 accuracy dict (``samples``, ``top1``, ``top5``, ``cosine``, ``sqnr_db``, ``psnr_db``,
    ``top1_agreement``, ``nonfinite``, ``user``, ``classes``, ``majority``) as /2."""
    if not acc or "metric" in acc:
        return acc
    n = int(acc.get("samples") or 0)
    classifier = acc.get("top1") is not None or acc.get("top1_agreement") is not None or bool(acc.get("classes"))
    new = make_accuracy(samples=n, classifier=classifier, labelled=acc.get("top1") is not None,
                        correct=_count(acc.get("top1"), n), correct5=_count(acc.get("top5"), n),
                        agree=_count(acc.get("top1_agreement"), n), cosine=acc.get("cosine"),
                        sqnr_db=acc.get("sqnr_db"), psnr_db=acc.get("psnr_db"),
                        nonfinite=int(acc.get("nonfinite") or 0), user=acc.get("user") or {})
    if new is None:
        return None
    out = dump(new)
    if acc.get("top1") is not None:  # the /1 figure as written, not recomputed from rounded counts
        out["value"] = acc["top1"]
    for k in ("classes", "majority"):
        if acc.get(k) is not None:
            out[k] = acc[k]
    return dump(Accuracy.model_validate(out))


def migrate_drop(value: float | None, acc: dict | None) -> dict | None:
    """/1's bare ``drop_vs_unfolded`` (top-1 points where labels existed, else 100 - agreement) as a /2 drop."""
    if value is None:
        return None
    of = "top1" if acc and acc.get("metric") == "top1" else "top1_agreement"
    return dump(Drop(of=of, unit="points", value=float(value)))


def migrate_latency(lat: dict | None) -> dict | None:
    """/1 latency: ``iterations`` duplicated ``queries``; /2 keeps ``queries``."""
    if not lat:
        return lat
    return {k: v for k, v in lat.items() if k != "iterations"}


def _row(row: dict) -> dict:
    """An engine / baseline / fleet row: accuracy, drop and latency in the /2 shape."""
    r = dict(row)
    if "accuracy" in r:
        r["accuracy"] = migrate_accuracy(r["accuracy"])
    if "drop_vs_unfolded" in r:
        r["drop"] = migrate_drop(r.pop("drop_vs_unfolded"), r.get("accuracy"))
    if "latency" in r:
        r["latency"] = migrate_latency(r["latency"])
    if isinstance(r.get("latency_by_batch"), dict):
        r["latency_by_batch"] = {b: migrate_latency(v) for b, v in r["latency_by_batch"].items()}
    return r


def migrate_dict(doc: dict) -> dict:
    """Any known output dict -> its /2 dict (not yet validated). /2 comes back unchanged."""
    schema = doc.get("schema") or doc.get("format")
    if schema in KINDS:
        return doc
    if schema == REPORT_V1:
        d = dict(doc)
        d["engines"] = [_row(e) for e in d.get("engines") or []]
        if d.get("baseline"):
            d["baseline"] = _row(d["baseline"])
        if d.get("tensorrt_qdq"):
            d["tensorrt_qdq"] = _row(d["tensorrt_qdq"])
        d["schema"] = "edgerep.bench-report/2" if d.get("kind") == "bench" else "edgerep.report/2"
        return d
    if schema == FLEET_V1:
        d = dict(doc)
        d["rows"] = [_row(r) for r in d.get("rows") or []]
        d["baseline"] = _row(d.get("baseline") or {})
        if d.get("reference"):
            d["reference"] = {**d["reference"], "accuracy": migrate_accuracy(d["reference"].get("accuracy"))}
        d["schema"] = "edgerep.fleet-report/2"
        return d
    if schema == MANIFEST_V1:
        return {**doc, "schema": "edgerep.manifest/2"}
    if schema == CHECK_V1:
        d = {k: v for k, v in doc.items() if k != "format"}
        return {"schema": "edgerep.check/2", **d}
    raise KeyError(schema)


def migrate(doc: Any, where: str | Path = "<report>") -> BaseModel:
    """Any known output (a parsed JSON document) -> its /2 model; an unknown schema or a document that does not
    fit its schema is an ``EdgerepError`` (exit 2) naming ``where`` and the field."""
    if not isinstance(doc, dict):
        raise EdgerepError(f"{where}: not an edgerep output (a JSON object was expected)")
    schema = doc.get("schema") or doc.get("format")
    try:
        d = migrate_dict(doc)
    except KeyError:
        known = sorted({*KINDS, REPORT_V1, FLEET_V1, MANIFEST_V1, CHECK_V1})
        raise EdgerepError(f"{where}: unknown schema {schema!r}; this edgerep reads {', '.join(known)}",
                           hint="upgrade edgerep to read it, or regenerate the file with this version") from None
    model = KINDS[d["schema"]][0]
    try:
        return model.model_validate(d)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise EdgerepError(f"{where}: does not fit {d['schema']} at {loc or '(top)'}: {first['msg']} "
                           f"({e.error_count()} error(s))") from None


def read_json(path: str | Path) -> tuple[Path, Any]:
    """(path, parsed JSON) of an output file (a bundle directory means its report.json); exit-2 errors name it."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        return p, json.loads(p.read_text())
    except FileNotFoundError:
        raise EdgerepError(f"{p}: report not found", hint="run `edgerep deploy` or `edgerep bench` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgerepError(f"{p}: not a JSON report ({e})") from None


def read_report(path: str | Path) -> BaseModel:
    """A report.json (deploy, bench or fleet; any known version; or a bundle directory holding one) as its /2
    model."""
    p, doc = read_json(path)
    if isinstance(doc, dict) and "schema" not in doc and "engines" not in doc and "rows" not in doc:
        raise EdgerepError(f"{p}: not an edgerep report (no 'schema' field)")
    return migrate(doc, p)


def report_dict(path: str | Path) -> dict:
    """``read_report`` as the /2 JSON dict the gate and the views read."""
    return dump(read_report(path))
