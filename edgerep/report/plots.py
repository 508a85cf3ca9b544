"""The report's plots as PNG bytes (matplotlib's object API, no display, no global state).

- latency per engine: p50 bars with a p90..p99 whisker on a log axis, so a 0.03 ms engine and a
  100 ms tail are both readable on one page;
- accuracy and drop per engine, with the sample count and the gate's limit;
- per-layer INT8 SQNR from the check, with the layers kept in float marked.
"""
from __future__ import annotations

import io
import math

from edgerep.report import fmt
from edgerep.report.rows import engine_entries, gate_threshold
from edgerep.report.models.results import drop_of, top1_of

_OK, _BAD, _BASE, _WARN = "#2e7d32", "#c62828", "#8c959f", "#b26a00"


def new_figure(w: float, h: float):
    """A matplotlib Figure on the Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes, laid out tight."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _colour(e: dict, is_base: bool) -> str:
    if is_base:
        return _BASE
    return _BAD if e.get("verdict") == "fail" else _OK


def percent_axis(ax, lo: float) -> None:
    """An x axis from ``lo`` to a little past 100 (room for labels) whose ticks stop at 100."""
    ax.set_xlim(lo, 100.0 + (100.0 - lo) * 0.25)
    ax.set_xticks([t for t in ax.get_xticks() if lo <= t <= 100.0])


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def latency_png(report: dict) -> bytes | None:
    """The latency figure as PNG; None without latency."""
    fig = latency_figure(report)
    return None if fig is None else png_bytes(fig)


def latency_figure(report: dict):
    """Horizontal p50 bars (log scale) with a whisker from p90 to p99 per engine; None without latency."""
    rows = [(lab, e, b) for lab, e, b in engine_entries(report) if _finite((e.get("latency") or {}).get("p50_ms"))]
    if not rows:
        return None
    fig = new_figure(8.8, 0.62 * len(rows) + 1.5)
    ax = fig.add_subplot(111)
    ys = list(range(len(rows)))[::-1]
    hi = 0.0
    for y, (lab, e, is_base) in zip(ys, rows):
        lat = e["latency"]
        p50 = lat["p50_ms"]
        noisy = bool(lat.get("noisy"))
        ax.barh(y, p50, 0.55, color=_colour(e, is_base), hatch="//" if noisy else None,
                edgecolor="white" if not noisy else _WARN)
        p90, p99 = lat.get("p90_ms"), lat.get("p99_ms")
        tail = [v for v in (p90, p99) if _finite(v)]
        if tail:
            ax.plot([min(tail), max(tail)], [y, y], color="#1f2328", lw=1.4)
            ax.plot(tail, [y] * len(tail), "|", color="#1f2328", ms=9)
        hi = max([hi, p50] + tail)
        text = f"p50 {fmt.ms(p50)} ms" + (f"   p99 {fmt.ms(p99)} ms" if _finite(p99) else "") + \
               ("   (noisy)" if noisy else "")
        ax.text(p50 * 1.08, y + 0.33, text, va="center", fontsize=8)
    ax.set_yticks(ys)
    ax.set_yticklabels([f"{lab}\n{e.get('precision', '')}" for lab, e, _ in rows], fontsize=8)
    ax.set_xscale("log")
    lo = min(e["latency"]["p50_ms"] for _, e, _ in rows)
    ax.set_xlim(lo / 2.5, hi * 3)
    lat0 = rows[0][1]["latency"]
    scen = lat0.get("scenario")
    ax.set_xlabel("ms per batch (log scale); bar = p50, whisker = p90 .. p99")
    ax.set_title(f"latency, batch {lat0.get('batch', 1)}" + (f", {scen} scenario" if scen else ""), fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    return fig


def accuracy_png(report: dict) -> bytes | None:
    """Top-1 (a detector: mAP@[.5:.95]) per engine (with the image count) beside the drop vs unfolded (with the
    gate's limit)."""
    detect = ((report.get("baseline") or {}).get("accuracy") or {}).get("metric") == "map"
    value = (lambda a: (a or {}).get("value") if (a or {}).get("metric") == "map" else None) if detect else top1_of
    rows = [(lab, e, b) for lab, e, b in engine_entries(report) if value(e.get("accuracy")) is not None]
    if not rows:
        return None
    fig = new_figure(9.6, 0.55 * len(rows) + 1.6)
    ax1, ax2 = fig.add_subplot(121), fig.add_subplot(122)
    ys = list(range(len(rows)))[::-1]
    vals = [value(e["accuracy"]) for _, e, _ in rows]
    for y, (lab, e, b), v in zip(ys, rows, vals):
        ax1.barh(y, v, 0.55, color=_colour(e, b))
        ax1.text(v, y, f" {fmt.points(v, signed=False) if detect else fmt.pct(v)}", va="center", fontsize=8)
    lo = max(0.0, min(vals) - 3.0)
    n = rows[0][1]["accuracy"].get("samples")
    if detect:
        ax1.set_xlim(lo, max(vals) * 1.15 + 0.5)
        inst = rows[0][1]["accuracy"].get("instances")
        ax1.set_title(f"mAP@[.5:.95] on the test split ({n} images, {inst} instances)", fontsize=10)
        ax1.set_xlabel("mAP@[.5:.95] (points)")
    else:
        percent_axis(ax1, lo)
        ax1.set_title(f"top-1 on the test split ({n} images)" if n else "top-1", fontsize=10)
        ax1.set_xlabel("top-1 %")
    ax1.set_yticks(ys)
    ax1.set_yticklabels([f"{lab}\n{e.get('precision', '')}" for lab, e, _ in rows], fontsize=8)
    limit = gate_threshold(report, "max_drop")
    drops = [0.0 if b else (drop_of(e) or 0.0) for _, e, b in rows]
    for y, (lab, e, b), d in zip(ys, rows, drops):
        ax2.barh(y, d, 0.55, color=_colour(e, b))
        ax2.text(max(d, 0.0), y, " baseline" if b else f" {fmt.points(d)}", va="center", fontsize=8)
    right = max([0.1] + drops + ([limit] if limit is not None else []))
    if limit is not None:
        ax2.axvline(limit, color=_BAD, ls="--", lw=1)
        ax2.text(limit, len(rows) - 0.45, f" gate {limit:g}", color=_BAD, fontsize=8, va="bottom")
    ax2.set_xlim(min([0.0] + drops) - 0.05, right * 1.35)
    ax2.set_ylim(-0.6, len(rows) - 0.1)
    ax1.set_ylim(-0.6, len(rows) - 0.1)
    ax2.set_yticks(ys)
    ax2.set_yticklabels([])
    ax2.set_title("drop vs the unfolded model (points)", fontsize=10)
    ax2.set_xlabel("mAP points lost" if detect else "top-1 points lost")
    return png_bytes(fig)


def float_layers(report: dict) -> dict[str, list[dict]]:
    """Layer name -> the ``excluded_nodes`` entries (kept in float) whose ONNX node belongs to it."""
    names = [l.get("name", "") for l in (report.get("check") or {}).get("layers") or []]
    out: dict[str, list[dict]] = {}
    for ex in (report.get("quantization") or {}).get("excluded_nodes") or []:
        if ex.get("layer") in names:  # named through the fold's provenance
            out.setdefault(ex["layer"], []).append(ex)
            continue
        node = "/" + str(ex.get("node", "")).strip("/") + "/"
        hit = [n for n in names if f"/{n}/" in node]
        if hit:
            out.setdefault(max(hit, key=len), []).append(ex)
    return out


def sqnr_png(report: dict) -> bytes | None:
    """Per folded layer: weight SQNR per-tensor / per-channel and the model output's SQNR with that layer INT8."""
    layers = (report.get("check") or {}).get("layers") or []
    if not layers:
        return None
    kept = float_layers(report)

    def get(l, *path):
        v = l.get("metrics") or {}
        for p in path:
            v = (v or {}).get(p) if isinstance(v, dict) else None
        return v if isinstance(v, (int, float)) and math.isfinite(v) else None

    series = [("weights per-tensor", [get(l, "weight", "sqnr_per_tensor_db") for l in layers], "#5c6bc0"),
              ("weights per-channel", [get(l, "weight", "sqnr_per_channel_db") for l in layers], "#26a69a"),
              ("model output, only this layer INT8", [get(l, "sensitivity", "plain", "sqnr_db") for l in layers],
               "#ef6c00")]
    series = [s for s in series if any(v is not None for v in s[1])]
    if not series:
        return None
    n = len(layers)
    fig = new_figure(max(8.8, 0.55 * n + 3), 3.9)
    ax = fig.add_subplot(111)
    width = 0.8 / len(series)
    for i, (label, vals, colour) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(n)]
        ax.bar(xs, [min(v, 80.0) if v is not None else 0.0 for v in vals], width, label=label, color=colour)
    from edgerep.quant import thresholds as T

    ax.axhline(T.WEIGHT_SQNR_OK_DB, color=_OK, ls="--", lw=1, label=f"weights ok >= {T.WEIGHT_SQNR_OK_DB:g} dB")
    ax.axhline(T.WEIGHT_SQNR_BAD_DB, color=_BAD, ls="--", lw=1, label=f"weights bad < {T.WEIGHT_SQNR_BAD_DB:g} dB")
    ax.set_xticks(range(n))
    labels = [l.get("name", "?") + (" (float)" if l.get("name") in kept else "") for l in layers]
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    colours = {"ok": _OK, "warn": _WARN, "bad": _BAD}
    for tick, l in zip(ax.get_xticklabels(), layers):
        tick.set_color(colours.get(l.get("verdict"), "#1f2328"))
    ax.set_ylabel("SQNR (dB), 8-bit")
    ax.set_title("INT8 SQNR per folded layer (label colour = plain-INT8 verdict; \"(float)\" = kept in float)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png_bytes(fig)


def report_plots(report: dict) -> dict[str, bytes]:
    """Every plot the report has data for, as ``{file name: PNG bytes}``."""
    out = {}
    for name, make in (("latency.png", latency_png), ("accuracy.png", accuracy_png), ("sqnr.png", sqnr_png)):
        png = make(report)
        if png is not None:
            out[name] = png
    return out
