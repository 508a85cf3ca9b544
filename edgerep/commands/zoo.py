"""``edgerep zoo``: the architectures edgerep builds by name (for --arch and edgerep checkpoints)."""
from __future__ import annotations

import argparse
import json

HELP = "list the architectures edgerep can build and load"
DESCRIPTION = """List the registry: every name here works as --arch for a plain or official-layout state_dict,
and is what edgerep checkpoints record as meta.arch. With timm installed (pip install 'edgerep[timm]'),
--arch timm:NAME also builds any timm model (timm.create_model(NAME, pretrained=False)) for a timm
state_dict saved with torch.save(model.state_dict()); the last line says whether timm is usable here.

examples:
  edgerep zoo                       # all models
  edgerep zoo --family repvgg       # one family
  edgerep zoo --family acnet --params --json
  edgerep fold repvgg_a0.pth --arch timm:repvgg_a0 -o a0.folded.pt     # a timm checkpoint
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", help="only this family (repvgg, qarepvgg, acnet, dbb, mobileone, ...)")
    p.add_argument("--params", action="store_true",
                   help="build each model and count train-time and folded parameters (slower: builds big nets)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _param_counts(name: str) -> tuple[int, int]:
    from edgerep.fold.model import count_params, fold_model
    from edgerep.models import create_model

    m = create_model(name).eval()
    return count_params(m), count_params(fold_model(m, generic=False))


def run(args: argparse.Namespace) -> int:
    from edgerep.errors import EdgerepError
    from edgerep.models import list_models

    models = list_models(args.family)
    if not models:
        families = sorted({m.family for m in list_models()})
        raise EdgerepError(f"--family {args.family!r}: no such family", hint=f"families: {', '.join(families)}")
    rows = []
    for m in models:
        row = m.to_dict()
        if args.params:
            row["params_train"], row["params_folded"] = _param_counts(m.name)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.markup import escape
    from rich.table import Table

    from edgerep.report.console import make_console

    t = Table(title=f"edgerep zoo ({len(rows)} models)")
    for col in ("name", "family", "input (C,H,W)", "classes") + (("params", "folded") if args.params else ()) + (
            "description",):
        t.add_column(col, justify="right" if col in ("classes", "params", "folded") else "left")
    for r in rows:
        cells = [r["name"], r["family"], "x".join(map(str, r["input_shape"])), str(r["num_classes"])]
        if args.params:
            cells += [f"{r['params_train']:,}", f"{r['params_folded']:,}"]
        t.add_row(*cells, r["description"])
    console = make_console()
    console.print(t)
    console.print(escape(_timm_line()))  # rich would take "[timm]" in "pip install 'edgerep[timm]'" for markup
    return 0


def _timm_line() -> str:
    """Whether ``--arch timm:NAME`` works here (timm installed and importable)."""
    from edgerep.models.timm_models import timm_status

    ok, why = timm_status()
    if ok:
        return f"also: --arch timm:NAME for a timm state_dict ({why}; built with pretrained=False, keys as timm names them)"
    return f"--arch timm:NAME is not available here: {why}"
