"""The check's predictions scored against what a deploy measured.

``edgerep check`` predicts, layer by layer, where INT8 will hurt; a deploy then *measures* the
INT8 model on the selection set (and which layers had to stay in float to meet the budget) and on
the test set. Where both exist the measurement leads, and each flagged layer is scored against it:
a layer is *measured sensitive* when the deploy kept it in float to meet the budget (any target).
When the whole INT8 model met the budget, no flagged layer was needed in float. Pure functions on
report dicts (``report["check"]``, ``report["quantization"]``, ``report["engines"]``).
"""
from __future__ import annotations

from typing import Any

from edgerep.report import fmt
from edgerep.report.rows import drop_unit
from edgerep.report.models.results import drop_of, top1_of


def layer_of(node: str, names: list[str]) -> str | None:
    """The check layer an ONNX node belongs to (``/stage2/stage2.1/conv/Conv`` -> ``stage2.1``;
    ``/backbone/stages.1/stages.1.0/conv/Conv`` -> ``backbone.stages.1.0``), else None."""
    from edgerep.fold.onnx_names import module_path

    path, scope = module_path(str(node)), "/" + str(node).strip("/") + "/"
    hit = [n for n in names if path == n or path.startswith(n + ".") or f"/{n}/" in scope]
    return max(hit, key=len) if hit else None


def _advised_float(layer: dict) -> bool:
    return any(a.get("kind") == "keep_fp16" for a in layer.get("advice") or [])


def _selection_words(cand: dict, pol: dict, unit: str = "points") -> str:
    """``drop 0.56 points (1 of 180 flipped to wrong, 0 to right)`` from a candidate's paired verdict."""
    v = cand.get("verdict") or {}
    c = v.get("counts")
    drop = v.get("drop", pol.get("drop"))
    text = f"drop {fmt.points(drop, signed=False)} {unit}"
    if c:
        text += f" ({c['lost']} of {c['n']} flipped to wrong, {c['gained']} to right)"
    return text


def _int8_row(engines: list[dict]) -> dict | None:
    rows = [e for e in engines if e.get("precision") == "int8" and str(e.get("name", "")).startswith("onnxruntime")
            and top1_of(e.get("accuracy")) is not None]
    return rows[0] if rows else None


def score_check(check: dict, quantization: dict, engines: list[dict] | None = None) -> dict | None:
    """``{"headline", "scored", "flagged", "advised_float", "sensitive", "flagged_sensitive", "missed", ...}``,
    or None when there is nothing measured to score against (no quantization, or no check layers)."""
    layers = (check or {}).get("layers") or []
    q = quantization or {}
    pol = q.get("cpu_policy") or {}
    if not layers or not (pol or q.get("tensorrt")):
        return None
    names = [str(l.get("name")) for l in layers]
    flagged = [str(l.get("name")) for l in layers if l.get("verdict") not in (None, "ok")]
    advised = [str(l.get("name")) for l in layers if _advised_float(l)]
    kept: dict[str, list[str]] = {}  # layer -> targets that kept it in float
    unmapped = []
    for e in q.get("excluded_nodes") or []:
        name = layer_of(str(e.get("node", "")), names)
        if name is None:
            unmapped.append(str(e.get("node")))
        else:
            kept.setdefault(name, []).append(str(e.get("target", "?")))
    sensitive = [n for n in names if n in kept]
    flagged_sensitive = [n for n in flagged if n in kept]
    missed = [n for n in sensitive if n not in flagged]

    # what was measured: the shipped CPU file on the selection set, then on the test set
    parts = []
    cand = next((c for c in q.get("candidates") or [] if c.get("policy") == pol.get("name")), {})
    where = (f"on onnxruntime-cpu ({pol.get('name')})" if pol else "in the TensorRT QDQ simulation")
    cpu_kept = [n for n in sensitive if "cpu" in kept[n]]
    if pol:
        head = (f"every layer INT8 {where}" if not cpu_kept else
                f"{len(cpu_kept)} of {len(names)} layers kept in FP32 {where} ({', '.join(cpu_kept)})")
        parts.append(f"{head}: selection set {_selection_words(cand, pol, drop_unit(q))}")
    row = _int8_row(engines or [])
    if row is not None:
        acc = row.get("accuracy") or {}
        parts.append(f"test set top-1 drop {fmt.points(drop_of(row))} points, top-1 "
                     f"{fmt.accuracy(top1_of(acc), acc.get('samples'))}")
    trt = q.get("tensorrt") or {}
    if trt:
        trt_kept = [n for n in sensitive if "tensorrt" in kept[n]]
        parts.append("TensorRT QDQ (simulated) " + (f"with {len(trt_kept)} layer(s) in float" if trt_kept else
                                                     "with every layer INT8")
                     + f": drop {fmt.points(trt.get('simulated_drop'), signed=False)} {drop_unit(q)}")
    if q.get("int8_failure"):
        parts.append(f"INT8 FAILED: {q['int8_failure']}")
    headline = "Measured: " + "; ".join(parts) + "."

    if not flagged:
        scored = f"The check flagged no layer of {len(names)}"
    else:
        scored = (f"The check flagged {len(flagged)} of {len(names)} layers"
                  + (f" and advised {len(advised)} in FP16" if advised else "")
                  + f"; {len(flagged_sensitive)} of the {len(flagged)} were measured sensitive (kept in float to "
                    "meet the budget)")
        if not sensitive:
            scored += ": the INT8 model met the budget with every flagged layer in INT8"
    if missed:
        scored += f"; it missed {len(missed)} measured sensitive layer(s): {', '.join(missed)}"
    scored += "."
    final = next((c for c in reversed(q.get("candidates") or []) if c.get("policy") == pol.get("name")), {})
    held = bool(final.get("accepted")) and not q.get("int8_failure") if pol else None
    return {"headline": headline, "scored": scored, "budget_held": held, "layers": len(names), "flagged": flagged,
            "advised_float": advised, "sensitive": sensitive, "flagged_sensitive": flagged_sensitive,
            "missed": missed, "unmapped_float_nodes": unmapped,
            "advised_float_needed": [n for n in advised if n in kept]}


__all__ = ["score_check", "layer_of"]
