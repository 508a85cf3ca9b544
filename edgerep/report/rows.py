"""The engine rows every view of a report shares (terminal table, Markdown, HTML, plots, diff)."""
from __future__ import annotations

from edgerep.report import fmt
from edgerep.report.models.results import top1_of


#: how a table names the metric a drop is of (report.json keeps the metric's key)
METRIC_LABELS = {"top1_agreement": "top-1 agreement", "cosine": "cosine", "map": "mAP", "map50": "mAP@.5",
                 "psnr": "PSNR"}


def drop_text(drop: dict | None) -> str:
    """A drop for a table whose heading says "points vs unfolded": the signed value, and its unit and metric
    when that is not top-1 (``+0.04 dB PSNR``, ``+0.00 points top-1 agreement`` where no labels exist)."""
    if not drop:
        return fmt.points(None)
    s = fmt.points(drop["value"])
    return s if drop["of"] == "top1" else f"{s} {drop['unit']} {METRIC_LABELS.get(drop['of'], drop['of'])}"


def drop_unit(quantization: dict) -> str:
    """The unit of a quantization block's selection drops: dB for super-resolution (PSNR), else points."""
    return "dB" if ((quantization or {}).get("reference") or {}).get("task") == "sr" else "points"


def engine_entries(report: dict) -> list[tuple[str, dict, bool]]:
    """``(label, entry, is_baseline)`` per engine, the unfolded torch baseline first."""
    out = []
    base = report.get("baseline")
    for e in [base] + list(report.get("engines", [])):
        if not e:
            continue
        out.append((engine_label(e, e is base), e, e is base))
    return out


def engine_label(e: dict, is_baseline: bool = False) -> str:
    """``onnxruntime-cpu`` / ``torch-cpu-unfolded`` / ``onnxruntime-cpu (for tensorrt-int8-gpu)``."""
    name = e.get("name", "?")
    if is_baseline:
        from edgerep.engines.base import unfolded_name

        return unfolded_name(name)  # deploy and bench name it so; older reports named the bare engine
    if e.get("status") == "fallback":
        return f"{name} (for {e.get('requested')})"
    if e.get("status") in ("skipped", "failed"):
        return f"{e.get('requested') or name} ({e.get('status')})"
    return name


def engine_key(e: dict) -> str:
    """``name/precision``: how the gate and the diff match engines across reports."""
    return f"{e.get('name')}/{e.get('precision')}"


def noise_mark(lat: dict) -> str:
    """``noisy`` (with the reason) when the latency run said so, else empty."""
    if not lat.get("noisy"):
        return ""
    why = lat.get("noise_reason")
    return f"noisy: {why}" if why else "noisy"


def engine_rows(report: dict) -> list[dict[str, str]]:
    """One row per engine (the unfolded torch baseline first): the table deploy prints."""
    rows = []
    for label, e, is_base in engine_entries(report):
        lat = e.get("latency") or {}
        acc = e.get("accuracy") or {}
        samples = acc.get("samples")
        detect = acc.get("metric") == "map"
        rows.append({
            "engine": label,
            "key": engine_key(e),
            "precision": e.get("precision", "?"),
            "status": e.get("status", "built"),
            "scenario": str(lat.get("scenario") or ""),
            "p50": fmt.ms(lat.get("p50_ms")),
            "p90": fmt.ms(lat.get("p90_ms")),
            "p99": fmt.ms(lat.get("p99_ms")),
            "throughput": fmt.count(lat.get("throughput_ips")),
            "noise": noise_mark(lat),
            "top1": fmt.points(acc.get("value") if detect else top1_of(acc), signed=False),
            "top1_n": (fmt.detection(acc, short=True) if detect else psnr_text(acc) if acc.get("metric") == "psnr"
                       else fmt.accuracy(top1_of(acc), samples)),
            "samples": "" if samples is None else str(samples),
            "agreement": fmt.points((acc.get("fidelity") or {}).get("top1_agreement"), signed=False),
            "drop": "baseline" if is_base else drop_text(e.get("drop")),
            "verdict": e.get("verdict") or "",
            "note": e.get("reason", "") or "",
        })
    return rows


def psnr_text(acc: dict) -> str:
    """An SR engine's accuracy cell: ``31.381 dB / SSIM 0.8999 (2 images)``."""
    v, ssim, n = acc.get("value"), acc.get("ssim"), acc.get("samples")
    if v is None:
        return fmt.DASH
    return f"{v:.3f} dB / SSIM {ssim:.4f} ({n} image{'s' if n != 1 else ''})" if ssim is not None else f"{v:.3f} dB"


#: the columns of the terminal and Markdown engine table: (row key, heading)
COLUMNS = [("engine", "engine"), ("precision", "precision"), ("p50", "p50 ms"), ("p99", "p99 ms"),
           ("throughput", "img/s"), ("top1", "top-1 %"), ("drop", "drop vs unfolded"), ("verdict", "verdict")]


def is_detection(report: dict) -> bool:
    """Whether the report's accuracy is a detector's mAP (its task, else its baseline's metric)."""
    task = (report.get("task") or {}).get("name")
    acc = (report.get("baseline") or {}).get("accuracy") or {}
    return task == "detect" or acc.get("metric") == "map"


def is_psnr(report: dict) -> bool:
    """Whether the report's accuracy is a super-resolution PSNR (its task's metric, else its baseline's)."""
    acc = (report.get("baseline") or {}).get("accuracy") or {}
    return (report.get("task") or {}).get("metric") == "psnr" or acc.get("metric") == "psnr"


def accuracy_heading(report: dict, counted: bool = True) -> str:
    """The accuracy column's heading: top-1 for classifiers, COCO mAP for detectors, PSNR / SSIM for SR (with
    what the counts are)."""
    if is_psnr(report):
        return "PSNR / SSIM on Y (images)" if counted else "PSNR dB"
    if is_detection(report):
        return "mAP@[.5:.95] (mAP@.5; images, instances)" if counted else "mAP@[.5:.95]"
    return "top-1 (correct of images)" if counted else "top-1 %"


def gate_threshold(report: dict, name: str) -> float | None:
    """The limit a named gate check used (e.g. ``max_drop``), when the report was gated."""
    for c in (report.get("gate") or {}).get("checks", []):
        if c.get("name") == name and c.get("threshold") is not None:
            return float(c["threshold"])
    return None


def split_entries(report: dict) -> list[tuple[str, dict]]:
    """``(name, split)`` for each data split the report names (calibration, selection, test), in order."""
    splits = report.get("splits") or {}
    return [(k, v) for k, v in splits.items() if isinstance(v, dict) and "count" in v]
