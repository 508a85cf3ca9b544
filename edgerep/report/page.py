"""report.html: one self-contained page per bundle, verdict first, plots embedded, JSON one link away."""
from __future__ import annotations

from edgerep.report import fmt
from edgerep.report.detect_view import detections_section
from edgerep.report.html_base import badge, esc, kv_table, page, png_figure, table
from edgerep.report.plots import float_layers
from edgerep.report.rows import (accuracy_heading, drop_unit, engine_entries, engine_rows, is_detection, is_psnr,
                                 psnr_text, split_entries)
from edgerep.report.models.results import top1_of

SECTIONS = [("#verdict", "verdict"), ("#engines", "engines"), ("#plots", "plots"), ("#int8", "INT8"),
            ("#fold", "fold"), ("#data", "data"), ("#host", "versions & host")]


def _verdict(report: dict) -> str:
    gate = report.get("gate")
    rows = engine_entries(report)
    if not gate:
        head, cls = badge("NOT GATED", "neutral"), ""
        items = ["<li>no gate ran (deploy with <code>--max-drop</code>, or run <code>edgerep gate</code>)</li>"]
    else:
        ok = gate.get("passed")
        head, cls = badge("PASSED" if ok else "FAILED", "ok" if ok else "bad"), "ok" if ok else "bad"
        checks = sorted(gate.get("checks", []), key=lambda c: c.get("passed", True))
        items = [f'<li class="{"ok" if c.get("passed") else "fail"}">{"ok" if c.get("passed") else "FAIL"}: '
                 f'{esc(str(c.get("message", "")))}</li>' for c in checks]
    items += [f'<li class="fail">warning: {esc(str(w))}</li>' for w in report.get("warnings") or []]
    headline = _headline(report, rows)
    return (f'<section id="verdict" class="verdict {cls}"><b>Gate</b> {head} {headline}'
            f"<ul>{''.join(items)}</ul></section>")


def _headline(report: dict, rows) -> str:
    """One sentence on the INT8 engine people ship: accuracy with its sample count, drop, speed-up."""
    int8 = [e for _, e, b in rows if not b and e.get("precision") == "int8" and e.get("accuracy")]
    if not int8:
        return ""
    e = int8[0]
    acc = e["accuracy"]
    drop = e.get("drop") or {}
    said = (fmt.detection(acc) if acc.get("metric") == "map" else "PSNR / SSIM " + psnr_text(acc)
            if acc.get("metric") == "psnr" else "top-1 " + fmt.accuracy(top1_of(acc), acc.get("samples")))
    bits = [f"{esc(e.get('name', '?'))} INT8: {esc(said)}",
            f"{esc(drop.get('of', 'top1'))} drop {esc(fmt.points(drop.get('value'), signed=False))} "
            f"{esc(drop.get('unit', 'points'))} vs the unfolded model"]
    sp = e.get("speedup_vs_unfolded")
    if isinstance(sp, (int, float)) and sp > 0:
        bits.append(f"p50 {sp:.1f}x faster than the unfolded model")
    return '<span class="muted">— ' + "; ".join(bits) + "</span>"


def _engines(report: dict) -> str:
    rows = engine_rows(report)
    has_scen = any(r["scenario"] for r in rows)
    has_noise = any(r["noise"] for r in rows)
    has_note = any(r["note"] for r in rows)
    head = ["engine", "precision"] + (["scenario"] if has_scen else []) + \
        ["p50 ms", "p90 ms", "p99 ms", "img/s"] + (["noise"] if has_noise else []) + \
        [accuracy_heading(report), "drop vs unfolded" + (" (dB)" if is_psnr(report) else " (points)"), "verdict"] + \
        (["note"] if has_note else [])
    body, classes = [], []
    for r in rows:
        verdict = {"pass": badge("pass", "ok"), "fail": badge("FAIL", "bad")}.get(r["verdict"], esc(r["verdict"]))
        noise = f'<span class="noise" title="{esc(r["noise"])}">{esc(r["noise"])}</span>' if r["noise"] else ""
        cells = [esc(r["engine"]), esc(r["precision"])] + ([esc(r["scenario"])] if has_scen else []) + \
            [esc(r["p50"]), esc(r["p90"]), esc(r["p99"]), esc(r["throughput"])] + ([noise] if has_noise else []) + \
            [esc(r["top1_n"]), esc(r["drop"]), verdict] + ([esc(r["note"])] if has_note else [])
        body.append(cells)
        classes.append({"pass": "pass", "fail": "fail"}.get(r["verdict"], ""))
    first_num = 2 + has_scen
    numeric = list(range(first_num, first_num + 4)) + [first_num + 4 + has_noise, first_num + 5 + has_noise]
    note = ""
    lat = [((e.get("latency") or {}).get("queries"), (e.get("latency") or {}).get("batch"),
            (e.get("latency") or {}).get("samples_source")) for _, e, _ in engine_entries(report)]
    if lat and lat[0][0]:
        what = ("COCO mAP (pycocotools; annotations/test.json and predictions/ in the bundle)" if is_detection(report)
                else "PSNR / SSIM on Y, scale pixels shaved (scikit-image; per image in sr/ in the bundle)"
                if is_psnr(report) else "top-1")
        inputs = f" on {esc(lat[0][2])}" if lat[0][2] else ""  # what was timed: an SR frame's size matters
        note = (f'<p class="muted">Latency: batch {esc(str(lat[0][1] or 1))}{inputs}, percentiles over each engine\'s '
                f"timed runs; see the <a href=\"#plot-latency\">latency plot</a>. Accuracy: {what} on the held-out "
                f'test split against the <b>unfolded</b> FP32 model; see the <a href="#plot-accuracy">accuracy plot</a>.</p>')
    return ('<h2 id="engines">Engines</h2>' + table(head, body, numeric=numeric, row_class=classes, raw=True) + note)


_CAPTIONS = {
    "latency.png": ("plot-latency", "latency per engine",
                    "Log scale: bar = median (p50) per batch, whisker = p90 to p99; hatched = a run marked noisy."),
    "accuracy.png": ("plot-accuracy", "accuracy and drop per engine",
                     "Left: top-1 on the test split. Right: points lost against the unfolded model; "
                     "dashed = the gate's limit."),
    "sr/crop.png": ("sr-crop", "SR crop: bicubic, unfolded FP32, INT8, HR",
                    "One crop of the first test image, where INT8 differs most from FP32, enlarged without "
                    "smoothing; each title: PSNR on Y of the whole image (the report's number) and of the crop; "
                    "the last panel is |INT8 - FP32| on Y, amplified."),
    "sqnr.png": ("plot-sqnr", "INT8 SQNR per layer",
                 "Higher is better. Weight SQNR per-tensor and per-channel, and the model output's SQNR when "
                 "only that layer is INT8 (from the INT8-friendliness check)."),
}


def _plots(plots: dict[str, bytes]) -> str:
    if not plots:
        return '<h2 id="plots">Plots</h2><p class="muted">nothing to plot (no latency or accuracy measured)</p>'
    figs = []
    for name, png in plots.items():
        anchor, alt, cap = _CAPTIONS.get(name, (name.split(".")[0], name, ""))
        figs.append(png_figure(png, alt, cap, anchor))
    return '<h2 id="plots">Plots</h2>' + "".join(figs)


def _int8(report: dict, links: dict[str, str]) -> str:
    q = report.get("quantization") or {}
    out = ['<h2 id="int8">INT8</h2>']
    pol = q.get("cpu_policy") or {}
    if pol:
        out.append(f"<p>CPU policy <b>{esc(str(pol.get('name')))}</b>: {esc(str(pol.get('reason', '')))}</p>")
    note = (q.get("reference") or {}).get("resolution_note")
    if note:
        out.append(f'<p class="muted">Selection set: {esc(note)}.</p>')
    cal = q.get("calibration") or {}
    if cal:
        cached = "reused from the cache" if cal.get("was_cached") else "computed"
        out.append(f"<p>Calibration: {esc(str(cal.get('method')))} ranges from {esc(str(cal.get('samples')))} "
                   f"images ({cached}, key <code>{esc(str(cal.get('key', ''))[:16])}</code>).</p>")
    eq = q.get("equalization") or {}
    if eq.get("applied"):
        out.append(f"<p>Cross-layer equalization: {len(eq.get('pairs') or [])} layer pairs, largest channel range "
                   f"ratio {eq.get('range_ratio_before', 0):.1f} &rarr; {eq.get('range_ratio_after', 0):.1f}.</p>")
    cands = q.get("candidates") or []
    if cands:
        sim = any(c.get("simulated_top1") is not None for c in cands)
        top1 = any(c.get("top1") is not None for c in cands)  # a classifier; mAP / PSNR have only the drop
        n = (q.get("reference") or {}).get("samples")
        head = ["policy"] + (["top-1 on the optimized session"] if top1 else []) + \
            (["QDQ simulation top-1"] if sim else []) + [f"drop ({drop_unit(q)})", "latency ms", "accepted", "why"]
        rows = []
        for c in cands:
            p = c.get("policy")
            p = p.get("name") if isinstance(p, dict) else p
            rows.append([str(p)] + ([fmt.accuracy(c.get("top1"), n)] if top1 else []) +
                        ([fmt.pct(c.get("simulated_top1"))] if sim else []) +
                        [fmt.points(c.get("drop"), signed=False), fmt.ms(c.get("latency_ms")),
                         "yes" if c.get("accepted") else "no", str(c.get("reason", ""))])
        numeric = list(range(1, len(head) - 2))
        out.append("<h3>CPU policies tried</h3>" + table(head, rows, numeric=numeric))
        out.append('<p class="muted">Each policy is measured on the optimized onnxruntime session, the fused INT8 '
                   "kernels that will run. The QDQ simulation (graph optimizations off) is measured only for a "
                   "rejected policy, to tell kernel saturation from bad ranges.</p>")
    trt = q.get("tensorrt") or {}
    if trt:
        top1 = (f"simulated top-1 {esc(fmt.pct(trt.get('simulated_top1')))}, "
                if trt.get("simulated_top1") is not None else "")
        out.append(f"<p>TensorRT QDQ file: {top1}simulated drop "
                   f"{esc(fmt.points(trt.get('simulated_drop')))} {drop_unit(q)} (QDQ simulated in float; the plan itself "
                   "is measured in the engine table where TensorRT exists).</p>")
    out.append('<h3 id="float-layers">Layers kept in float</h3>')
    excl = q.get("excluded_nodes") or []
    if excl:
        out.append(table(["layer", "ONNX node", "target", "precision", "why"],
                         [[str(e.get("layer") or ""), str(e.get("node")), str(e.get("target", "")),
                           str(e.get("precision", "")), str(e.get("why", ""))] for e in excl]))
    else:
        out.append("<p>None: every quantizable layer runs in INT8 (the accuracy budget held without exclusions).</p>")
    out.append(_check(report, links))
    return "".join(out)


def _check(report: dict, links: dict[str, str]) -> str:
    check = report.get("check") or {}
    sm = check.get("summary") or {}
    link = links.get("check_html")
    more = f' The per-layer page with plots: <a href="{esc(link)}">check.html</a>.' if link else ""
    if not sm:
        return f'<h3 id="check">INT8 friendliness</h3><p class="muted">The check did not run.{more}</p>'
    c, cf = sm.get("counts") or {}, sm.get("counts_with_fixes") or {}
    kept = float_layers(report)
    rows, classes = [], []
    for l in check.get("layers") or []:
        w = (l.get("metrics") or {}).get("weight") or {}
        kind = {"ok": "ok", "warn": "warn", "bad": "bad"}
        rows.append([esc(l.get("name", "?")), esc(l.get("block", "")),
                     badge(l.get("verdict", "?"), kind.get(l.get("verdict"), "neutral")),
                     badge(l.get("verdict_with_fixes", "?"), kind.get(l.get("verdict_with_fixes"), "neutral")),
                     esc(_db(w.get("sqnr_per_tensor_db"))), esc(_db(w.get("sqnr_per_channel_db"))),
                     "float" if l.get("name") in kept else "INT8",
                     esc("; ".join(l.get("reasons") or []) or "-")])
        classes.append("")
    advice = "".join(f"<li>{esc(a)}</li>" for a in sm.get("top_advice") or [])
    m = check.get("measured") or {}
    lead = (f"<p><b>{esc(m['headline'])}</b> {esc(m['scored'])} The verdicts below are the check's predictions."
            "</p>") if m else ""
    return (f'<h3 id="check">INT8 friendliness (edgerep check)</h3>{lead}<p>{esc(str(sm.get("layers")))} folded layers. '
            f"Plain INT8 (per-tensor weights): {c.get('ok', 0)} ok, {c.get('warn', 0)} warn, {c.get('bad', 0)} bad; "
            f"with the advised fixes: {cf.get('ok', 0)} ok, {cf.get('warn', 0)} warn, {cf.get('bad', 0)} bad. "
            f"Worst layer: <b>{esc(str(sm.get('worst_layer')))}</b>.{more} "
            f'See also the <a href="#plot-sqnr">SQNR plot</a>.</p>'
            + (f"<ul>{advice}</ul>" if advice else "")
            + table(["layer", "block", "plain INT8", "with fixes", "W SQNR tensor (dB)", "W SQNR channel (dB)",
                     "deployed as", "reasons"], rows, numeric=[4, 5], raw=True))


def _db(v) -> str:
    return fmt.DASH if not isinstance(v, (int, float)) else ("exact" if v == float("inf") else f"{v:.1f}")


def _fold(report: dict) -> str:
    f = report.get("fold") or {}
    if not f:
        return '<h2 id="fold">Fold</h2><p class="muted">no fold in this report</p>'
    rows = [("convolutions", f"{f.get('convs_before')} → {f.get('convs_after')}"),
            ("parameters", f"{fmt.count(f.get('params_before'))} → {fmt.count(f.get('params_after'))}"),
            ("max error vs the unfolded model", f"{fmt.sci(f.get('max_abs_error'))} absolute, "
                                                f"{fmt.sci(f.get('max_rel_error'))} relative"),
            ("fold time", fmt.seconds(f.get("seconds")))]
    notes = "".join(f"<li>{esc(str(n))}</li>" for n in f.get("notes") or [])
    return '<h2 id="fold">Fold</h2>' + kv_table(rows) + (f"<ul>{notes}</ul>" if notes else "")


def _data(report: dict, links: dict[str, str]) -> str:
    out = ['<h2 id="data">Data and preprocessing</h2>']
    splits = report.get("splits") or {}
    split_rows = split_entries(report)
    if split_rows:
        use = {"calibration": "sets the activation ranges", "selection": "decides every choice (method, policy, "
               "layers kept in float)", "test": "only reported and gated",
               "train": "what the recovery ladder learns on (--train-data)"}
        out.append(table(["split", "images", "used for", "source", "labelled", "fingerprint"],
                         [[k, fmt.count(v.get("count")), use.get(k, ""),
                           " ".join(str(x) for x in (v.get("source"), v.get("how")) if x),
                           {True: "yes", False: "no"}.get(v.get("labelled"), fmt.DASH),
                           str(v.get("fingerprint") or "")] for k, v in split_rows], numeric=[1]))
        overlap = splits.get("overlap") or {}
        if overlap:
            out.append('<p class="fail"><b>The splits overlap:</b> ' + esc(", ".join(
                f"{k} {v}" for k, v in overlap.items())) + "</p>")
        elif len(split_rows) > 1:
            out.append('<p class="muted">The splits are disjoint.'
                       + (f' Every sample of each is named in <a href="{esc(links["splits"])}">splits.json</a>.'
                          if links.get("splits") else "") + "</p>")
        if splits.get("note"):
            out.append(f'<p class="muted">{esc(str(splits["note"]))}</p>')
    else:
        d = report.get("data") or {}
        if d:
            rows = [("calibration", f"{d.get('calibration')} ({d.get('calibration_split') or 'calib'} split), "
                                    f"{fmt.count(d.get('calibration_samples'))} images"),
                    ("evaluation", f"{d.get('evaluation')}, {fmt.count(d.get('evaluation_samples'))} images")]
            if d.get("calibration_recipe"):
                rows.append(("calibration recipe", str(d["calibration_recipe"])))
            out.append(kv_table(rows))
    pre = report.get("preprocessing") or {}
    m = report.get("model") or {}
    if pre:
        def seq(v):
            return ", ".join(f"{x:.4g}" if isinstance(x, (int, float)) else str(x) for x in v) if v else fmt.DASH

        def scale(v):
            if not isinstance(v, (int, float)) or v <= 0:
                return str(v) if v is not None else fmt.DASH
            inv = 1.0 / v
            return f"1/{round(inv)}" if abs(inv - round(inv)) < 1e-6 and inv > 1 else f"{v:.4g}"

        out.append("<h3>Preprocessing</h3>" + kv_table([
            ("input shape (C, H, W)", seq(pre.get("input_shape"))), ("mean", seq(pre.get("mean"))),
            ("std", seq(pre.get("std"))), ("scale", scale(pre.get("scale"))),
            ("resize", str(pre.get("resize") or "none")), ("channel order", str(pre.get("channel_order") or fmt.DASH)),
            ("taken from", str(pre.get("source") or fmt.DASH))]))
    elif m.get("input_shape"):
        out.append(f"<p>Input shape (C, H, W): {esc(', '.join(str(x) for x in m['input_shape']))}.</p>")
    return "".join(out)


def _host(report: dict, manifest: dict | None) -> str:
    out = ['<h2 id="host">Versions and host</h2>']
    m = report.get("model") or {}
    t = report.get("target") or {}
    rows = [("model", f"{m.get('name', '?')} ({m.get('arch', '?')}, {m.get('source_format', '?')} checkpoint)"),
            ("checkpoint", f"{m.get('checkpoint', '?')} (sha256 {str(m.get('sha256', ''))[:16]})")]
    if t:
        rows.append(("target", f"{t.get('name')}: {t.get('description', '')}"))
    versions = (manifest or {}).get("versions") or {}
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    h = report.get("host") or {}
    cpu = h.get("cpu_features") or {}
    if h:
        rows.append(("host", f"{cpu.get('model_name') or h.get('processor') or h.get('machine')}, "
                             f"{h.get('cpu_count')} cores, INT8 dot product: {cpu.get('int8_dot') or 'none'}, "
                             f"python {h.get('python')}, torch threads {h.get('torch_threads')}"))
    out.append(kv_table(rows))
    tm = report.get("timings_s") or {}
    if tm:
        out.append("<h3>Time per step</h3>" + table(list(tm), [[fmt.seconds(v) for v in tm.values()]],
                                                    numeric=range(len(tm))))
    return "".join(out)


def to_html(report: dict, plots: dict[str, bytes] | None = None, *, manifest: dict | None = None,
            links: dict[str, str] | None = None) -> str:
    """The whole page. ``links``: name -> relative path of the files beside it (check_html, json, md)."""
    from edgerep.report.plots import report_plots

    plots = report_plots(report) if plots is None else plots
    links = dict(links or {})
    m = report.get("model") or {}
    files = [(links[k], t) for k, t in (("check_html", "check.html"), ("json", "report.json"),
                                        ("md", "report.md"), ("manifest", "manifest.json"),
                                        ("splits", "splits.json")) if links.get(k)]
    nav = list(SECTIONS) + files
    kind = report.get("kind", "deploy")
    body = (f"<h1>edgerep {esc(kind)} report: {esc(str(m.get('name', '?')))}</h1>"
            f'<p class="sub">{esc(str(m.get("arch", "")))} · target {esc(str((report.get("target") or {}).get("name", "?")))}'
            + (" · files: " + " · ".join(f'<a href="{esc(h)}">{esc(t)}</a>' for h, t in files) if files else "")
            + "</p>" + _verdict(report) + _engines(report) + _plots(plots) + detections_section(report)
            + _int8(report, links) + _fold(report)
            + _data(report, links) + _host(report, manifest)
            + f"<footer>edgerep report, schema {esc(str(report.get('schema', '?')))}. Every number above is in "
            + (f'<a href="{esc(links["json"])}">report.json</a>' if links.get("json") else "report.json")
            + ".</footer>")
    return page(f"edgerep: {m.get('name', '')}", body, nav)
