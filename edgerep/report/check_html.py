"""``write_check_html``: the ``edgerep check`` report as one HTML page with matplotlib PNGs beside it.

Plots: per-layer SQNR bars (weights per-tensor / per-channel, input min-max / percentile, model
output with the layer INT8) against the thresholds; weight histograms and per-channel ranges of
the worst layers; branch-attribution bars of the flagged layers' outlier channels. Files are
written to a temporary folder next to ``out_dir`` and moved into place when all exist.
"""
from __future__ import annotations

import html
import math
import os
import shutil
import tempfile
from pathlib import Path

from edgerep.quant import thresholds as T
from edgerep.report import fmt

#: how many of the worst layers get weight histograms
WORST_LAYERS = 3
#: how many flagged layers get attribution plots
ATTRIBUTION_LAYERS = 6
#: a per-channel plot of more output channels draws lines, not bars
BAR_CHANNELS = 128

_COLOURS = {"ok": "#2e7d32", "warn": "#f9a825", "bad": "#c62828"}
_GREY = "#90a4ae"  # a channel that is not an outlier


def _fig(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _clip(v: float | None, lo: float = -10.0, hi: float = 80.0) -> float:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return float("nan")
    return max(lo, min(hi, v))


def plot_sqnr_bars(report, path: Path) -> Path:
    """Grouped bars of every layer's SQNRs, with the ok/bad thresholds as lines."""
    names = [r.name for r in report.layers]
    series = [("weights per-tensor", [r.weight.sqnr_per_tensor_db for r in report.layers]),
              ("weights per-channel", [r.weight.sqnr_per_channel_db for r in report.layers])]
    if any(r.activation for r in report.layers):
        series += [("input min-max", [r.activation.sqnr_minmax_db if r.activation else None for r in report.layers]),
                   ("input percentile", [r.activation.sqnr_percentile_db if r.activation else None
                                         for r in report.layers])]
    if any(r.sensitivity for r in report.layers):
        series.append(("model output, layer INT8", [r.sensitivity.plain.sqnr_db if r.sensitivity else None
                                                    for r in report.layers]))
    n = len(names)
    fig = _fig(max(8.0, 0.45 * n * len(series) / 2.5 + 3), 4.8)
    ax = fig.add_subplot(111)
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(n)]
        ax.bar(xs, [_clip(v) for v in vals], width, label=label)
    ax.axhline(T.WEIGHT_SQNR_OK_DB, color=_COLOURS["ok"], ls="--", lw=1,
               label=f"weights ok >= {T.WEIGHT_SQNR_OK_DB:g} dB")
    ax.axhline(T.WEIGHT_SQNR_BAD_DB, color=_COLOURS["bad"], ls="--", lw=1,
               label=f"weights bad < {T.WEIGHT_SQNR_BAD_DB:g} dB")
    ax.axhline(T.SENS_SQNR_BAD_DB, color=_COLOURS["bad"], ls=":", lw=1, label=f"output bad < {T.SENS_SQNR_BAD_DB:g} dB")
    ax.set_xticks(range(n))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    for tick, r in zip(ax.get_xticklabels(), report.layers):
        tick.set_color(_COLOURS[r.verdict])
    ax.set_ylabel("SQNR (dB), 8-bit symmetric")
    ax.set_title("INT8 SQNR per folded layer (label colour = plain-INT8 verdict)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_weights(layer, path: Path) -> Path:
    """Weight histogram (log counts) and per-output-channel max |w| of one layer."""
    fig = weights_figure(layer)
    fig.savefig(path)
    return path


def weights_figure(layer):
    """``plot_weights``' figure, unsaved."""
    w = layer.weight
    fig = _fig(9.0, 3.2)
    ax1, ax2 = fig.add_subplot(121), fig.add_subplot(122)
    edges, counts = w.histogram.get("edges", []), w.histogram.get("counts", [])
    if counts and len(edges) == len(counts) + 1:
        ax1.stairs(counts, edges, fill=True, color="#5c6bc0")  # one patch, not one per bin
        ax1.set_yscale("log")
    ax1.set_title(f"{layer.name}: folded weights (kurtosis {w.kurtosis:.1f})", fontsize=9)
    ax1.set_xlabel("weight")
    ax1.set_ylabel("count (log)")
    ch = w.channel_absmax
    if ch:
        outl = {c.channel for c in layer.attribution.channels} if layer.attribution.outlier_channels else set()
        if len(ch) <= BAR_CHANNELS:
            ax2.bar(range(len(ch)), ch, color=[_COLOURS["bad"] if i in outl else _GREY for i in range(len(ch))])
        else:  # line collections, not a patch per channel: a 1,280-channel plot 0.93 -> 0.31 s
            floor = min((v for v in ch if v > 0), default=1.0) / 2  # log axis: a dead channel drawn at the floor
            for red in (False, True):  # the outlier channels drawn last, on top
                idx = [i for i in range(len(ch)) if (i in outl) == red]
                ax2.vlines(idx, floor, [max(ch[i], floor) for i in idx], colors=_COLOURS["bad"] if red else _GREY,
                           lw=1.5 if red else max(0.5, 300 / len(ch)))
        ax2.set_yscale("log")
    ax2.set_title(f"max |w| per output channel (spread {w.channel_spread:.1f}x)", fontsize=9)
    ax2.set_xlabel("output channel")
    fig.tight_layout()
    return fig


def plot_attribution(layer, path: Path) -> Path:
    """Per outlier channel, each train-time branch's max |w| in that channel (log scale)."""
    attr = layer.attribution
    chans = attr.channels
    keys = list(attr.branches)
    fig = _fig(max(5.0, 1.3 * len(chans) + 2), 3.4)
    ax = fig.add_subplot(111)
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        vals = []
        for c in chans:
            share = next((b for b in c.branches if b.branch == key), None)
            vals.append(max(share.peak, 1e-6) if share else 1e-6)
        xs = [j + (i - (len(keys) - 1) / 2) * width for j in range(len(chans))]
        ax.bar(xs, vals, width, label=attr.branches[key])
    ax.set_yscale("log")
    ax.set_xticks(range(len(chans)))
    ax.set_xticklabels([f"ch {c.channel}\n({c.ratio_to_median:.0f}x median)" for c in chans], fontsize=8)
    ax.set_ylabel("max |w| of the branch in the channel")
    ax.set_title(f"{layer.name}: branch attribution of outlier channels", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _e(v) -> str:
    return html.escape(str(v))


def _n(v: float | None, fmt: str = "{:.1f}") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "exact" if v > 0 else "-inf"
    return fmt.format(v)


def _badge(v: str) -> str:
    return f'<span class="v" style="background:{_COLOURS[v]}">{_e(v)}</span>'


def fp32_sentence(report, lead: str = "") -> str:
    """``fp32 top-1 87.50% (14 of 16 images; ...caveat)`` from the check's sensitivity images, or ''."""
    fp = report.fp32 or {}
    if fp.get("top1") is None:
        return ""
    n = report.data.get("eval_images")
    top1 = 100 * fp["top1"]
    got = fmt.correct_of(top1, n)
    if got is None:
        return f"{lead}fp32 top-1 {fmt.pct(top1)}"
    text = f"{lead}fp32 top-1 {fmt.pct(top1)} ({got} of {n} images"
    caveat = fmt.small_sample_note(n, "this check")
    if caveat:
        return f"{text}; {caveat}; deploy measures the whole test split)"
    return text + ")"


def measured_html(measured: dict | None) -> str:
    """The measurement that outranks the check's predictions, and the predictions scored against it."""
    if not measured:
        return ""
    return (f'<h2 id="measured">Measured by the deploy</h2><p><b>{_e(measured["headline"])}</b></p>'
            f"<p>{_e(measured['scored'])} The verdicts and advice below are the check's predictions; where they "
            "disagree with the measurement, the measurement holds.</p>")


def _measured_line(name: str, measured: dict | None) -> list[str]:
    if not measured:
        return []
    if name in measured.get("sensitive", []):
        return ['<li class="adv">measured: kept in float by the deploy to meet the accuracy budget</li>']
    held = ", and the accuracy budget held" if measured.get("budget_held") else ""
    return [f"<li>measured: stayed INT8 in the deploy{held}</li>"]


def render_html(report, images: dict[str, str | list[tuple[str, str]]], report_link: str | None = None,
                measured: dict | None = None) -> str:
    """The page's HTML, linking the PNG files named in ``images`` (and the deploy report, when given);
    with ``measured`` (a deploy's measurement) the page leads with it."""
    s = report.summary
    c, cf = s["counts"], s["counts_with_fixes"]
    rows = []
    for r in report.layers:
        w, a, sen = r.weight, r.activation, r.sensitivity
        dom = r.attribution.dominant_branch
        rows.append(
            "<tr>" + "".join(f"<td>{x}</td>" for x in (
                _e(r.name), _e(r.block), _badge(r.verdict), _badge(r.verdict_with_fixes),
                f"{_n(w.sqnr_per_tensor_db)} / {_n(w.sqnr_per_channel_db)}", _n(w.channel_spread, "{:.1f}x"),
                _n(w.kurtosis), _n(100 * w.beyond_k_sigma, "{:.2f}%"),
                f"{_n(a.sqnr_minmax_db)} / {_n(a.sqnr_percentile_db)}" if a else "-",
                (f"{_n(a.min, '{:.3g}')} .. {_n(a.max, '{:.3g}')} (|x| p99.9 "
                 f"{_n(a.abs_percentiles.get('99.9'), '{:.3g}')}, p99.99 {_n(a.amax_percentile, '{:.3g}')})")
                if a else "-",
                _n(a.out_sqnr_w_per_channel_worst_db) if a else "-",
                (f"{_n(sen.plain.sqnr_db)} / {_n(sen.fixed.sqnr_db) if sen.fixed else '='}" if sen else "-"),
                _e(r.attribution.branches.get(dom, dom)) if dom else "-",
            )) + "</tr>")
    details = []
    for r in report.layers:
        if r.verdict == "ok" and not r.attribution.outlier_channels:
            continue
        items = [f"<li>{_e(x)}</li>" for x in r.reasons]
        if r.attribution.outlier_channels:
            items += [f'<li class="attr">{_e(ch.sentence)}</li>' for ch in r.attribution.channels]
        elif r.attribution.channels:
            items.append(f"<li>largest channel, for context: {_e(r.attribution.channels[0].sentence)}</li>")
        elif not r.attribution.available:
            items.append(f"<li>{_e(r.attribution.note)}</li>")
        items += [f'<li class="adv">&rarr; {_e(a.text)}</li>' for a in r.advice if a.kind != "ok"]
        items += _measured_line(r.name, measured)
        details.append(f"<h3>{_e(r.name)} {_badge(r.verdict)} with fixes {_badge(r.verdict_with_fixes)}</h3>"
                       f"<ul>{''.join(items)}</ul>")
    figs = [f'<h2 id="sqnr">SQNR per layer</h2><img src="{_e(images["sqnr"])}" alt="SQNR per layer">']
    if images.get("weights"):
        figs.append("<h2 id=\"weights\">Weights of the worst layers</h2>" + "".join(
            f'<img src="{_e(f)}" alt="weights of {_e(n)}">' for n, f in images["weights"]))
    if images.get("attribution"):
        figs.append("<h2 id=\"attribution\">Branch attribution</h2>" + "".join(
            f'<img src="{_e(f)}" alt="attribution of {_e(n)}">' for n, f in images["attribution"]))
    timings = ", ".join(f"{k} {fmt.seconds(v)}" for k, v in report.timings.items())
    back = (f'<p>Part of a deploy bundle: the <a href="{_e(report_link)}">deploy report</a> has the engines, '
            "latency and test-split accuracy.</p>") if report_link else ""
    sections = [("measured", "measured")] if measured else []
    sections += [("advice", "advice"), ("layers", "layers"), ("flagged", "flagged layers"), ("sqnr", "SQNR plot")]
    sections += [(k, t) for k, t in (("weights", "weights"), ("attribution", "attribution")) if images.get(k)]
    sections.append(("thresholds", "thresholds"))
    nav = " · ".join(f'<a href="#{k}">{t}</a>' for k, t in sections) + (
        f' · <a href="{_e(report_link)}">deploy report</a>' if report_link else "")
    thr = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in T.as_dict().items())
    pred = "predicted " if measured else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>edgerep check: {_e(report.model)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; }}
td:first-child, td:nth-child(2), td:last-child, th:first-child, th:nth-child(2), th:last-child {{ text-align: left; }}
.v {{ color: white; padding: 1px 6px; border-radius: 3px; font-size: 12px; }}
.attr {{ color: #1a237e; }} .adv {{ font-weight: 600; }}
p.nav {{ font-size: 14px; }} p.nav a {{ color: #0550ae; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
</style></head><body>
<h1>edgerep check: {_e(report.model)} {'<span class="v" style="background:#2e7d32">' + pred + 'PASS</span>' if report.passed
                                          else '<span class="v" style="background:#c62828">' + pred + 'FAIL</span>'}</h1>
<p class="nav">{nav}</p>
{measured_html(measured)}
<p>{s['layers']} folded layers, input {_e(' x '.join(str(v) for v in report.input_shape))}. Plain INT8 (per-tensor weights, min-max
activations): {c['ok']} ok, {c['warn']} warn, {c['bad']} bad. With fixes (per-channel weights, better clipping):
{cf['ok']} ok, {cf['warn']} warn, {cf['bad']} bad. Worst layer: <b>{_e(s['worst_layer'])}</b>.
Calibration images: {_e(report.data.get('calib_images'))}, sensitivity images: {_e(report.data.get('eval_images'))}
({_e(report.data.get('eval_source'))}){_e(fp32_sentence(report, ", "))}.
Fold max relative error {report.fold_max_rel_error:.1e}.</p>{back}
<h2 id="advice">{'Advice (predicted)' if measured else 'Advice'}</h2><ul>{''.join(f'<li class="adv">{_e(x)}</li>' for x in s['top_advice'])}</ul>
<h2 id="layers">Layers</h2>
<table><tr><th>layer</th><th>block</th><th>plain</th><th>fixed</th><th>W SQNR tensor / channel (dB)</th>
<th>channel spread</th><th>kurtosis</th><th>&gt; {T.K_SIGMA:g} sigma</th><th>input SQNR min-max / pct (dB)</th>
<th>input range</th><th>worst out-channel (dB)</th><th>model out, layer INT8 plain / fixed (dB)</th>
<th>dominant branch</th></tr>
{''.join(rows)}</table>
<h2 id="flagged">Flagged layers</h2>{''.join(details) or '<p>none</p>'}
{''.join(figs)}
<h2 id="thresholds">Thresholds</h2><table>{thr}</table>
<p style="color:#777">edgerep check, format edgerep.check/1. Time per step: {_e(timings)}.</p>
</body></html>
"""


def write_check_html(report, out_dir: str | Path, report_link: str | None = None, measured: dict | None = None,
                     plotted: bool = False) -> Path:
    """Write ``out_dir/check.html`` and its PNGs (``check_*.png``); returns the HTML path.

    ``report_link``: the deploy report's path relative to the page, when the page is part of a bundle.
    ``measured``: what the deploy measured (``edgerep.quant.check_score.score_check``): the page leads
    with it. Called again with it once the deploy has measured, the PNGs already there are kept.
    ``plotted``: the PNGs in ``out_dir`` are this report's already (read from the check cache): kept, not redrawn.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    replot = not plotted and (measured is None or not (out_dir / "check.html").is_file())
    tmp = Path(tempfile.mkdtemp(prefix=".check-", dir=out_dir.parent))
    try:
        images: dict = {"sqnr": "check_sqnr.png", "weights": [], "attribution": []}
        if replot:
            plot_sqnr_bars(report, tmp / images["sqnr"])

        def badness(r):
            return r.sensitivity.plain.sqnr_db if r.sensitivity else r.weight.sqnr_per_tensor_db

        for i, r in enumerate(sorted(report.layers, key=badness)[:WORST_LAYERS]):
            name = f"check_weights_{i}.png"
            if replot:
                plot_weights(r, tmp / name)
            images["weights"].append((r.name, name))
        flagged = [r for r in report.layers if r.attribution.outlier_channels and r.attribution.channels]
        flagged.sort(key=lambda r: -max(c.ratio_to_median for c in r.attribution.channels))
        for i, r in enumerate(flagged[:ATTRIBUTION_LAYERS]):
            name = f"check_attribution_{i}.png"
            if replot:
                plot_attribution(r, tmp / name)
            images["attribution"].append((r.name, name))
        (tmp / "check.html").write_text(render_html(report, images, report_link, measured), encoding="utf-8")
        for old in out_dir.glob("check_*.png") if replot else ():
            old.unlink()
        for f in sorted(tmp.iterdir(), key=lambda f: f.suffix == ".html"):  # the page last
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "check.html"


__all__ = ["write_check_html", "render_html", "fp32_sentence", "plot_sqnr_bars", "plot_weights", "plot_attribution"]
