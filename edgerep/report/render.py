"""Render a deploy/bench report (a plain dict, the content of report.json) as Markdown and HTML."""
from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path


def _num(v, fmt: str = "{:.3f}", none: str = "–") -> str:
    if v is None:
        return none
    if isinstance(v, float) and not math.isfinite(v):
        return "inf"
    return fmt.format(v)


def engine_rows(report: dict) -> list[dict[str, str]]:
    """One row per engine (the unfolded torch baseline first): the table deploy prints."""
    rows = []
    for e in [report.get("baseline")] + list(report.get("engines", [])):
        if not e:
            continue
        lat = e.get("latency") or {}
        acc = e.get("accuracy") or {}
        drop = e.get("drop_vs_unfolded")
        name = e.get("name", "?")
        if e is report.get("baseline"):
            name += " unfolded"
        elif e.get("status") == "fallback":
            name += f" (for {e.get('requested')})"
        elif e.get("status") == "skipped":
            name = f"{e.get('requested') or name} (skipped)"
        rows.append({
            "engine": name,
            "precision": e.get("precision", "?"),
            "status": e.get("status", "built"),
            "p50": _num(lat.get("p50_ms")),
            "p99": _num(lat.get("p99_ms")),
            "throughput": _num(lat.get("throughput_ips"), "{:.0f}"),
            "top1": _num(acc.get("top1"), "{:.2f}"),
            "agreement": _num(acc.get("top1_agreement"), "{:.2f}"),
            "drop": "baseline" if e is report.get("baseline") else _num(drop, "{:+.2f}"),
            "verdict": e.get("verdict", ""),
            "note": e.get("reason", "") or "",
        })
    return rows


COLUMNS = [("engine", "engine"), ("precision", "precision"), ("p50", "p50 ms"), ("p99", "p99 ms"),
           ("throughput", "img/s"), ("top1", "top-1 %"), ("drop", "drop vs unfolded"), ("verdict", "verdict")]


def to_markdown(report: dict) -> str:
    m = report.get("model", {})
    fold = report.get("fold", {})
    lines = [f"# edgerep report: {m.get('name', '?')}", ""]
    lines.append(f"- checkpoint: `{m.get('checkpoint', '?')}` (sha256 `{str(m.get('sha256', ''))[:16]}`)")
    lines.append(f"- architecture: `{m.get('arch', '?')}`, input {m.get('input_shape')}")
    if fold:
        lines.append(f"- fold: {fold.get('convs_before')} -> {fold.get('convs_after')} convs, "
                     f"{fold.get('params_before')} -> {fold.get('params_after')} parameters, "
                     f"max error {_num(fold.get('max_abs_error'), '{:.2e}')} abs / "
                     f"{_num(fold.get('max_rel_error'), '{:.2e}')} rel")
    data = report.get("data") or {}
    if data:
        lines.append(f"- data: calibration `{data.get('calibration')}` ({data.get('calibration_samples')} samples), "
                     f"evaluation `{data.get('evaluation')}` ({data.get('evaluation_samples')} samples)")
    q = report.get("quantization") or {}
    if q.get("cpu_policy"):
        pol = q["cpu_policy"]
        lines.append(f"- CPU INT8 policy: `{pol.get('name')}` — {pol.get('reason', '')}")
    lines.append("")
    lines.append("| " + " | ".join(h for _, h in COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    for r in engine_rows(report):
        lines.append("| " + " | ".join(r[k] for k, _ in COLUMNS) + " |")
    notes = [f"- `{r['engine']}/{r['precision']}`: {r['note']}" for r in engine_rows(report) if r["note"]]
    if notes:
        lines += ["", "Notes:", ""] + notes
    cands = q.get("candidates") or []
    if cands:
        lines += ["", "CPU INT8 policies tried (accuracy on the optimized onnxruntime session, as deployed):", "",
                  "| policy | top-1 % | QDQ simulation top-1 % | drop | latency ms | accepted | why |",
                  "|---|---|---|---|---|---|---|"]
        for c in cands:
            pol = c.get("policy") or {}
            name = pol.get("name") if isinstance(pol, dict) else pol
            lines.append(f"| {name} | {_num(c.get('top1'), '{:.2f}')} | {_num(c.get('simulated_top1'), '{:.2f}')} | "
                         f"{_num(c.get('drop'), '{:+.2f}')} | {_num(c.get('latency_ms'))} | "
                         f"{'yes' if c.get('accepted') else 'no'} | {c.get('reason', '')} |")
    gate = report.get("gate")
    if gate:
        lines += ["", f"Gate: **{'PASSED' if gate.get('passed') else 'FAILED'}**", ""]
        lines += [f"- {'ok' if c['passed'] else 'FAIL'}: {c['message']}" for c in gate.get("checks", [])]
    check = report.get("check") or {}
    if check.get("summary"):
        sm = check["summary"]
        counts = sm.get("counts") or {}
        lines += ["", "## Quantization friendliness (edgerep check)", "",
                  f"{sm.get('layers')} folded layers under plain INT8: " +
                  ", ".join(f"{v} {k}" for k, v in counts.items()) +
                  ("; with the advised fixes: " + ", ".join(f"{v} {k}" for k, v in
                                                             (sm.get("counts_with_fixes") or {}).items())
                   if sm.get("counts_with_fixes") else "") +
                  (f"; worst layer `{sm.get('worst_layer')}` ({sm.get('worst_layer_verdict')})" if sm.get("worst_layer")
                   else "")]
        lines += [f"- advice: {a}" for a in sm.get("top_advice") or []]
        lines += ["", "The per-layer page with plots is `check/check.html` in the bundle."]
    return "\n".join(lines) + "\n"


def _plot_png(report: dict) -> dict[str, bytes]:
    """Latency and accuracy bar charts as PNG bytes (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [e for e in [report.get("baseline")] + list(report.get("engines", [])) if e and e.get("latency")]
    out: dict[str, bytes] = {}
    if not rows:
        return out
    labels = [f"{e['name']}\n{e['precision']}" + ("\n(unfolded)" if e is report.get("baseline") else "") for e in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(rows)), 3.4))
    p50 = [e["latency"].get("p50_ms", 0) for e in rows]
    p99 = [e["latency"].get("p99_ms", 0) for e in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("ms per batch")
    ax.set_title(f"latency, batch {rows[0]['latency'].get('batch', 1)}")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    out["latency.png"] = buf.getvalue()
    acc_rows = [e for e in rows if (e.get("accuracy") or {}).get("top1") is not None]
    if acc_rows:
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(acc_rows)), 3.4))
        vals = [e["accuracy"]["top1"] for e in acc_rows]
        ax.bar(range(len(acc_rows)), vals, color="tab:green")
        ax.set_xticks(range(len(acc_rows)), [labels[rows.index(e)] for e in acc_rows], fontsize=7)
        lo = max(0.0, min(vals) - 5)
        ax.set_ylim(lo, 100)
        ax.set_ylabel("top-1 %")
        ax.set_title("accuracy on the evaluation split")
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        out["accuracy.png"] = buf.getvalue()
    return out


def to_html(report: dict, plots: dict[str, bytes] | None = None) -> str:
    """One self-contained HTML page (plots inlined as base64 PNG)."""
    plots = _plot_png(report) if plots is None else plots
    m = report.get("model", {})
    esc = html.escape
    rows = engine_rows(report)
    table = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for _, h in COLUMNS) + "</tr>"]
    for r in rows:
        cls = {"pass": "ok", "fail": "bad"}.get(r["verdict"], "")
        table.append(f"<tr class='{cls}'>" + "".join(f"<td>{esc(r[k])}</td>" for k, _ in COLUMNS) + "</tr>")
    table.append("</table>")
    imgs = "".join(f"<img alt='{esc(n)}' src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
                   for n, b in plots.items())
    md = esc(to_markdown(report))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgerep: {esc(str(m.get('name', '')))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:14px}}tr.ok td{{background:#eef9ee}}tr.bad td{{background:#fbeaea}}
img{{max-width:48%;margin:8px}}pre{{background:#f6f6f6;padding:1em;white-space:pre-wrap}}</style></head><body>
<h1>edgerep report: {esc(str(m.get('name', '?')))}</h1>
{''.join(table)}
<div>{imgs}</div>
<h2>Details</h2><pre>{md}</pre>
<h2>report.json</h2><pre>{esc(json.dumps(report, indent=2, default=str)[:200000])}</pre>
</body></html>
"""


def write_reports(report: dict, out_dir: Path) -> dict[str, Path]:
    """report.json, report.md, report.html (+ the plots as PNG files) into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str) + "\n")
    paths["md"].write_text(to_markdown(report))
    plots = _plot_png(report)
    for name, data in plots.items():
        (out_dir / name).write_bytes(data)
        paths[name] = out_dir / name
    paths["html"].write_text(to_html(report, plots))
    return paths
