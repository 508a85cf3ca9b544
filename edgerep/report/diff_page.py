"""The diff of two reports as one self-contained HTML page (plots embedded, links to both reports)."""
from __future__ import annotations

import os
from pathlib import Path

from edgerep.report import fmt
from edgerep.report.diff import ReportDiff
from edgerep.report.diff_md import accuracy_cell, accuracy_words, has_map, latency_words
from edgerep.report.html_base import badge, esc, page, png_figure, table
from edgerep.report.plots import new_figure, percent_axis, png_bytes


def diff_png(d: ReportDiff) -> bytes | None:
    """p50 (log scale) and top-1 of every engine, base beside new; None when neither was measured."""
    rows = [e for e in d.engines if e.p50_base or e.p50_new or e.top1_base is not None or e.top1_new is not None]
    if not rows:
        return None
    fig = new_figure(9.6, 0.62 * len(rows) + 1.7)
    ax1, ax2 = fig.add_subplot(121), fig.add_subplot(122)
    ys = list(range(len(rows)))[::-1]
    colours = {"slower": "#c62828", "faster": "#2e7d32", "too noisy": "#b26a00"}
    for y, e in zip(ys, rows):
        for dy, v, c in ((0.18, e.p50_base, "#8c959f"), (-0.18, e.p50_new, colours.get(e.latency, "#5c6bc0"))):
            if v:
                ax1.barh(y + dy, v, 0.34, color=c)
                ax1.text(v * 1.06, y + dy, fmt.ms(v), va="center", fontsize=7)
        for dy, v, c in ((0.18, e.top1_base, "#8c959f"), (-0.18, e.top1_new, "#5c6bc0")):
            if v is not None:
                ax2.barh(y + dy, v, 0.34, color=c)
                ax2.text(v, y + dy, f" {fmt.pct(v)}", va="center", fontsize=7)
    ax1.set_xscale("log")
    vals = [v for e in rows for v in (e.p50_base, e.p50_new) if v]
    if vals:
        ax1.set_xlim(min(vals) / 2.5, max(vals) * 4)
    ax1.set_yticks(ys)
    ax1.set_yticklabels([e.key.replace("/", "\n", 1) for e in rows], fontsize=8)
    ax1.set_xlabel("p50 ms per batch (log scale)")
    ax1.set_title("latency: grey = base; new: red slower, green faster,\nblue within noise, amber too noisy to judge",
                  fontsize=9)
    tops = [v for e in rows for v in (e.top1_base, e.top1_new) if v is not None]
    lo = max(0.0, min(tops) - 3.0) if tops else 0.0
    percent_axis(ax2, lo)
    ax2.set_yticks(ys)
    ax2.set_yticklabels([])
    ax2.set_xlabel("top-1 %")
    ax2.set_title("accuracy: grey = base, blue = new", fontsize=9)
    for ax in (ax1, ax2):
        ax.set_ylim(-0.6, len(rows) - 0.4)
    return png_bytes(fig)


def _link(target: Path | None, out_dir: Path | None, text: str) -> str:
    if target is None:
        return esc(text)
    href = os.path.relpath(target.resolve(), out_dir.resolve()) if out_dir else target.resolve().as_uri()
    return f'<a href="{esc(Path(href).as_posix())}">{esc(text)}</a>'


def to_html(d: ReportDiff, *, out_dir: Path | None = None, base_html: Path | None = None,
            new_html: Path | None = None) -> str:
    """The page; ``out_dir`` is where it will be written, so links to both reports' pages are relative."""
    if not d.checks:
        verdict, cls = badge("no thresholds given", "neutral"), ""
    else:
        verdict, cls = (badge("PASSED", "ok"), "ok") if d.passed else (badge("FAILED", "bad"), "bad")
    failed = "".join(f'<li class="fail">FAIL: {esc(c.message)}</li>' for c in d.failures)
    failed += "".join(f"<li>NOT JUDGED: {esc(c.message)}</li>" for c in d.checks if c.unjudged)
    passed = [c for c in d.checks if c.passed and not c.unjudged]
    checks = (f"<ul>{failed}</ul>" if failed else "") + (
        f"<details><summary>{len(passed)} check(s) passed</summary><ul>"
        + "".join(f'<li class="ok">ok: {esc(c.message)}</li>' for c in passed) + "</ul></details>" if passed else "")
    notes = "".join(f'<p class="muted">{esc(n)}</p>' for n in d.notes)
    gate = {None: "not gated", True: "passed", False: "FAILED"}
    head = (f"<h1>edgerep diff: {esc(d.model)}</h1>"
            f'<p class="sub">base {_link(base_html, out_dir, d.base_label)} (gate {gate[d.gate_base]}) &rarr; '
            f"new {_link(new_html, out_dir, d.new_label)} (gate {gate[d.gate_new]})</p>"
            f'<section id="verdict" class="verdict {cls}"><b>Verdict</b> {verdict} '
            f'<span class="muted">{d.changed()} change(s)</span>'
            + checks + notes + "</section>")
    rows, classes = [], []
    for e in d.engines:
        rows.append([e.key + ("" if e.presence == "both" else f" ({e.presence})"),
                     accuracy_cell(e, "base"), accuracy_cell(e, "new"),
                     accuracy_words(e), "baseline" if e.key.endswith(" unfolded") else
                     f"{fmt.points(e.drop_base, False)} → {fmt.points(e.drop_new, False)}",
                     fmt.ms(e.p50_base), fmt.ms(e.p50_new), latency_words(e)])
        classes.append({"slower": "fail", "faster": "pass"}.get(e.latency, ""))
    body = head + '<h2 id="engines">Engines</h2>' + table(
        ["engine"] + (["mAP base (mAP@.5; counts)", "mAP new", "Δ mAP (points)"] if has_map(d) else
                      ["top-1 base", "top-1 new", "Δ top-1 (points)"]) + ["drop vs unfolded", "p50 ms base", "p50 ms new",
         "Δ p50 (noise band)"], rows, numeric=[1, 2, 3, 5, 6], row_class=classes)
    body += (f'<p class="muted">A p50 change is real when it is beyond the pair\'s noise band: the larger of '
             f"{d.noise_floor_pct:g}% and each run's (p90 − p50) / p50.</p>")
    png = diff_png(d)
    if png:
        body += '<h2 id="plots">Plots</h2>' + png_figure(png, "latency and accuracy, base vs new", anchor="plot-diff")
    body += '<h2 id="int8">INT8 verdicts changed</h2>' + (table(
        ["layer", "plain INT8", "with fixes", "why (new)"],
        [[l["name"], " → ".join(map(str, l["plain"])), " → ".join(map(str, l["fixed"])), l["why"]] for l in d.layers])
        if d.layers else "<p>none</p>")
    body += "<h3>Layers kept in float</h3>" + (table(
        ["ONNX node", "change", "why"], [[f["node"], f["change"], f["why"]] for f in d.float_layers])
        if d.float_layers else "<p>no change</p>")
    body += '<h2 id="files">Files changed</h2>' + (table(
        ["file", "sha256 base", "sha256 new"], [[f["name"], f["base"] or "absent", f["new"] or "absent"]
                                                for f in d.files]) if d.files else "<p>none (or no hashes kept)</p>")
    body += '<h2 id="settings">Settings and versions</h2>' + (table(
        ["what", "base", "new"], [[s["key"], fmt.DASH if s["base"] is None else str(s["base"]),
                                   fmt.DASH if s["new"] is None else str(s["new"])] for s in d.settings])
        if d.settings else "<p>identical</p>")
    body += "<footer>edgerep diff, schema edgerep.diff/1 (<code>edgerep diff --json</code>).</footer>"
    nav = [("#verdict", "verdict"), ("#engines", "engines"), ("#plots", "plots") if png else ("#engines", ""),
           ("#int8", "INT8"), ("#files", "files"), ("#settings", "settings & versions")]
    return page(f"edgerep diff: {d.model}", body, [n for n in nav if n[1]])
