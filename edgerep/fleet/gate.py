"""The gate on a merged fleet report: edgerep's gate checks on every row, plus lost nodes and targets
without a node; JUnit XML with one test case per target x engine."""
from __future__ import annotations

from dataclasses import replace
from xml.sax.saxutils import escape, quoteattr

from edgerep.bench.gate import GateCheck, GateResult, GateThresholds, evaluate_gate

_ACCURACY = dict(max_drop=None, min_top1=None, min_cosine=None, min_sqnr_db=None, min_agreement=None,
                 max_accuracy_regression=None)
_LATENCY = dict(max_latency_ms=None, max_p99_ms=None, max_latency_regression_pct=None)


def case_of(row: dict) -> str:
    """The JUnit test case a row belongs to: ``<target>:<engine>/<precision>``."""
    return f"{row['target']}:{row['name']}/{row['precision']}"


def gate_fleet(report: dict, th: GateThresholds) -> GateResult:
    """Every check of ``th`` on every row; a lost row (not recovered) or a target without a node fails.

    Node rows of a sharded run are gated on latency only, merged rows on accuracy only.
    """
    whole = {k: report.get(k) for k in ("fold", "baseline", "quantization")}
    checks: list[GateCheck] = [c for c in evaluate_gate({**whole, "engines": []}, th).checks
                               if c.name not in ("engines_present",)]  # the report-wide checks, once
    once = {c.name for c in checks} | {"accuracy_measured", "baseline_sanity", "int8_is_int8", "fold_exact"}
    per_row = replace(th, max_fold_rel_error=None, engines=["*"])
    for r in report.get("rows", []):
        who = f"{case_of(r)}@{r['node']}"
        if r["status"] == "no node":
            checks.append(GateCheck("no_node", who, None, None, False, f"{case_of(r)}: {r['reason']}"))
            continue
        if r["status"] == "lost":
            ok = bool(r.get("recovered_by"))
            msg = f"{who}: {r['reason']}" + (f"; its shards re-ran on {r['recovered_by']}" if ok else "")
            checks.append(GateCheck("node_lost", who, None, None, ok, msg))
            continue
        if r["status"] == "skipped":
            continue
        t = per_row
        if r.get("scope") == "shard":
            t = replace(t, **_ACCURACY)
        elif r.get("scope") == "merged":
            t = replace(t, **_LATENCY)
        for c in evaluate_gate({**whole, "engines": [r]}, t).checks:
            if c.name in once:
                continue
            c.engine = who
            c.message = f"{who}: {c.message.split(': ', 1)[-1]}"
            checks.append(c)
    if not any(r["status"] not in ("skipped",) for r in report.get("rows", [])):
        checks.append(GateCheck("engines_present", "-", None, None, False, "no row to gate in the fleet report"))
    return GateResult(passed=all(c.passed for c in checks), checks=checks)


def junit_xml(report: dict, result: GateResult, suite: str = "edgerep.fleet") -> str:
    """JUnit XML: one test case per target x engine (and one for the fold); a failure lists every failed check."""
    groups: dict[str, list[GateCheck]] = {}
    for c in result.checks:
        groups.setdefault(c.engine.split("@", 1)[0], []).append(c)
    fails = sum(1 for cs in groups.values() if not all(c.passed for c in cs))
    out = ['<?xml version="1.0" encoding="utf-8"?>',
           f'<testsuite name={quoteattr(suite)} tests="{len(groups)}" failures="{fails}" errors="0">']
    for case, cs in groups.items():
        target, _, engine = case.partition(":")
        out.append(f'  <testcase classname={quoteattr(suite + "." + (target or case))} name={quoteattr(engine or case)}>')
        bad = [c.message for c in cs if not c.passed]
        if bad:
            msg = "; ".join(bad)
            out.append(f'    <failure message={quoteattr(msg[:500])}>{escape(chr(10).join(bad))}</failure>')
        else:
            out.append(f'    <system-out>{escape(chr(10).join(c.message for c in cs))}</system-out>')
        out.append("  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"
