"""A detector's report view: a few test images with the unfolded FP32 model's boxes beside an INT8 engine's, and
per-class AP of both (``report.html``'s "Detections" section). Pictures are PNG files in the bundle's
``detections/`` folder; the AP table is read from report.json alone."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from edgerep.report.html_base import esc, table

DISPLAY_SCORE = 0.25  # boxes drawn: score at or above this (every box counts in the mAP, drawn or not)
_COLOURS = ["#e53935", "#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#fdd835", "#6d4c41", "#d81b60",
            "#3949ab"]


def example_png(image: np.ndarray, truth: dict, panels: Sequence[tuple[str, dict]], class_names: Sequence[str],
                min_score: float = DISPLAY_SCORE) -> bytes:
    """One test image drawn once per panel (title, detections dict with boxes/scores/classes in image pixels), the
    ground-truth boxes dashed white on each."""
    from matplotlib.patches import Rectangle

    from edgerep.report.plots import new_figure, png_bytes

    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    fig = new_figure(2.6 * len(panels), 2.9)
    for k, (title, det) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), k + 1)
        ax.imshow(img.squeeze(), cmap="gray" if img.shape[-1] == 1 else None)
        for x1, y1, x2, y2 in np.asarray(truth.get("boxes", []), float).reshape(-1, 4):
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec="white", ls="--", lw=0.8))
        shown = 0
        for (x1, y1, x2, y2), s, c in zip(np.asarray(det["boxes"], float).reshape(-1, 4), det["scores"], det["classes"]):
            if s < min_score:
                continue
            col = _COLOURS[int(c) % len(_COLOURS)]
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=col, lw=1.2))
            name = class_names[int(c)] if int(c) < len(class_names) else str(int(c))
            ax.text(x1, y1, f"{name} {s:.2f}", color="white", fontsize=6, va="bottom",
                    bbox={"facecolor": col, "pad": 0.5, "lw": 0})
            shown += 1
        ax.set_title(f"{title} ({shown} boxes)", fontsize=7)
        ax.set_axis_off()
    return png_bytes(fig)


def per_class_rows(report: dict, engine: dict | None) -> list[list[str]]:
    """[class, unfolded AP, engine AP, difference] from the accuracies' ``per_class_ap`` (points)."""
    base = (((report.get("baseline") or {}).get("accuracy") or {}).get("per_class_ap")) or {}
    other = (((engine or {}).get("accuracy") or {}).get("per_class_ap")) or {}

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.2f}"

    rows = []
    for name in base:
        a, b = base.get(name), other.get(name)
        rows.append([name, f(a), f(b), "–" if a is None or b is None else f"{b - a:+.2f}"])
    return rows


def detections_section(report: dict) -> str:
    """report.html's "Detections": the example images (files in the bundle) and per-class AP, FP32 vs INT8."""
    task = report.get("task") or {}
    if task.get("name") != "detect":
        return ""
    ex = task.get("examples") or {}
    eng = next((e for e in report.get("engines", []) if e.get("name") + "-" + str(e.get("precision"))
                == ex.get("engine")), None) or next((e for e in report.get("engines", [])
                                                     if e.get("precision") == "int8" and e.get("accuracy")), None)
    label = f"{eng.get('name')} {eng.get('precision')}" if eng else "engine"
    out = ['<h2 id="detections">Detections</h2>']
    files = ex.get("files") or []
    if files:
        out.append(f'<p class="muted">Test images: the unfolded FP32 model (left) and {esc(label)} (right), boxes '
                   f"scoring at least {ex.get('display_score', DISPLAY_SCORE):g} drawn (every box counts in the mAP); "
                   "ground truth dashed white.</p>")
        out += [f'<figure><img alt="test image {i}" src="{esc(p)}"></figure>' for i, p in enumerate(files)]
    elif ex.get("why_not"):
        out.append(f'<p class="muted">No example images: {esc(ex["why_not"])}.</p>')
    rows = per_class_rows(report, eng)
    if rows:
        out.append(f"<h3>AP@[.5:.95] per class (points): unfolded FP32 vs {esc(label)}</h3>")
        out.append(table(["class", "unfolded fp32", label, "difference"], rows, numeric=[1, 2, 3]))
    return "".join(out)
