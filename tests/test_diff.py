"""`edgerep diff` between a real demo bundle and changed copies of it: accuracy with image counts,
latency judged against noise, INT8 verdicts, layers kept in float, file hashes, settings; thresholds
as exit codes; Markdown short enough for a pull-request comment."""
from __future__ import annotations

import copy
import json
import shutil

import pytest

from edgerep.cli import main
from edgerep.report.diff import diff_reports, load_side


def _copy(bundle, dst):
    shutil.copytree(bundle, dst)
    return dst


def _edit(bundle, fn):
    r = json.loads((bundle / "report.json").read_text())
    fn(r)
    (bundle / "report.json").write_text(json.dumps(r))


def _samples(bundle) -> int:
    return _int8(json.loads((bundle / "report.json").read_text()))["accuracy"]["samples"]


def _int8(r):
    return next(e for e in r["engines"] if e["precision"] == "int8")


def _degrade(r):
    """What a worse INT8 run looks like: 3 more test images wrong, a slower p50 with a tight spread,
    a layer whose verdict got worse, a layer kept in float."""
    e = _int8(r)
    n = e["accuracy"]["samples"]
    e["accuracy"]["value"] -= 300.0 / n
    e["accuracy"]["correct"] -= 3
    e["drop"]["value"] += 300.0 / n
    lat = e["latency"]
    lat["p50_ms"] *= 2.0
    lat.update(p90_ms=lat["p50_ms"] * 1.02, noisy=False, noise_reason=None)  # a quiet run, whatever this host did
    layer = r["check"]["layers"][0]
    layer["verdict"], layer["verdict_with_fixes"], layer["reasons"] = "bad", "warn", ["bad: per-tensor SQNR 12 dB"]
    r["quantization"]["excluded_nodes"] = [{"node": "/stage0/conv/Conv", "target": "cpu", "precision": "fp32",
                                            "why": "quantizing only this layer costs 0.56 points"}]


@pytest.fixture()
def worse(demo_bundle, tmp_path):
    """The demo bundle, degraded: report edited as above, another INT8 file, max_drop tightened."""
    new = _copy(demo_bundle, tmp_path / "new")
    _edit(new, _degrade)
    with open(new / "model.int8.onnx", "ab") as f:
        f.write(b"\0")
    m = json.loads((new / "manifest.json").read_text())
    m["settings"]["max_drop"] = 0.1
    m["sha256"].pop("model.int8.onnx")  # hashed from the file itself, which changed
    (new / "manifest.json").write_text(json.dumps(m))
    # baseline latency with a tight spread too, so a 2x p50 is a real change
    base = _copy(demo_bundle, tmp_path / "base")
    _edit(base, lambda r: _int8(r)["latency"].update(p90_ms=_int8(r)["latency"]["p50_ms"] * 1.02, noisy=False,
                                                    noise_reason=None))
    return base, new


def test_identical_bundles_have_no_changes(demo_bundle):
    side = load_side(demo_bundle)
    d = diff_reports(side, load_side(demo_bundle / "report.json"))
    assert d.changed() == 0 and not d.files and not d.settings and not d.layers
    assert all(e.top1_delta == 0 and e.latency_pct == 0 for e in d.engines)
    assert side.hashes.get("model.int8.onnx")  # the manifest keeps the files' hashes


def test_diff_names_every_change(worse, tmp_path, capsys):
    base, new = worse
    md_path = tmp_path / "diff.md"
    assert main(["diff", str(base), str(new), "--markdown", str(md_path)]) == 0  # no threshold: never fails
    md = capsys.readouterr().out
    assert md == md_path.read_text()
    row = next(l for l in md.splitlines() if l.startswith("| `onnxruntime-cpu/int8`"))
    assert f"{-300.0 / _samples(base):+.2f} (3 images fewer)" in row and "+100.0%, slower" in row
    assert "`stage0`: plain ok → bad, with fixes ok → warn" in md
    assert "`/stage0/conv/Conv (cpu)` now kept in float" in md
    assert "`model.int8.onnx`" in md and "settings.max_drop: 0.5 → 0.1" in md
    assert len(md.splitlines()) < 45  # a PR comment, not a report


def test_thresholds_fail_like_the_gate(worse, capsys):
    base, new = worse
    loss = 300.0 / _samples(base)  # 3 images
    rc = main(["diff", str(base), str(new), "--max-accuracy-regression", f"{loss / 2:.2f}",
               "--max-latency-regression-pct", "10"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "**Thresholds failed** (2 of" in out
    assert "❌ onnxruntime-cpu/int8: top-1" in out and f"({-loss:+.2f} points, limit -{loss / 2:.2f})" in out
    assert "❌ onnxruntime-cpu/int8: p50" in out and "and beyond noise" in out
    assert main(["diff", str(base), str(new), "--max-accuracy-regression", f"{loss + 0.1:.2f}",
                 "--max-latency-regression-pct", "150"]) == 0


def test_slowdown_within_noise_does_not_fail(demo_bundle, tmp_path, capsys):
    base = _copy(demo_bundle, tmp_path / "base")
    new = _copy(demo_bundle, tmp_path / "new")

    def spread(factor):
        def f(r):
            lat = _int8(r)["latency"]
            lat["p50_ms"] = 1.0 * factor
            lat["p90_ms"] = 1.3 * factor  # each run's own spread is 30%
            lat["noisy"] = False  # and neither run marked itself noisy (a noisy pair is not judged at all)
        return f
    _edit(base, spread(1.0))
    _edit(new, spread(1.2))
    assert main(["diff", str(base), str(new), "--max-latency-regression-pct", "10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    e = next(x for x in d["engines"] if x["key"] == "onnxruntime-cpu/int8")
    assert e["latency"] == "within noise" and round(e["latency_pct"]) == 20 and round(e["noise_pct"]) == 30
    assert d["passed"] is True and d["schema"] == "edgerep.diff/1"
    # the same 20% with quiet runs (5% floor, 2% spread) is a real slowdown and fails the gate
    _edit(base, lambda r: _int8(r)["latency"].update(p50_ms=1.0, p90_ms=1.02, noisy=False))
    _edit(new, lambda r: _int8(r)["latency"].update(p50_ms=1.2, p90_ms=1.22, noisy=False))
    assert main(["diff", str(base), str(new), "--max-latency-regression-pct", "10"]) == 1


def test_noisy_runs_and_missing_fields(demo_bundle, tmp_path, capsys):
    """An old report (no manifest, no check) against one with the new latency fields: no crash, noise said."""
    old = tmp_path / "old.json"
    r = json.loads((demo_bundle / "report.json").read_text())
    stripped = copy.deepcopy(r)
    stripped.pop("check")
    stripped.pop("quantization")
    old.write_text(json.dumps(stripped))
    new = _copy(demo_bundle, tmp_path / "new")
    _edit(new, lambda r: _int8(r)["latency"].update(scenario="single-stream", noisy=True,
                                                   noise_reason="cv 0.4 > 0.1"))
    assert main(["diff", str(old), str(new)]) == 0
    md = capsys.readouterr().out
    assert "Files changed" not in md and "the base report has no file hashes" in md
    row = next(l for l in md.splitlines() if l.startswith("| `onnxruntime-cpu/int8`"))
    assert "noisy run" in row


def test_bad_input_is_one_line_exit_2(tmp_path, demo_bundle, capsys):
    assert main(["diff", str(tmp_path / "nope.json"), str(demo_bundle)]) == 2
    err = capsys.readouterr().err
    assert "nope.json" in err and len(err.strip().splitlines()) == 1
    assert main(["diff", str(demo_bundle), str(demo_bundle), "--noise-floor-pct", "-1"]) == 2


def test_a_baseline_named_before_and_after_one_vocabulary_still_matches():
    """An older report named the unfolded baseline ``torch-cpu``; deploy and bench now say ``torch-cpu-unfolded``."""
    from edgerep.report.diff import _engines

    def rep(name: str) -> dict:
        return {"baseline": {"name": name, "precision": "fp32", "latency": {"p50_ms": 1.0, "p90_ms": 1.0}},
                "engines": []}

    (d,) = _engines(rep("torch-cpu"), rep("torch-cpu-unfolded"), 0.05)
    assert d.presence == "both" and d.key == "torch-cpu/fp32 unfolded"


def test_a_noisy_pair_cannot_fail_a_latency_limit(demo_bundle, tmp_path, capsys):
    """Issue 20.13: two runs of the same weights, both marked noisy: +61.3% against a ±55% band was
    "slower" and exit 1; it is "too noisy to judge" and passes. A quiet pair with the same change fails."""
    base = _copy(demo_bundle, tmp_path / "base")
    new = _copy(demo_bundle, tmp_path / "new")

    def run(p50, noisy):
        return lambda r: _int8(r)["latency"].update(p50_ms=p50, p90_ms=p50 * 1.55, noisy=noisy,
                                                    noise_reason="CV 0.62 > 0.5" if noisy else None)
    _edit(base, run(1.0, True))
    _edit(new, run(1.613, True))
    assert main(["diff", str(base), str(new), "--max-latency-regression-pct", "10"]) == 0
    out = capsys.readouterr().out
    row = next(l for l in out.splitlines() if l.startswith("| `onnxruntime-cpu/int8`"))
    assert "+61.3%, too noisy to judge" in row
    assert "Not judged (" in out and "): too noisy to pass or fail" in out
    assert "too noisy to judge" in out.splitlines()[0] and "**FAILED**" not in out
    assert "⚠️ onnxruntime-cpu/int8: p50" in out and ("but too noisy to judge (base: CV 0.62 > 0.5; "
                                                     "new: CV 0.62 > 0.5)") in out
    _edit(new, run(1.613, False))  # one noisy run is enough: its median is not a measurement to fail on
    assert main(["diff", str(base), str(new), "--max-latency-regression-pct", "10"]) == 0
    capsys.readouterr()
    _edit(base, run(1.0, False))  # a quiet pair: the same +61.3% is beyond the ±55% band and fails
    assert main(["diff", str(base), str(new), "--max-latency-regression-pct", "10"]) == 1
    assert "and beyond noise" in capsys.readouterr().out


def test_noisy_pair_verdict_without_a_bundle():
    """The same judgement on bare reports: a noisy run makes the pair "too noisy", which no limit can fail."""
    from edgerep.report.diff import Side, apply_thresholds

    def rep(p50: float, noisy: bool) -> dict:
        lat = {"p50_ms": p50, "p90_ms": p50 * 1.55, "noisy": noisy, "noise_reason": "CV 0.62 > 0.5" if noisy else None}
        return {"model": {"name": "m"}, "engines": [{"name": "onnxruntime-cpu", "precision": "int8", "latency": lat}]}

    d = apply_thresholds(diff_reports(Side(rep(1.0, True)), Side(rep(1.613, True))), max_latency_regression_pct=10)
    (e,) = d.engines
    assert e.latency == "too noisy" and round(e.latency_pct, 1) == 61.3 and round(e.noise_pct) == 55
    assert d.passed and d.checks[0].unjudged and "too noisy to judge" in d.checks[0].message
    from edgerep.report.diff_page import to_html

    assert "NOT JUDGED: onnxruntime-cpu/int8" in to_html(d)
    d = apply_thresholds(diff_reports(Side(rep(1.0, False)), Side(rep(1.613, False))), max_latency_regression_pct=10)
    assert d.engines[0].latency == "slower" and not d.passed
