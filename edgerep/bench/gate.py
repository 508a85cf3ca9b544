"""The CI gate: compare a deploy/bench report against thresholds (and a baseline report).

Thresholds come from flags or a ``gate.toml`` (``[gate]`` table, same names as the flags).
Every failed check is reported; the CLI exits 1 when any fails. Writes JUnit XML and a
Markdown summary fit for a pull-request comment.
"""
from __future__ import annotations

import fnmatch
import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from edgerep.bench.input_stats import MAX_MEAN_SHIFT, MAX_VAR_RATIO
from edgerep.bench.noise import latency_change
from edgerep.errors import EdgerepError
from edgerep.report.models import dump
from edgerep.report.models.results import top1_of

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


DEFAULT_MAX_DROP = 0.5  # deploy's default: a bare `edgerep gate report.json` gates what deploy gates
#: a task's own default where it differs (its unit: dB for SR); ``default_max_drop(task)`` reads it


def default_max_drop(task: str | None) -> float:
    """``--max-drop`` when none is given, in the task's unit: the task module's ``default_max_drop`` (SR: 0.1
    dB), else ``DEFAULT_MAX_DROP`` (0.5 top-1 / mAP points)."""
    if not task:
        return DEFAULT_MAX_DROP
    try:
        from edgerep.tasks import get_task

        return float(getattr(get_task(task), "default_max_drop", DEFAULT_MAX_DROP))
    except Exception:  # an unknown task name in an old report: the task-wide default
        return DEFAULT_MAX_DROP
#: an unfolded FP32 baseline must beat chance at this level (exact one-sided binomial test on its counts)
SANITY_ALPHA = 1e-3
#: "far below the expected top-1": the counts are inconsistent (one-sided exact binomial, SANITY_ALPHA) with a
#: true accuracy of the expected top-1 minus this many points
EXPECT_MARGIN = 5.0
_PREPROCESSING = "--input-shape/--mean/--std/--scale/--resize/--channel-order"
#: beyond these the input statistics are off by what only wrong preprocessing makes (a forgotten /255: ~130
#: running std and ~65,000x); up to them a change of photos does it too (the demo detector on other photos'
#: calibration images: variance 2.2x smaller, scenes v1's calib split: mean 0.67 running std off)
FAR = {"mean_shift": 2.0, "var_ratio": 4.0}


@dataclass
class GateThresholds:
    """What must hold. ``None`` disables a check. Drops are in top-1 percentage points.

    The defaults are deploy's: top-1 drop <= 0.5 points, an exact fold, a baseline that beats chance
    (exact binomial test on its counts) and is not far below the top-1 it is expected to have, inputs whose
    statistics match the model's first BatchNorm layers, and an accuracy measured at all
    (``require_accuracy=False`` for a latency-only run)."""

    max_drop: float | None = DEFAULT_MAX_DROP  # top-1 drop vs the unfolded FP32 model, per engine
    require_accuracy: bool = True  # no labelled test data -> fail "no accuracy measured"
    baseline_sanity: bool = True  # unfolded FP32 top-1 not above chance (exact binomial) -> fail
    expect_top1: float | None = None  # the unfolded model's expected top-1 (%); else the report's (checkpoint meta)
    expect_top1_margin: float = EXPECT_MARGIN  # points below expect_top1 still consistent with it
    max_input_mean_shift: float | None = MAX_MEAN_SHIFT  # first BN layers: input mean vs running mean (running stds)
    max_input_var_ratio: float | None = MAX_VAR_RATIO  # first BN layers: input variance vs running variance (factor)
    min_top1: float | None = None  # absolute top-1 (%) floor
    min_cosine: float | None = None  # fidelity vs unfolded, for models without labels
    min_sqnr_db: float | None = None
    min_agreement: float | None = None  # top-1 agreement with the unfolded model (%)
    max_latency_ms: float | None = None  # p50 at the report's batch size
    max_p99_ms: float | None = None
    max_latency_regression_pct: float | None = None  # p50 vs the same engine in the baseline, beyond the noise
    max_accuracy_regression: float | None = None  # top-1 points vs the same engine in the baseline
    max_fold_rel_error: float | None = 1e-4  # the fold must stay exact
    engines: list[str] = field(default_factory=lambda: ["*"])  # glob over "name/precision"
    baseline: str | None = None  # path of a baseline report.json

    @classmethod
    def from_toml(cls, path: Path) -> "GateThresholds":
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise EdgerepError(f"{path}: gate config not found") from None
        except tomllib.TOMLDecodeError as e:
            raise EdgerepError(f"{path}: not valid TOML ({e})") from None
        table = data.get("gate", data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise EdgerepError(f"{path}: unknown gate setting(s) {', '.join(unknown)}",
                               hint=f"known: {', '.join(sorted(known))}")
        for k, v in table.items():
            if k == "engines":
                if not (isinstance(v, list) and all(isinstance(e, str) for e in v)):
                    raise EdgerepError(f"{path}: gate.engines must be a list of strings")
            elif k == "baseline":
                if not isinstance(v, str):
                    raise EdgerepError(f"{path}: gate.baseline must be a path string")
            elif k in ("require_accuracy", "baseline_sanity"):
                if not isinstance(v, bool):
                    raise EdgerepError(f"{path}: gate.{k} must be true or false")
            elif not isinstance(v, (int, float)) or isinstance(v, bool):
                raise EdgerepError(f"{path}: gate.{k} must be a number, got {v!r}")
        return cls(**table)

    def merged(self, **overrides) -> "GateThresholds":
        """These thresholds with every non-None override applied (flags win over the file)."""
        d = asdict(self)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return GateThresholds(**d)


@dataclass
class GateCheck:
    name: str
    engine: str
    value: float | None
    threshold: float | None
    passed: bool
    message: str
    noisy: bool = False  # a latency check on a noisy measurement: its verdict is not reliable


@dataclass
class GateResult:
    passed: bool
    checks: list[GateCheck]
    report_path: str | None = None

    @property
    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def noisy(self) -> list[GateCheck]:
        """Latency checks whose measurement was noisy: pass or fail, the verdict is flagged."""
        return [c for c in self.checks if c.noisy]

    def to_model(self) -> "Gate":
        """The report's typed gate block."""
        from edgerep.report.models import Gate

        return Gate(passed=self.passed, report=self.report_path, noisy_checks=len(self.noisy),
                    checks=[asdict(c) for c in self.checks])

    def to_dict(self) -> dict:
        from edgerep.report.models import dump

        return dump(self.to_model())


def load_report(path: str | Path) -> dict:
    """A report.json (or a bundle directory holding one), any known schema version, as the current (/2) dict:
    through the one migration (``edgerep.report.migrate``); an unknown schema is an exit-2 error naming the file."""
    from edgerep.report.migrate import read_report

    model = read_report(path)
    if not hasattr(model, "engines"):
        raise EdgerepError(f"{path}: not a deploy or bench report (no 'engines' field)")
    return dump(model)


def engine_key(e: dict) -> str:
    return f"{e.get('name')}/{e.get('precision')}"


#: engine statuses that ran; "skipped" is absent by the profile's own rule; anything else was asked for and not built
RAN = ("built", "cached", "fallback")


def _matches(e: dict, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(engine_key(e), p) for p in patterns)


def _selected(report: dict, patterns: list[str]) -> list[dict]:
    return [e for e in report.get("engines", []) if e.get("status", "built") in RAN and _matches(e, patterns)]


def absence_checks(report: dict, patterns: list[str]) -> list[GateCheck]:
    """Per engine the target asked for that does not run: a failure naming why (``failed``, or any status
    not known to have run), or, for an engine absent by the profile's own rule (``skipped``), a passing
    check that says so, so the verdict lists it."""
    out = []
    for e in report.get("engines", []):
        status = e.get("status", "built")
        if status in RAN or not _matches(e, patterns):
            continue
        key, asked = engine_key(e), e.get("requested") or engine_key(e)
        why = e.get("reason") or "no reason given"
        if status == "skipped":
            out.append(GateCheck("engine_absent", key, None, None, True,
                                 f"{asked}: not built, by the target profile's own rule ({why})"))
        else:
            out.append(GateCheck("engine_built", key, None, None, False,
                                 f"{asked}: the target asks for it and it was not built ({status}: {why})"))
    return out


def tensorrt_qdq_checks(report: dict, th: "GateThresholds") -> list[GateCheck]:
    """A stand-in deploy ships the TensorRT QDQ file that no engine here ran: its TensorRT lint errors fail,
    and so does its simulated drop on the test set (onnxruntime on that very file) over ``max_drop``."""
    t = report.get("tensorrt_qdq")
    if not t:
        return []
    who = "tensorrt-qdq/int8"
    errors = t.get("lint_errors") or []
    out = [GateCheck("tensorrt_qdq_lint", who, float(len(errors)), 0, not errors,
                     f"{t.get('file')}: TensorRT lint " + ("passed" if not errors else
                                                           f"found {len(errors)} error(s): " + "; ".join(errors[:3])))]
    drop, acc = t.get("drop"), t.get("accuracy") or {}
    if acc.get("nonfinite"):
        out.append(GateCheck("finite_outputs", who, float(acc["nonfinite"]), 0, False,
                             f"{who}: NaN or Inf in its simulated outputs for {acc['nonfinite']} of "
                             f"{acc.get('samples')} samples"))
    if th.max_drop is not None and th.require_accuracy and drop is not None:
        out.append(GateCheck("tensorrt_qdq_drop", who, drop["value"], th.max_drop, drop["value"] <= th.max_drop,
                             f"{t.get('file')}: simulated {drop_words(drop)} on the test set "
                             f"(limit {th.max_drop:g}; onnxruntime on the QDQ file, no TensorRT here)"))
    return out


def drop_words(drop: dict) -> str:
    """A drop as the gate says it: what it is a drop of, against what, in which unit."""
    return f"{drop['of']} drop vs {drop.get('vs', 'unfolded fp32')} {drop['value']:.2f} {drop['unit']}"


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else (f"{v:.4g}" if not isinstance(v, float) or math.isfinite(v) else str(v))


def evaluate_gate(report: dict, th: GateThresholds, baseline: dict | None = None,
                  report_path: str | None = None) -> GateResult:
    """Every check of ``th`` on every selected engine of ``report``."""
    checks: list[GateCheck] = []

    def add(name: str, eng: str, value: float | None, limit: float | None, ok: bool, msg: str,
            noise: str | None = None) -> None:
        if noise:  # never pass or fail on a noisy measurement without saying so
            msg += f" [NOISY measurement: {noise}; verdict not reliable, rerun on a quiet host]"
        checks.append(GateCheck(name, eng, value, limit, ok, msg, noisy=bool(noise)))

    fold = report.get("fold") or {}
    if th.max_fold_rel_error is not None and fold.get("max_rel_error") is not None:
        v = float(fold["max_rel_error"])
        add("fold_exact", "fold", v, th.max_fold_rel_error, v <= th.max_fold_rel_error,
            f"fold max relative error {v:.2e} (limit {th.max_fold_rel_error:.0e})")

    base_acc = (report.get("baseline") or {}).get("accuracy") or {}
    labelled = labelled_accuracy(base_acc)
    if th.require_accuracy and not labelled:
        add("accuracy_measured", "baseline", None, None, False,
            "no accuracy measured: the report has no top-1 (or mAP) on labelled test data (name labelled data with "
            "--data / --eval-data, or gate a latency-only run with --no-accuracy-gate)")
    if th.require_accuracy:
        _input_checks(report.get("input_statistics"), th, add)
    if th.baseline_sanity and top1_of(base_acc) is not None:  # chance and expected top-1: classification counts
        _sanity_checks(base_acc, report.get("baseline") or {}, th, add)
    if base_acc.get("nonfinite"):
        add("finite_outputs", "baseline", float(base_acc["nonfinite"]), 0, False,
            f"the unfolded FP32 reference gave NaN or Inf on {base_acc['nonfinite']} of {base_acc.get('samples')} "
            "test samples: no drop measured against it means anything")
    int8_failure = ((report.get("quantization") or {}).get("int8_failure"))
    if int8_failure:
        add("int8_is_int8", "onnxruntime-cpu/int8", None, None, False, f"INT8 failed: {int8_failure}")

    checks += absence_checks(report, th.engines)
    if any(fnmatch.fnmatch("tensorrt-qdq/int8", p) for p in th.engines):
        checks += tensorrt_qdq_checks(report, th)
    engines = _selected(report, th.engines)
    if not engines:
        add("engines_present", "-", None, None, False,
            f"no built engine matches {th.engines} in the report")
    base_by_key = {engine_key(e): e for e in (baseline or {}).get("engines", [])}
    for e in engines:
        key = engine_key(e)
        acc = e.get("accuracy") or {}
        lat = e.get("latency") or {}
        drop = e.get("drop")
        if acc.get("nonfinite"):  # whatever the thresholds: a NaN or Inf output is a broken engine
            add("finite_outputs", key, float(acc["nonfinite"]), 0, False,
                f"{key}: NaN or Inf in its outputs for {acc['nonfinite']} of {acc.get('samples')} samples")
        if th.max_drop is not None and th.require_accuracy:
            if drop is None and not labelled:
                pass  # said once above ("no accuracy measured")
            elif drop is None:
                add("max_drop", key, None, th.max_drop, False,
                    f"{key}: no drop in the report (no labelled evaluation data?)")
            else:
                add("max_drop", key, drop["value"], th.max_drop, drop["value"] <= th.max_drop,
                    f"{key}: {drop_words(drop)} (limit {th.max_drop:g} {drop['unit']})" + _counts_words(acc, base_acc))
        for name, metric, limit, unit in (("min_top1", "top1", th.min_top1, "%"),
                                          ("min_cosine", "cosine", th.min_cosine, ""),
                                          ("min_sqnr_db", "sqnr_db", th.min_sqnr_db, " dB"),
                                          ("min_agreement", "top1_agreement", th.min_agreement, "%")):
            if limit is None:
                continue
            v = top1_of(acc) if metric == "top1" else (acc.get("fidelity") or {}).get(metric)
            ok = v is not None and v >= limit
            add(name, key, v, limit, ok, f"{key}: {metric} {_fmt(v)}{unit} (minimum {limit:g}{unit})")
        noise = _noise(lat)
        for name, metric, limit in (("max_latency_ms", "p50_ms", th.max_latency_ms),
                                    ("max_p99_ms", "p99_ms", th.max_p99_ms)):
            if limit is None:
                continue
            if lat.get("valid") is False and not (metric == "p50_ms" and lat.get("invalid_scope") == "tail"):
                # LoadGen said INVALID: not a result, neither pass nor a number (a p50 stands when only
                # the early-stopping tail was missing: too few queries, every minimum met)
                add(name, key, None, limit, False, f"{key}: latency run INVALID per LoadGen "
                    f"({lat.get('invalid_reason') or 'no reason given'}); not a result, rerun")
                continue
            v = lat.get(metric)
            ok = v is not None and v <= limit
            why = "" if v is not None or "queries" not in lat else \
                f" (too few queries for an early-stopping {metric[:-3]}: {lat['queries']})"
            add(name, key, v, limit, ok, f"{key}: latency {metric[:-3]} {_fmt(v)} ms (limit {limit:g} ms){why}",
                noise)
        base = base_by_key.get(key)
        if baseline is not None and (th.max_latency_regression_pct is not None or th.max_accuracy_regression is not None):
            if base is None:
                add("baseline_present", key, None, None, True, f"{key}: not in the baseline report; not compared")
                continue
            if th.max_latency_regression_pct is not None:
                base_lat = base.get("latency") or {}
                ch = latency_change(base_lat, lat)  # the same judgement as `edgerep diff`
                if ch.pct is not None:
                    limit = th.max_latency_regression_pct
                    over = ch.pct > limit
                    ok = not (over and ch.verdict == "slower")  # a noisy pair cannot fail: too noisy to judge
                    why = "" if not over else (" and beyond noise" if not ok else
                                               f" but too noisy to judge ({ch.why})" if ch.verdict == "too noisy"
                                               else f" but {ch.verdict}")
                    base_noise = _noise(base_lat)
                    add("max_latency_regression_pct", key, ch.pct, limit, ok,
                        f"{key}: p50 {lat['p50_ms']:.3f} ms vs baseline {base_lat['p50_ms']:.3f} ms ({ch.pct:+.1f}%, "
                        f"limit +{limit:g}%, noise band ±{ch.band_pct:.0f}%){why}",
                        "; ".join(n for n in (noise, base_noise and f"baseline {base_noise}") if n) or None)
            if th.max_accuracy_regression is not None:
                b, v = top1_of(base.get("accuracy")), top1_of(acc)
                if b is not None and v is not None:
                    d = b - v
                    add("max_accuracy_regression", key, d, th.max_accuracy_regression,
                        d <= th.max_accuracy_regression,
                        f"{key}: top-1 {v:.2f}% vs baseline {b:.2f}% ({-d:+.2f} points, limit -{th.max_accuracy_regression:g})")
    return GateResult(passed=all(c.passed for c in checks), checks=checks, report_path=report_path)


def _counts(acc: dict) -> tuple[int, int] | None:
    """(correct, images) of a top-1 accuracy (its counts as measured)."""
    n = acc.get("samples")
    if top1_of(acc) is None or not n or acc.get("correct") is None:
        return None
    return int(acc["correct"]), int(n)


def _counts_words(acc: dict, base: dict) -> str:
    """For a detector: both mAPs and the image and instance counts they rest on (empty otherwise)."""
    if acc.get("metric") != "map" or acc.get("value") is None:
        return ""
    ref = f"unfolded {base['value']:.2f} -> " if base.get("metric") == "map" and base.get("value") is not None else ""
    return (f"; mAP@[.5:.95] {ref}{acc['value']:.2f} (mAP@.5 {acc.get('map50', float('nan')):.2f}) on "
            f"{acc.get('samples')} images, {acc.get('instances')} instances")


def labelled_accuracy(acc: dict | None) -> bool:
    """Whether a serialized accuracy is the task's metric against labels (top-1, mAP, PSNR), not a fidelity."""
    return bool(acc) and acc.get("vs") == "labels" and acc.get("value") is not None


def _sanity_checks(acc: dict, base: dict, th: GateThresholds, add) -> None:
    """The unfolded FP32 baseline beats chance, and is not far below the top-1 it is expected to have."""
    from edgerep.bench.binomial import chance_test, fewest_images, fmt_p, p_at_most

    counts, classes = _counts(acc), acc.get("classes")
    wrong = (f"the preprocessing ({_PREPROCESSING}) or the labels (class order) are likely wrong, so no drop "
             "measured against it means anything")
    if classes and counts is None:
        add("baseline_sanity", "baseline", None, SANITY_ALPHA, False,
            "the report gives the baseline's top-1 without its image count: nothing to test against chance")
    elif classes:
        k, n = counts
        chance, how = 1.0 / float(classes), f"1 in {classes} classes"
        majority = acc.get("majority")  # {"class", "count"}: a model that always answers it scores this share
        if majority and majority.get("count") and majority["count"] / n > chance:
            chance, how = majority["count"] / n, f"always answering class {majority['class']}: {majority['count']} of {n}"
        t = chance_test(k, n, chance, SANITY_ALPHA)
        said = (f"the unfolded FP32 model gets {k} of {n} test images right ({100.0 * k / n:.2f}%); chance "
                f"({how}) expects {chance * n:.1f}: exact one-sided binomial {fmt_p(t.p_value)}")
        if t.beats_chance:
            msg = f"{said} < {SANITY_ALPHA:g}: above chance"
        elif t.needed is None:
            least = fewest_images(chance, SANITY_ALPHA)
            msg = (f"{said}: {n} test images cannot show that it beats chance (even {n} of {n} gives p >= "
                   f"{SANITY_ALPHA:g}); evaluate on at least {least} images" if least else f"{said}: too few images")
        else:
            msg = f"{said} >= {SANITY_ALPHA:g} (it needs {t.needed} of {n}): not above chance; {wrong}"
        add("baseline_sanity", "baseline", t.p_value, SANITY_ALPHA, t.beats_chance, msg)
    expected = base.get("expected") or {}
    top, source = expected.get("top1"), expected.get("source")
    if th.expect_top1 is not None:
        top, source = th.expect_top1, "--expect-top1"
    if counts and top is not None:
        k, n = counts
        floor = max(0.0, float(top) - th.expect_top1_margin)
        p = p_at_most(k, n, floor / 100.0)
        ok = not p < SANITY_ALPHA
        said = (f"the unfolded FP32 model gets {k} of {n} test images right ({100.0 * k / n:.2f}%), expected "
                f"{float(top):.2f}% ({source})")
        msg = (f"{said}: consistent with at least {floor:.2f}% (expected - {th.expect_top1_margin:g} points; "
               f"exact one-sided binomial {fmt_p(p)})" if ok else
               f"{said}: far below it: a model with {floor:.2f}% (expected - {th.expect_top1_margin:g} points) gets "
               f"{k} or fewer of {n} right with {fmt_p(p)} < {SANITY_ALPHA:g}; {wrong}")
        add("baseline_expected", "baseline", p, SANITY_ALPHA, ok, msg)


def _input_checks(stats: dict | None, th: GateThresholds, add) -> None:
    """The calibration inputs' statistics at the first BatchNorm layers match the model's running statistics."""
    layers = (stats or {}).get("layers") or []
    if not layers:
        return
    for name, key, limit, unit in (("input_mean_shift", "mean_shift", th.max_input_mean_shift, " running std"),
                                   ("input_var_ratio", "var_ratio", th.max_input_var_ratio, "x either way")):
        if limit is None:
            continue
        worst = max(layers, key=lambda r: r[key])
        ok = worst[key] <= limit
        what = (f"input mean {worst[key]:.3g} running std off its running mean" if key == "mean_shift" else
                f"input variance {worst[key]:.3g}x {worst['var_direction']} than its running variance")
        msg = (f"BatchNorm {worst['layer']} (of the first {len(layers)} in the unfolded model, median of "
               f"{worst['channels']} channels, {stats.get('samples')} {stats.get('source')} samples): {what} "
               f"(limit {limit:g}{unit})")
        if not ok and worst[key] > FAR[key]:
            msg += (": the inputs are not what the model was trained on; the preprocessing "
                    f"({_PREPROCESSING}) is likely wrong")
        elif not ok:  # a factor a change of photos also makes: say both causes
            msg += (": the inputs are not what the model was trained on: the preprocessing "
                    f"({_PREPROCESSING}) may be wrong, or the calibration images differ from the training images "
                    "(another source or camera: calibrate on images like the training data, --calib-data)")
        add(name, "inputs", worst[key], limit, ok, msg)


def _noise(lat: dict) -> str | None:
    """The noise reason of a latency dict, or None when it was not marked noisy."""
    return (lat.get("noise_reason") or "noisy") if lat.get("noisy") else None


def junit_suite(suite: str, cases: list[tuple[str, str, str | None, str]]) -> str:
    """A JUnit XML test suite; each case is (classname, name, failure message or None, text)."""
    fails = sum(1 for _, _, failure, _ in cases if failure is not None)
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           f'<testsuite name={quoteattr(suite)} tests="{len(cases)}" failures="{fails}" errors="0">']
    for classname, name, failure, text in cases:
        out.append(f'  <testcase classname={quoteattr(classname)} name={quoteattr(name)}>')
        if failure is not None:
            out.append(f'    <failure message={quoteattr(failure)}>{escape(text)}</failure>')
        else:
            out.append(f'    <system-out>{escape(text)}</system-out>')
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"


def junit_xml(result: GateResult, suite: str = "edgerep.gate") -> str:
    """JUnit XML: one testcase per check, a <failure> per failed one (CI systems render these)."""
    return junit_suite(suite, [(f"{suite}.{c.engine}", c.name, None if c.passed else c.message, c.message)
                               for c in result.checks])


def markdown_summary(result: GateResult, report: dict | None = None) -> str:
    """A short Markdown block for a pull-request comment."""
    head = "### edgerep gate: **PASSED**" if result.passed else \
        f"### edgerep gate: **FAILED** ({len(result.failures)} of {len(result.checks)} checks)"
    lines = [head, ""]
    if report and report.get("model"):
        m = report["model"]
        lines += [f"Model `{m.get('name', '?')}` (`{m.get('sha256', '')[:12]}`)", ""]
    lines += ["| | check | engine | value | limit |", "|---|---|---|---|---|"]
    for c in result.checks:
        mark = ("✅" if c.passed else "❌") + (" ⚠️ noisy" if c.noisy else "")
        lines.append(f"| {mark} | {c.name} | `{c.engine}` | {_fmt(c.value)} | {_fmt(c.threshold)} |")
    if result.failures:
        lines += ["", "**Why it failed**", ""] + [f"- {c.message}" for c in result.failures]
    if result.noisy:
        lines += ["", "**Noisy latency measurements** (these verdicts are not reliable)", ""]
        lines += [f"- {c.message}" for c in result.noisy]
    return "\n".join(lines) + "\n"
