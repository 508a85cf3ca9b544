"""The gate on a merged fleet report: edgerep's gate checks on every row, plus lost nodes and targets
without a node; JUnit XML with one test case per target x engine."""
from __future__ import annotations

from dataclasses import replace

from edgerep.bench.gate import GateCheck, GateResult, GateThresholds, evaluate_gate, junit_suite

_ACCURACY = dict(max_drop=None, min_top1=None, min_cosine=None, min_sqnr_db=None, min_agreement=None,
                 max_accuracy_regression=None)
_LATENCY = dict(max_latency_ms=None, max_p99_ms=None, max_latency_regression_pct=None)


def case_of(row: dict) -> str:
    """The JUnit test case a row belongs to: ``<target>:<engine>/<precision>``."""
    return f"{row['target']}:{row['name']}/{row['precision']}"


def gate_fleet(report: dict, th: GateThresholds) -> GateResult:
    """Every check of ``th`` on every row; a lost row (not recovered), a failed row (the engine did not build
    on the node, or the job raised there: no retry mends that) or a target without a node fails.

    Node rows of a sharded run are gated on latency only, merged rows on accuracy only.
    """
    whole = {k: report.get(k) for k in ("fold", "baseline", "quantization", "input_statistics")}
    checks: list[GateCheck] = [c for c in evaluate_gate({**whole, "engines": []}, th).checks
                               if c.name not in ("engines_present",)]  # the report-wide checks, once
    once = {c.name for c in checks} | {"accuracy_measured", "baseline_sanity", "baseline_expected", "int8_is_int8",
                                       "fold_exact", "input_mean_shift", "input_var_ratio"}
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
        if r["status"] == "skipped":  # by rule: torch runs on the CI side only, as the reference
            continue
        if r["status"] not in ("built", "cached", "fallback"):  # failed to build there, or the job raised there
            checks.append(GateCheck("engine_built", who, None, None, False,
                                    f"{who}: {r['status']}: {r.get('reason') or 'no reason given'}"))
            continue
        t = per_row
        if r.get("scope") == "shard":
            t = replace(t, **_ACCURACY)
        elif r.get("scope") == "merged":
            t = replace(t, **_LATENCY)
        for c in evaluate_gate({**whole, "engines": [r]}, t).checks:
            if c.name in once and (c.name != "finite_outputs" or c.engine == "baseline"):
                continue  # a report-wide check, said once above (an engine's own NaN check is its row's)
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
    cases = []
    for case, cs in groups.items():
        target, _, engine = case.partition(":")
        bad = [c.message for c in cs if not c.passed]
        cases.append((f"{suite}.{target or case}", engine or case, "; ".join(bad)[:500] if bad else None,
                      chr(10).join(bad or [c.message for c in cs])))
    return junit_suite(suite, cases)
