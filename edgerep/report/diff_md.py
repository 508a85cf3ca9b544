"""The diff of two reports as Markdown short enough for a pull-request comment."""
from __future__ import annotations

from typing import Any

from edgerep.report import fmt
from edgerep.report.diff import EngineDiff, ReportDiff

#: at most this many items per list in the Markdown (a PR comment stays short)
MD_ITEMS = 8


def latency_words(e: EngineDiff) -> str:
    """``+3.1%, within noise (±61%)`` / ``+42.0%, slower`` / ``n/a``."""
    if e.latency_pct is None:
        return "n/a" + (f" ({e.noisy})" if e.noisy else "")
    if e.latency == "too noisy":
        s = f"{e.latency_pct:+.1f}%, too noisy to judge (spread ±{e.noise_pct:.0f}%)"
    else:
        s = f"{e.latency_pct:+.1f}%, {e.latency} (±{e.noise_pct:.0f}%)"
    return s + (f" · noisy run ({e.noisy})" if e.noisy else "")


def accuracy_cell(e: EngineDiff, side: str) -> str:
    """One side's accuracy: top-1 with its counts, or a detector's mAP with its image and instance counts."""
    m = getattr(e, f"map_{side}")
    if m is not None:
        return fmt.detection({"value": m, "map50": getattr(e, f"map50_{side}"), "samples": getattr(e, f"samples_{side}"),
                              "instances": getattr(e, f"instances_{side}")}, short=True)
    return fmt.accuracy(getattr(e, f"top1_{side}"), getattr(e, f"samples_{side}"))


def has_map(d: ReportDiff) -> bool:
    """Whether either report is a detector's (mAP)."""
    return any(e.map_base is not None or e.map_new is not None for e in d.engines)


def accuracy_words(e: EngineDiff) -> str:
    """``-0.19 (1 image fewer)`` / ``+0.00``; a detector: ``-0.31 mAP``."""
    if e.map_delta is not None:
        return fmt.points(e.map_delta) + " mAP"
    if e.top1_delta is None:
        return fmt.DASH
    s = fmt.points(e.top1_delta)
    n = e.images_delta
    if n:
        s += f" ({abs(n)} image{'s' if abs(n) != 1 else ''} {'more' if n > 0 else 'fewer'})"
    return s


def _arrow(a: str, b: str) -> str:
    return a if a == b else f"{a} → {b}"


def _gate_word(v: bool | None) -> str:
    return "not gated" if v is None else ("passed" if v else "FAILED")


def _short(v: Any, n: int = 40) -> str:
    s = fmt.DASH if v is None else str(v)
    return s if len(s) <= n else s[:n - 1] + "…"


def to_markdown(d: ReportDiff) -> str:
    """A short Markdown summary for a pull-request comment."""
    unjudged = [c for c in d.checks if c.unjudged]  # passed only because the pair could not be judged
    verdict = "" if not d.checks else (" — thresholds **passed**" if d.passed else
                                       f" — **FAILED** ({len(d.failures)} of {len(d.checks)} checks)")
    if unjudged:
        verdict += f", {len(unjudged)} too noisy to judge"
    lines = [f"### edgerep diff: `{d.model}`, {d.changed()} change{'s' if d.changed() != 1 else ''}{verdict}", "",
             f"Base `{d.base_label}` (gate {_gate_word(d.gate_base)}) → new `{d.new_label}` "
             f"(gate {_gate_word(d.gate_new)}).", ""]
    acc_head = ("mAP@[.5:.95] (mAP@.5; images, instances) | Δ mAP (points)" if has_map(d)
                else "top-1 | Δ top-1 (points)")
    lines += [f"| engine | {acc_head} | drop vs unfolded | p50 ms | Δ p50 |", "|---|---|---|---|---|---|"]
    for e in d.engines:
        name = e.key + ("" if e.presence == "both" else f" ({e.presence})")
        n = e.samples_new or e.samples_base
        top1 = _arrow(fmt.pct(e.top1_base), fmt.pct(e.top1_new)) + (f" of {n}" if n else "")
        if e.map_base is not None or e.map_new is not None:
            top1 = _arrow(accuracy_cell(e, "base"), accuracy_cell(e, "new"))
        drop = "baseline" if e.key.endswith(" unfolded") else _arrow(fmt.points(e.drop_base, False),
                                                                     fmt.points(e.drop_new, False))
        lines.append(f"| `{name}` | {top1} | {accuracy_words(e)} | {drop} | "
                     f"{_arrow(fmt.ms(e.p50_base), fmt.ms(e.p50_new))} | {latency_words(e)} |")
    if d.checks:
        limits = ", ".join(sorted({f"{c.name} {c.threshold:g}" for c in d.checks}))
        if d.passed and not unjudged:
            lines += ["", f"All {len(d.checks)} threshold checks passed ({limits})."]
        elif d.passed:
            lines += ["", f"No threshold check failed ({limits})."]
        else:
            lines += ["", f"**Thresholds failed** ({len(d.failures)} of {len(d.checks)}; {limits})", ""]
            lines += [f"- ❌ {c.message}" for c in d.failures]
        if unjudged:  # say so, never a silent pass
            lines += ["", f"Not judged ({len(unjudged)} of {len(d.checks)}): too noisy to pass or fail; rerun on a "
                      "quiet machine.", ""]
            lines += [f"- ⚠️ {c.message}" for c in unjudged]

    def block(title: str, items: list[str]) -> None:
        if not items:
            return
        nonlocal lines
        lines += ["", f"**{title}** ({len(items)})", ""] + [f"- {x}" for x in items[:MD_ITEMS]]
        if len(items) > MD_ITEMS:
            lines.append(f"- … and {len(items) - MD_ITEMS} more (see `edgerep diff --html` or `--json`)")

    block("INT8 verdicts changed", [f"`{l['name']}`: plain {_arrow(*map(str, l['plain']))}, with fixes "
                                    f"{_arrow(*map(str, l['fixed']))}" for l in d.layers])
    block("Layers kept in float", [f"`{f['node']}` {f['change']}" + (f": {f['why']}" if f["why"] else "")
                                   for f in d.float_layers])
    block("Files changed", [f"`{f['name']}` {_short(f['base'])} → {_short(f['new'])}" for f in d.files])
    block("Settings and versions", [f"{s['key']}: {_short(s['base'])} → {_short(s['new'])}" for s in d.settings])
    if d.notes:
        lines += [""] + [f"> {n}" for n in d.notes]
    lines += ["", f"<sub>Latency: a p50 change is real when it is beyond the pair's noise band (the larger of "
                  f"{d.noise_floor_pct:g}% and each run's (p90 − p50) / p50).</sub>"]
    return "\n".join(lines) + "\n"
