"""Recompute every mAP of a detector's bundle with pycocotools from two files alone: ``annotations/test.json``
and ``predictions/<engine>-<precision>.json``; nothing of edgerep is imported. Prints the report's value beside
the recomputed one and exits 1 when any differs by more than 1e-4 points.

    .venv/bin/python benchmarks/detect_recompute.py engines/out/repdet_scenes [more bundles ...]
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path


def recompute(bundle: Path) -> list[tuple[str, float, float, float, float]]:
    """(row, report mAP, recomputed mAP, report mAP@.5, recomputed mAP@.5) per engine row of ``bundle``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    report = json.loads((bundle / "report.json").read_text())
    rows = [report["baseline"]] + [e for e in report["engines"] if e.get("accuracy")]
    out = []
    for row in rows:
        acc = row["accuracy"]
        preds = json.loads((bundle / acc["predictions_file"]).read_text())
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(bundle / "annotations" / "test.json"))
            ev = COCOeval(gt, gt.loadRes(preds) if preds else COCO(), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        out.append((acc["predictions_file"], acc["value"], max(0.0, ev.stats[0]) * 100, acc["map50"],
                    max(0.0, ev.stats[1]) * 100))
    return out


def main(argv: list[str]) -> int:
    bad = 0
    print("| bundle | predictions file | report mAP | pycocotools mAP | report mAP@.5 | pycocotools mAP@.5 |")
    print("|---|---|---|---|---|---|")
    for b in argv:
        for name, rep, again, rep50, again50 in recompute(Path(b)):
            bad += abs(rep - again) > 1e-4 or abs(rep50 - again50) > 1e-4
            print(f"| {b} | {name} | {rep:.4f} | {again:.4f} | {rep50:.4f} | {again50:.4f} |")
    print("all equal" if not bad else f"{bad} rows differ")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
