"""``write_debug_html``: the ``edgerep debug`` result as one self-contained HTML page (the per-layer error
curves, own and accumulated, and the search's steps as embedded PNGs, the layer table, the culprit in words)."""
from __future__ import annotations

import math
from pathlib import Path

from edgerep.report.html_base import badge, esc, kv_table, page, png_figure, table
from edgerep.report.plots import new_figure, png_bytes


def _n(v, f: str = "{:.2f}") -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f.format(v)


def plot_error_curve(doc: dict) -> bytes:
    """Per layer: its own SQNR (only its quantizers, the FP32 input: names the culprit) and the accumulated
    SQNR of its output as the INT8 file runs (INT8 vs FP32), with the broken threshold."""
    rows = doc["layers"]
    names = [r["block"] or r["node"] for r in rows]
    xs = list(range(len(rows)))
    fig = new_figure(max(7.0, 0.55 * len(rows) + 2), 4.2)
    ax = fig.add_subplot(111)
    nan = float("nan")
    ax.plot(xs, [r["isolated_sqnr_db"] if r.get("isolated_sqnr_db") is not None else nan for r in rows], "s-",
            color="#6a1b9a", label="own SQNR: this layer's quantizers alone, dB")
    ax.plot(xs, [r["sqnr_db"] if r["sqnr_db"] is not None else nan for r in rows], "o--", color="#1565c0",
            label="accumulated SQNR: the INT8 file as it runs, dB")
    ax.axhline(doc["broken_below_db"], color="#888", lw=1, ls=":", label=f"broken below {doc['broken_below_db']:g} dB")
    culprit = doc.get("culprit")
    if culprit:
        ax.axvline(culprit["index"], color="#c62828", lw=1.5, label=f"culprit: {culprit['block'] or culprit['node']}")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("dB")
    ax.set_title("per-layer INT8 error (QDQ simulated with fusions off)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png_bytes(fig)


def plot_search(doc: dict) -> bytes:
    """The search's steps: layers in float against the output SQNR, budget met or missed."""
    steps = doc["search"]["steps"]
    fig = new_figure(7.0, 3.6)
    ax = fig.add_subplot(111)
    for s in steps:
        ax.scatter(s["step"], s["sqnr_db"] if s["sqnr_db"] is not None else float("nan"),
                   color="#2e7d32" if s["met"] else "#c62828", zorder=3)
        ax.annotate(str(len(s["float_layers"])), (s["step"], s["sqnr_db"] or 0), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("step (label: layers in float)")
    ax.set_ylabel("output SQNR, dB (optimized session)")
    ax.set_title("search: green meets the budget, red misses it")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def render_debug_html(doc: dict) -> str:
    """The page for a ``DebugResult.to_dict()``."""
    e2e = doc["end_to_end"]
    c = doc.get("culprit")
    parts = [f"<h1>edgerep debug</h1><p class=sub>{esc(doc['bundle'])} · INT8 file {esc(doc['int8'])}</p>",
             f"<p><b>{esc(doc['note'])}</b></p>"]
    if c:
        where = f"{c['block'] or c['node']}" + (f", branch {c['branch']}" if c.get("branch") else "")
        parts.append(f'<div class="verdict bad">Culprit: <b>{esc(where)}</b> (node <code>{esc(c["node"])}</code>): '
                     f"its own quantizers alone leave {_n(c['isolated_sqnr_db'], '{:.1f}')} dB SQNR "
                     f"(accumulated {_n(c['sqnr_db'], '{:.1f}')} dB). Rule: {esc(doc['culprit_rule'])}.</div>")
    names = {r["node"]: r["block"] or r["node"] for r in doc["layers"]}
    measures = "; ".join(f"{k}: {v}" for k, v in doc["measures"].items())
    parts.append(kv_table([
        ("reference", doc["reference"]), ("data", f"{doc['data']['images']} images: {doc['data']['source']}"),
        ("end-to-end output SQNR", f"{_n(e2e['sqnr_db'], '{:.2f}')} dB (cosine {_n(e2e['cosine'], '{:.5f}')}), "
                                   f"{e2e['session']}"),
        ("top-1 drop", _n(e2e.get("top1_drop")) + " points" if e2e.get("top1_drop") is not None else "–"),
        ("own errors measured", doc["isolated"]["how"]), ("which number is which", measures),
        (f"broken (own SQNR < {doc['broken_below_db']:g} dB)", ", ".join(names[n] for n in doc["broken"]) or "none")]))
    parts.append("<h2 id=curve>Per-layer error</h2>" + png_figure(plot_error_curve(doc), "per-layer error curve"))
    head = ["#", "layer", "node", "precision", "own SQNR dB", "accumulated SQNR dB", "cosine", "input SQNR dB",
            "drop dB", "added NSR", "branch"]
    rows = [[str(r["index"]), r["block"] or "–", r["node"], r["precision"], _n(r["isolated_sqnr_db"]),
             _n(r["sqnr_db"]), _n(r["cosine"], "{:.5f}"), _n(r["input_sqnr_db"]), _n(r["drop_db"]), _n(r["added_nsr"], "{:.2e}"),
             r["branch"] or ""] for r in doc["layers"]]
    cls = ["fail" if (c and r["index"] == c["index"]) or r["node"] in doc["broken"] else "" for r in doc["layers"]]
    parts.append(table(head, rows, numeric=(0, 4, 5, 6, 7, 8, 9), row_class=cls))
    s = doc.get("search")
    parts.append("<h2 id=search>Float-set search</h2>")
    if s:
        res = ", ".join(s["float_layers"]) if s["float_layers"] is not None else "none meets the budget"
        parts.append(f"<p>Budget: {esc(s['budget'])}. Result: {badge('met' if s['met'] else 'missed', 'ok' if s['met'] else 'bad')} "
                     f"{esc(res)}. {s['files_written']} files written and scored. {esc(s['guarantee'])}</p>")
        parts.append(png_figure(plot_search(doc), "search steps"))
        parts.append(table(["step", "phase", "in float", "SQNR dB", "top-1 drop", "met"],
                           [[str(t["step"]), t["phase"], ", ".join(t["float_layers"]) or "none", _n(t["sqnr_db"]),
                             _n(t["top1_drop"]), "yes" if t["met"] else "no"] for t in s["steps"]],
                           numeric=(0, 3, 4)))
    else:
        parts.append(f"<p>{esc(doc.get('search_note') or 'no search')}</p>")
    return page("edgerep debug", "\n".join(parts), nav=[("#curve", "per-layer error"), ("#search", "search")])


def write_debug_html(doc: dict, path: str | Path) -> Path:
    """Write the page to ``path`` (images embedded: one file)."""
    path = Path(path)
    path.write_text(render_debug_html(doc))
    return path


__all__ = ["write_debug_html", "render_debug_html", "plot_error_curve", "plot_search"]
