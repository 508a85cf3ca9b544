"""report.html / report.md / check.html of a real demo bundle read as pages for people: verdict first,
linked sections, numbers rounded with their image counts, no Python repr or raw JSON; new report
fields (latency scenario and noise, splits, preprocessing) shown when present, absent ones skipped."""
from __future__ import annotations

import copy
import json
import re

from edgerep.report import fmt
from edgerep.report.page import to_html
from edgerep.report.plots import report_plots
from edgerep.report.render import to_markdown, write_reports


def _report(bundle) -> dict:
    return json.loads((bundle / "report.json").read_text())


def test_report_html_is_one_page_verdict_first_with_links(demo_bundle):
    html = (demo_bundle / "report.html").read_text()
    assert html.index('id="verdict"') < html.index('id="engines"') < html.index('id="plots"') \
        < html.index('id="int8"') < html.index('id="fold"') < html.index('id="data"') < html.index('id="host"')
    for anchor in re.findall(r'href="#([^"]+)"', html):  # every in-page link has its target
        assert f'id="{anchor}"' in html, anchor
    assert 'href="check/check.html"' in html and (demo_bundle / "check/check.html").exists()
    assert 'href="report.json"' in html
    # the three splits, each with its image count, and the file naming every sample
    r = _report(demo_bundle)
    for name, split in r["splits"].items():
        if isinstance(split, dict) and "count" in split:
            assert f"<td>{name}</td><td class=num>{split['count']:,}</td>" in html
    assert 'href="splits.json"' in html and (demo_bundle / "splits.json").exists() and "disjoint" in html
    # self-contained: plots embedded, nothing fetched from the network
    assert html.count("data:image/png;base64,") == 3
    assert not re.search(r'(src|href)="https?://', html)
    # no raw JSON dump, no <pre>, no Python repr of a dict or list
    assert "<pre>" not in html and '"schema":' not in html
    assert not re.search(r"\{'[a-z_]+': ", html) and "[{'" not in html


def test_the_latency_note_says_what_was_timed(demo_bundle):
    """An SR frame's size decides its latency: the note under the engines table names the timed inputs."""
    r = _report(demo_bundle)
    source = next(e["latency"]["samples_source"] for e in r["engines"] if (e.get("latency") or {}).get("queries"))
    assert source.startswith("selection set") and f"Latency: batch 1 on {source}, percentiles" in to_html(r)
    sr = copy.deepcopy(r)
    for e in [sr["baseline"], *sr["engines"]]:
        if e.get("latency"):
            e["latency"]["samples_source"] = "selection set: the whole LR image of chelsea.png (150x225)"
    assert "batch 1 on selection set: the whole LR image of chelsea.png (150x225), percentiles" in to_html(sr)


def test_numbers_are_rounded_with_image_counts(demo_bundle):
    r = _report(demo_bundle)
    html = (demo_bundle / "report.html").read_text()
    md = (demo_bundle / "report.md").read_text()
    top1, n = r["baseline"]["accuracy"]["value"], r["baseline"]["accuracy"]["samples"]
    shown = f"{top1:.2f}% ({fmt.correct_of(top1, n)} of {n})"
    assert shown in html and shown in md
    assert str(top1) not in html and str(top1) not in md  # never the unrounded float
    assert not re.search(r"\d\.\d{5,}", re.sub(r"data:image/png;base64,[^\"']+", "", html))


def test_check_html_reads_well(demo_bundle):
    page = (demo_bundle / "check" / "check.html").read_text()
    assert "{'" not in page and "Time per step:" in page
    assert 'href="../report.html"' in page  # back to the bundle's report
    # the check's fp32 top-1 uses a handful of images: the count and a caveat stand beside it
    m = re.search(r"fp32 top-1 (\d+\.\d\d)% \((\d+) of (\d+) images; this check uses only", page)
    assert m and int(m.group(3)) < fmt.SMALL_SAMPLE


def test_new_fields_are_rendered_and_old_reports_still_render(demo_bundle, tmp_path):
    r = _report(demo_bundle)
    new = copy.deepcopy(r)
    lat = new["engines"][1]["latency"]
    lat.update(scenario="SingleStream", queries=1024, p99_ms=None, cv=0.42, loadgen="5.1", noisy=True,
               noise_reason="cv 0.42 > 0.10 under load")
    new["splits"] = {"calibration": {"count": 179, "fingerprint": "ab12", "source": "digits:calib"},
                     "selection": {"count": 90, "fingerprint": "cd34", "source": "digits:select"},
                     "test": {"count": 539, "fingerprint": "ef56", "source": "digits:test"},
                     "note": "disjoint by construction"}
    new["preprocessing"] = {"input_shape": [1, 16, 16], "mean": [0.3], "std": [0.25], "scale": 1 / 16,
                            "resize": "bilinear", "channel_order": "gray", "source": "checkpoint"}
    html = to_html(new, report_plots(new))
    assert "SingleStream" in html and "noisy: cv 0.42 &gt; 0.10 under load" in html
    assert "disjoint by construction" in html and "cd34" in html and "bilinear" in html and "checkpoint" in html
    md = to_markdown(new)
    assert "noisy: cv 0.42" in md and "selection 90 images" in md
    # an old, minimal report: no check, no quantization, no gate
    old = {"model": {"name": "m"}, "engines": [{"name": "onnxruntime-cpu", "precision": "fp32",
                                                "latency": {"p50_ms": 1.0}}]}
    paths = write_reports(old, tmp_path)
    page = paths["html"].read_text()
    assert "NOT GATED" in page and "The check did not run" in page and "latency.png" in paths
    assert 'href="check/check.html"' not in page  # never a link to a page that is not there


def test_latency_plot_is_log_scale_and_readable():
    """A 0.03 ms engine beside a 100 ms tail: the plot exists and the p50 labels are in it (log axis)."""
    from edgerep.report import plots

    r = {"engines": [{"name": "a", "precision": "int8", "latency": {"p50_ms": 0.03, "p90_ms": 0.05, "p99_ms": 120.0}},
                     {"name": "b", "precision": "fp32", "latency": {"p50_ms": 0.6, "p90_ms": 0.9, "p99_ms": 2.0}}]}
    assert plots.latency_png(r)[:8] == b"\x89PNG\r\n\x1a\n"
    ax = plots.latency_figure(r).axes[0]
    assert ax.get_xscale() == "log"
    texts = [t.get_text() for t in ax.texts]
    assert any("p50 0.03 ms" in t for t in texts) and any("p50 0.6 ms" in t for t in texts)


def test_console_table_reads_well(demo_bundle, capsys):
    """The terminal table: top-1 with its image count, the pages' paths at the end."""
    from edgerep.report.console import print_engine_table

    r = _report(demo_bundle)
    print_engine_table(r, bundle=demo_bundle)
    out = capsys.readouterr().out
    acc = r["baseline"]["accuracy"]
    assert f"{acc['value']:.2f}% ({fmt.correct_of(acc['value'], acc['samples'])} of {acc['samples']})" in out
    assert f"report: {demo_bundle / 'report.html'}" in out and "check.html" in out


def test_quantize_reference_line_is_rounded_with_its_count():
    from edgerep.commands.quantize import reference_line

    line = reference_line({"source": "reference (unfolded FP32 model)", "top1": 99.07235621521335, "samples": 539,
                           "data": "digits:test"})
    assert line == "reference: the unfolded FP32 model, top-1 99.07% (534 of 539 images, digits:test)"
    few = reference_line({"source": "onnx fp32", "top1": 87.5, "samples": 16})
    assert "(14 of 16 images)" in few and "one image moves it by 6.25 points" in few
