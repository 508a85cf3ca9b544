"""Render a deploy/bench report (a plain dict, the content of report.json) as Markdown and HTML."""
from __future__ import annotations

import json
from pathlib import Path

from edgerep.report import fmt as F
from edgerep.report.page import to_html
from edgerep.report.plots import report_plots
from edgerep.report.rows import COLUMNS, accuracy_heading, engine_rows, split_entries


def to_markdown(report: dict) -> str:
    """report.md: the verdict, the engine table and the INT8 decisions, rounded for people."""
    m = report.get("model", {})
    fold = report.get("fold", {})
    lines = [f"# edgerep report: {m.get('name', '?')}", ""]
    gate = report.get("gate")
    if gate:
        lines += [f"Gate: **{'PASSED' if gate.get('passed') else 'FAILED'}**", ""]
        checks = sorted(gate.get("checks", []), key=lambda c: c.get("passed", True))
        lines += [f"- {'ok' if c['passed'] else 'FAIL'}: {c['message']}" for c in checks] + [""]
    lines.append(f"- checkpoint: `{m.get('checkpoint', '?')}` (sha256 `{str(m.get('sha256', ''))[:16]}`)")
    shape = m.get("input_shape")
    lines.append(f"- architecture: `{m.get('arch', '?')}`, input "
                 f"{' x '.join(str(x) for x in shape) if isinstance(shape, list) else shape}")
    if fold:
        lines.append(f"- fold: {fold.get('convs_before')} -> {fold.get('convs_after')} convs, "
                     f"{F.count(fold.get('params_before'))} -> {F.count(fold.get('params_after'))} parameters, "
                     f"max error {F.sci(fold.get('max_abs_error'))} abs / {F.sci(fold.get('max_rel_error'))} rel")
    splits = dict(split_entries(report))
    data = report.get("data") or {}
    if splits:
        lines.append("- data: " + ", ".join(f"{k} {F.count(v.get('count'))} images" for k, v in splits.items()))
    elif data:
        lines.append(f"- data: calibration `{data.get('calibration')}` ({data.get('calibration_samples')} images), "
                     f"evaluation `{data.get('evaluation')}` ({data.get('evaluation_samples')} images)")
    q = report.get("quantization") or {}
    if q.get("cpu_policy"):
        pol = q["cpu_policy"]
        lines.append(f"- CPU INT8 policy: `{pol.get('name')}` — {pol.get('reason', '')}")
    if (q.get("reference") or {}).get("resolution_note"):
        lines.append(f"- selection set: {q['reference']['resolution_note']}")
    lines.append("")
    rows = engine_rows(report)
    cols = [(k, h) for k, h in COLUMNS if k != "top1"]
    cols.insert(5, ("top1_n", accuracy_heading(report)))
    if any(r["noise"] for r in rows):
        cols.insert(5, ("noise", "noise"))
    lines.append("| " + " | ".join(h for _, h in cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows:
        lines.append("| " + " | ".join(r[k] for k, _ in cols) + " |")
    notes = [f"- `{r['engine']}/{r['precision']}`: {r['note']}" for r in rows if r["note"]]
    if notes:
        lines += ["", "Notes:", ""] + notes
    cands = q.get("candidates") or []
    if cands:
        sim = any(c.get("simulated_top1") is not None for c in cands)
        lines += ["", "CPU INT8 policies tried (accuracy on the optimized onnxruntime session, as deployed):", "",
                  "| policy | top-1 % |" + (" QDQ simulation top-1 % |" if sim else "") +
                  " drop | latency ms | accepted | why |",
                  "|---|---|" + ("---|" if sim else "") + "---|---|---|---|"]
        for c in cands:
            pol = c.get("policy") or {}
            name = pol.get("name") if isinstance(pol, dict) else pol
            lines.append(f"| {name} | {F.points(c.get('top1'), signed=False)} |" +
                         (f" {F.points(c.get('simulated_top1'), signed=False)} |" if sim else "") +
                         f" {F.points(c.get('drop'))} | {F.ms(c.get('latency_ms'))} | "
                         f"{'yes' if c.get('accepted') else 'no'} | {c.get('reason', '')} |")
    excl = q.get("excluded_nodes") or []
    if excl:
        lines += ["", "Layers kept in float:", ""]
        lines += [(f"- `{e['layer']}` (ONNX node `{e.get('node')}`" if e.get("layer") else f"- `{e.get('node')}` (") +
                  f", {e.get('target')}, {e.get('precision')}): {e.get('why', '')}" for e in excl]
    check = report.get("check") or {}
    if check.get("summary"):
        sm = check["summary"]
        counts = sm.get("counts") or {}
        lines += ["", "## Quantization friendliness (edgerep check)", ""]
        m = check.get("measured") or {}
        if m:
            lines += [f"**{m['headline']}** {m['scored']} The verdicts below are the check's predictions.", ""]
        lines += [f"{sm.get('layers')} folded layers under plain INT8: " +
                  ", ".join(f"{v} {k}" for k, v in counts.items()) +
                  ("; with the advised fixes: " + ", ".join(f"{v} {k}" for k, v in
                                                             (sm.get("counts_with_fixes") or {}).items())
                   if sm.get("counts_with_fixes") else "") +
                  (f"; worst layer `{sm.get('worst_layer')}` ({sm.get('worst_layer_verdict')})" if sm.get("worst_layer")
                   else "")]
        lines += [f"- advice: {a}" for a in sm.get("top_advice") or []]
        lines += ["", "The per-layer page with plots: [check/check.html](check/check.html)."]
    return "\n".join(lines) + "\n"


def _links(out_dir: Path) -> dict[str, str]:
    """The files beside report.html that the page may link (only those that exist)."""
    cand = {"check_html": "check/check.html", "json": "report.json", "md": "report.md", "manifest": "manifest.json",
            "splits": "splits.json"}
    return {k: v for k, v in cand.items() if (out_dir / v).exists() or k in ("json", "md")}


def write_reports(report: dict, out_dir: Path, manifest: dict | None = None) -> dict[str, Path]:
    """report.json, report.md, report.html (+ the plots as PNG files) into ``out_dir``.

    ``manifest`` (default: ``out_dir/manifest.json`` when it exists) gives the versions shown on the page.
    """
    out_dir = Path(out_dir)
    if manifest is None and (out_dir / "manifest.json").is_file():
        try:
            manifest = json.loads((out_dir / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = None
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["md"].write_text(to_markdown(report))
    plots = report_plots(report)
    picture = out_dir / "sr" / "crop.png"  # a super-resolution deploy's picture (edgerep.report.sr_picture)
    if picture.is_file():
        plots = {"sr/crop.png": picture.read_bytes(), **plots}
    for name, data in plots.items():
        (out_dir / name).write_bytes(data)
        paths[name] = out_dir / name
    paths["html"].write_text(to_html(report, plots, manifest=manifest, links=_links(out_dir)), encoding="utf-8")
    return paths


__all__ = ["COLUMNS", "engine_rows", "to_markdown", "to_html", "write_reports"]
