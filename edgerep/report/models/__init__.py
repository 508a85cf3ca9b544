"""Typed models of every JSON output CI reads (report.json, bench, manifest.json, splits.json, check, quantize,
fleet), written with pydantic v2: it validates on read (a wrong unit or an unknown field is refused, naming the
field) and generates the published JSON Schemas (``model_json_schema()``) in docs/schema/ from the same classes,
so the code and the schema cannot drift apart (tests/test_report_schema.py).

Regenerate the schema files: ``python -m edgerep.report.models --write docs/schema``."""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from edgerep.report.models.base import dump
from edgerep.report.models.bundle import MANIFEST_SCHEMA, SPLITS_SCHEMA, Manifest, Splits
from edgerep.report.models.outputs import (CHECK_SCHEMA, FLEET_SCHEMA, QUANTIZE_SCHEMA, CheckOutput, FleetReport,
                                           QuantizeOutput)
from edgerep.report.models.report import (BENCH_SCHEMA, REPORT_SCHEMA, Baseline, BenchReport, EngineRow, Gate,
                                          Report, TensorrtQdq)
from edgerep.report.models.results import (METRICS, Accuracy, Drop, Fidelity, Latency, drop_of, make_accuracy,
                                           make_drop, top1_of)

#: schema string -> (model, schema file name in docs/schema/)
KINDS: dict[str, tuple[type[BaseModel], str]] = {
    REPORT_SCHEMA: (Report, "report-2.schema.json"),
    BENCH_SCHEMA: (BenchReport, "bench-report-2.schema.json"),
    MANIFEST_SCHEMA: (Manifest, "manifest-2.schema.json"),
    SPLITS_SCHEMA: (Splits, "splits-2.schema.json"),
    CHECK_SCHEMA: (CheckOutput, "check-2.schema.json"),
    QUANTIZE_SCHEMA: (QuantizeOutput, "quantize-2.schema.json"),
    FLEET_SCHEMA: (FleetReport, "fleet-report-2.schema.json"),
}


def json_schema(schema: str) -> dict:
    """The published JSON Schema (draft 2020-12) of one output kind, as docs/schema/ holds it."""
    model, name = KINDS[schema]
    doc = model.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"edgerep:{schema}", **doc}


def write_schemas(folder: Path) -> list[Path]:
    """Write every kind's schema file into ``folder``; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for schema, (_, name) in KINDS.items():
        p = folder / name
        p.write_text(json.dumps(json_schema(schema), indent=2, sort_keys=False) + "\n")
        out.append(p)
    return out


__all__ = ["BENCH_SCHEMA", "CHECK_SCHEMA", "FLEET_SCHEMA", "KINDS", "MANIFEST_SCHEMA", "METRICS", "QUANTIZE_SCHEMA",
           "REPORT_SCHEMA", "SPLITS_SCHEMA", "Accuracy", "Baseline", "BenchReport", "CheckOutput", "Drop", "EngineRow",
           "Fidelity", "FleetReport", "Gate", "Latency", "Manifest", "QuantizeOutput", "Report", "Splits", "TensorrtQdq",
           "drop_of", "dump", "json_schema", "make_accuracy", "make_drop", "top1_of", "write_schemas"]
