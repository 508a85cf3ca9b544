"""Validate an output against its published JSON Schema in docs/schema/ with the `jsonschema` package (the
files, not the models: what a user's CI would do)."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schema"
FILES = {"edgerep.report/2": "report-2.schema.json", "edgerep.bench-report/2": "bench-report-2.schema.json",
         "edgerep.manifest/2": "manifest-2.schema.json", "edgerep.splits/2": "splits-2.schema.json",
         "edgerep.check/2": "check-2.schema.json", "edgerep.quantize/2": "quantize-2.schema.json",
         "edgerep.fleet-report/2": "fleet-report-2.schema.json"}


def validate(doc: dict, schema: str) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``doc`` names ``schema`` and fits its published file."""
    assert doc.get("schema") == schema, f"schema {doc.get('schema')!r}, expected {schema!r}"
    published = json.loads((SCHEMA_DIR / FILES[schema]).read_text())
    jsonschema.Draft202012Validator.check_schema(published)
    jsonschema.Draft202012Validator(published).validate(doc)


def validate_file(path: Path, schema: str) -> dict:
    doc = json.loads(Path(path).read_text())
    validate(doc, schema)
    return doc
