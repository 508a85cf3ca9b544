"""The CI gate: compare a deploy/bench report against thresholds (and a baseline report).

Thresholds come from flags or a ``gate.toml`` (``[gate]`` table, same names as the flags).
Every failed check is reported; the CLI exits 1 when any fails. Writes JUnit XML and a
Markdown summary fit for a pull-request comment.
"""
from __future__ import annotations

import fnmatch
import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from edgerep.errors import EdgerepError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


DEFAULT_MAX_DROP = 0.5  # deploy's default: a bare `edgerep gate report.json` gates what deploy gates
SANITY_FACTOR = 2.0  # an unfolded FP32 baseline at or below this multiple of chance is a broken set-up


@dataclass
class GateThresholds:
    """What must hold. ``None`` disables a check. Drops are in top-1 percentage points.

    The defaults are deploy's: top-1 drop <= 0.5 points, an exact fold, a baseline that beats chance
    clearly, and an accuracy measured at all (``require_accuracy=False`` for a latency-only run)."""

    max_drop: float | None = DEFAULT_MAX_DROP  # top-1 drop vs the unfolded FP32 model, per engine
    require_accuracy: bool = True  # no labelled test data -> fail "no accuracy measured"
    baseline_sanity: bool = True  # unfolded FP32 top-1 <= 2x chance -> fail (preprocessing or labels wrong)
    min_top1: float | None = None  # absolute top-1 (%) floor
    min_cosine: float | None = None  # fidelity vs unfolded, for models without labels
    min_sqnr_db: float | None = None
    min_agreement: float | None = None  # top-1 agreement with the unfolded model (%)
    max_latency_ms: float | None = None  # p50 at the report's batch size
    max_p99_ms: float | None = None
    max_latency_regression_pct: float | None = None  # p50 vs the same engine in the baseline report
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

    def to_dict(self) -> dict:
        return {"passed": self.passed, "report": self.report_path, "noisy_checks": len(self.noisy),
                "checks": [asdict(c) for c in self.checks]}


def load_report(path: str | Path) -> dict:
    """A report.json (or a bundle directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise EdgerepError(f"{p}: report not found", hint="run `edgerep deploy` or `edgerep bench` first") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgerepError(f"{p}: not a JSON report ({e})") from None
    if not isinstance(data, dict) or "engines" not in data:
        raise EdgerepError(f"{p}: not an edgerep report (no 'engines' field)")
    return data


def engine_key(e: dict) -> str:
    return f"{e.get('name')}/{e.get('precision')}"


def _selected(report: dict, patterns: list[str]) -> list[dict]:
    return [e for e in report.get("engines", [])
            if e.get("status") not in ("skipped", "failed") and any(fnmatch.fnmatch(engine_key(e), p) for p in patterns)]


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
    labelled = base_acc.get("top1") is not None
    if th.require_accuracy and not labelled:
        add("accuracy_measured", "baseline", None, None, False,
            "no accuracy measured: the report has no top-1 on labelled test data (name labelled data with "
            "--data / --eval-data, or gate a latency-only run with --no-accuracy-gate)")
    classes = base_acc.get("classes")
    if th.baseline_sanity and labelled and classes:
        chance = 100.0 / float(classes)
        top1 = float(base_acc["top1"])
        ok = top1 > SANITY_FACTOR * chance
        add("baseline_sanity", "baseline", top1, SANITY_FACTOR * chance, ok,
            f"the unfolded FP32 model scores {top1:.2f}% on the test set, "
            + (f"above {SANITY_FACTOR:g}x chance ({chance:.2f}% for {classes} classes)" if ok else
               f"at most {SANITY_FACTOR:g}x chance ({chance:.2f}% for {classes} classes): the preprocessing "
               "(--mean/--std/--scale/--resize/--channel-order) or the labels (class order) are likely wrong, "
               "so no drop measured against it means anything"))
    int8_failure = ((report.get("quantization") or {}).get("int8_failure"))
    if int8_failure:
        add("int8_is_int8", "onnxruntime-cpu/int8", None, None, False, f"INT8 failed: {int8_failure}")

    engines = _selected(report, th.engines)
    if not engines:
        add("engines_present", "-", None, None, False,
            f"no built engine matches {th.engines} in the report")
    base_by_key = {engine_key(e): e for e in (baseline or {}).get("engines", [])}
    for e in engines:
        key = engine_key(e)
        acc = e.get("accuracy") or {}
        lat = e.get("latency") or {}
        drop = e.get("drop_vs_unfolded")
        if th.max_drop is not None and th.require_accuracy:
            if drop is None and not labelled:
                pass  # said once above ("no accuracy measured")
            elif drop is None:
                add("max_drop", key, None, th.max_drop, False,
                    f"{key}: no top-1 drop in the report (no labelled evaluation data?)")
            else:
                add("max_drop", key, drop, th.max_drop, drop <= th.max_drop,
                    f"{key}: top-1 drop vs unfolded {drop:.2f} points (limit {th.max_drop:g})")
        for name, metric, limit, unit in (("min_top1", "top1", th.min_top1, "%"),
                                          ("min_cosine", "cosine", th.min_cosine, ""),
                                          ("min_sqnr_db", "sqnr_db", th.min_sqnr_db, " dB"),
                                          ("min_agreement", "top1_agreement", th.min_agreement, "%")):
            if limit is None:
                continue
            v = acc.get(metric)
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
                b, v = (base.get("latency") or {}).get("p50_ms"), lat.get("p50_ms")
                if b and v is not None:
                    pct = 100.0 * (v - b) / b
                    base_noise = _noise(base.get("latency") or {})
                    add("max_latency_regression_pct", key, pct, th.max_latency_regression_pct,
                        pct <= th.max_latency_regression_pct,
                        f"{key}: p50 {v:.3f} ms vs baseline {b:.3f} ms ({pct:+.1f}%, limit +{th.max_latency_regression_pct:g}%)",
                        "; ".join(n for n in (noise, base_noise and f"baseline {base_noise}") if n) or None)
            if th.max_accuracy_regression is not None:
                b, v = (base.get("accuracy") or {}).get("top1"), acc.get("top1")
                if b is not None and v is not None:
                    d = b - v
                    add("max_accuracy_regression", key, d, th.max_accuracy_regression,
                        d <= th.max_accuracy_regression,
                        f"{key}: top-1 {v:.2f}% vs baseline {b:.2f}% ({-d:+.2f} points, limit -{th.max_accuracy_regression:g})")
    return GateResult(passed=all(c.passed for c in checks), checks=checks, report_path=report_path)


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
