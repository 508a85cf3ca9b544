"""Super-resolution: PSNR (headline, dB) and SSIM on Y of YCbCr with ``scale`` pixels shaved, by scikit-image
(``edgerep.bench.sr_metrics``; the SR literature's convention), mean over whole test images, with the count.

Outputs are the model's RGB images in [0, 1] (N, 3, sH, sW); the HR ground truth is read from the data set
(``dataset.pair(i)``: an ``edgerep.data.sr.SRDataset``), so the targets a batch carries are none. Beside each
engine's PSNR: its drop against the unfolded FP32 model's PSNR on the same images (dB, what the gate's
``--max-drop`` limits) and ``output_psnr_db``, the PSNR of its output image against the unfolded FP32 model's
output (same convention): how far INT8 moved the picture, whatever the ground truth.

A choice on the selection split is scored by its **PSNR drop** against the FP32 reference's PSNR on the same
selection images (``Score.drop`` in dB, so ``--max-drop`` budgets the choices in the gate's unit), not by a
cosine of the output tensor: an SR output is mostly the upscaled input (cosine ~ 1 for any choice), and what the
user pays for is PSNR. The selection split is patches (one batch shape for photos of any size); their squared
errors pool per photo (``photo_psnr``), so each photo scores as the whole image it came from and weighs as one
image, like a test image (a mean of per-patch PSNRs would let near-flat patches, whose PSNR moves by dBs on a
tiny error, decide). The tie-breaking ``error`` is the output MSE relative to the reference's mean square.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.tasks.base import Evaluation

IDENTICAL_DB = 999.0  # an output PSNR against itself (identical images), as Fidelity's convention


def _scale(dataset: Any, outputs: np.ndarray) -> int:
    s = getattr(dataset, "scale", None)
    if s is None:
        raise EdgerepError(f"task sr: the data set {getattr(dataset, 'name', '?')} has no HR ground truth",
                           hint="use --data photos, a folder of HR images, or a folder with hr/ and lr/")
    return int(s)


def _hr(dataset: Any, i: int) -> np.ndarray:
    """Sample ``i``'s HR image, uint8 HWC."""
    return dataset.pair(i)[1]


def image_scores(outputs: np.ndarray, dataset: Any, reference: np.ndarray | None = None) -> list[dict]:
    """Per test image: id, PSNR / SSIM against the HR image and the output's PSNR against ``reference``'s."""
    from edgerep.bench.sr_metrics import image_metrics

    scale = _scale(dataset, outputs)
    ids = dataset.sample_ids()
    rows = []
    for i in range(len(outputs)):
        hr = _hr(dataset, i)
        if outputs[i].shape[1:] != hr.shape[:2]:
            raise EdgerepError(f"task sr: output {tuple(outputs[i].shape)} for {ids[i]} is not its HR size "
                               f"{hr.shape[:2]} x 3", hint="the model's upscale factor must be the data's --scale")
        s = image_metrics(outputs[i], hr.transpose(2, 0, 1), scale, layout="chw")
        row = {"id": ids[i], "psnr_db": s.psnr, "ssim": s.ssim}
        if reference is not None:
            o = image_metrics(outputs[i], reference[i], scale, layout="chw").psnr
            row["output_psnr_db"] = IDENTICAL_DB if not np.isfinite(o) else o
        rows.append(row)
    return rows


def scored_images(outputs: np.ndarray, dataset: Any, reference: np.ndarray | None = None) -> list[dict]:
    """``image_scores`` of outputs with non-finite values replaced (NaN 0, +inf 1, -inf 0), as an engine is scored
    (the non-finite images are counted apart: ``edgerep.bench.metrics.nonfinite_rows``)."""
    return image_scores(np.nan_to_num(outputs, nan=0.0, posinf=1.0, neginf=0.0), dataset, reference)


def images_accuracy(rows: list[dict], scale: int, *, scores_file: str | None = None, fidelity: Any = None,
                    nonfinite: int = 0, user: dict | None = None) -> Any:
    """The report's ``Accuracy`` of per-image rows (``image_scores``): PSNR and SSIM summed in image order and
    averaged over images, the output PSNR against the unfolded model's averaged where the rows have it."""
    from edgerep.report.models.results import sr_accuracy

    n = len(rows)
    out = [r["output_psnr_db"] for r in rows if "output_psnr_db" in r]
    return sr_accuracy(psnr_sum=float(sum(r["psnr_db"] for r in rows)), ssim_sum=float(sum(r["ssim"] for r in rows)),
                       images=n, scale=scale, output_psnr_db=float(np.mean(out)) if n and len(out) == n else None,
                       scores_file=scores_file, fidelity=fidelity, nonfinite=nonfinite, user=user)


def photo_psnr(outputs: np.ndarray, dataset: Any) -> dict[str, float]:
    """``{photo: PSNR (dB)}``: the squared Y errors of every sample cut from a photo, pooled (whole images:
    their own PSNR, as ``image_scores`` gives it)."""
    from edgerep.bench.sr_metrics import pooled_psnr, y_squared_error

    scale = _scale(dataset, outputs)
    items = getattr(dataset, "items", None)
    sums: dict[str, list] = {}
    for i in range(len(outputs)):
        hr = _hr(dataset, i)
        photo = items[i].image if items is not None else str(i)
        sse, n = y_squared_error(outputs[i], hr.transpose(2, 0, 1), scale, layout="chw")
        acc = sums.setdefault(photo, [0.0, 0])
        acc[0] += sse
        acc[1] += n
    return {p: pooled_psnr(sse, n) for p, (sse, n) in sums.items()}


def selection_psnr(outputs: np.ndarray, dataset: Any) -> float:
    """Mean over photos of ``photo_psnr``: the selection split's PSNR (dB)."""
    return float(np.mean(list(photo_psnr(outputs, dataset).values())))


class SRTask:
    """``Task`` for super-resolution models: (N, 3, H, W) in, (N, 3, sH, sW) out."""

    name = "sr"
    metric = "psnr"
    #: deploy's and a bare gate's --max-drop (dB) when none is given: the task-wide 0.5 would let an INT8 file
    #: lose half a dB unflagged (the demo's INT8 loses 0.04 dB; a clipped output range 0.14 dB)
    default_max_drop = 0.1

    def __init__(self) -> None:
        self._ref_cache: dict[str, float] = {}

    def describe(self) -> dict[str, Any]:
        from edgerep.bench.sr_metrics import CONVENTION

        return {"metric_convention": CONVENTION, "evaluator": "scikit-image peak_signal_noise_ratio / "
                "structural_similarity", "selection": "PSNR drop (dB) against the FP32 reference on the "
                "selection images"}

    def matches_output(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 4

    def check_output(self, shape: tuple[int, ...], classes: int | None = None) -> None:
        if not self.matches_output(shape) or shape[1] != 3:
            raise EdgerepError(f"sr: the model's output has shape {tuple(shape)}, not (N, 3, H, W) RGB",
                               hint="an SR model returns the RGB image; pass --task classify for another model")

    def check_data(self, dataset: Any, role: str) -> None:
        """Refuse (exit 2) whole images of different sizes in a scored role: outputs are stacked per set, and
        padding to one size would change the border pixels PSNR reads."""
        sizes = sorted({it.lr_hw for it in getattr(dataset, "items", [])})
        if len(sizes) > 1:
            from edgerep.errors import DataError

            raise DataError(f"the {role} set {getattr(dataset, 'name', '?')} holds LR images of {len(sizes)} sizes "
                            f"({', '.join(f'{h}x{w}' for h, w in sizes[:4])}{', ...' if len(sizes) > 4 else ''}); "
                            "task sr scores whole images of one size per set for now",
                            hint="crop the HR images to one size (a multiple of the scale)")

    def collect_targets(self, batches: Iterable[Any]) -> None:
        for _ in batches:
            pass
        return None  # the HR images are read from the data set (dataset.pair)

    def evaluate(self, outputs: np.ndarray, targets: Any, reference: np.ndarray | None, *, dataset: Any = None,
                 name: str = "", user_metric: Callable | None = None) -> Evaluation:
        from edgerep.bench import metrics
        from edgerep.bench.accuracy import _finite, user_values
        from edgerep.bench.sr_metrics import CONVENTION
        from edgerep.report.models.results import Fidelity

        n = int(outputs.shape[0])
        rows = scored_images(outputs, dataset, reference)
        fid = None
        if reference is not None and n:
            fid = Fidelity(cosine=_finite(metrics.cosine(reference, outputs)),
                           sqnr_db=_finite(metrics.sqnr_db(reference, outputs)))
        user = user_values(user_metric, outputs, None, reference) if user_metric is not None else None
        rel = f"sr/{name}.json"
        acc = images_accuracy(rows, _scale(dataset, outputs), scores_file=rel, fidelity=fid,
                              nonfinite=metrics.nonfinite_rows(outputs), user=user)
        file = {"convention": CONVENTION, "scale": _scale(dataset, outputs), "engine": name,
                "images": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
        return Evaluation(acc, {rel: file}, {"per_image": rows, "first": outputs[:1]})

    def ground_truth_files(self, dataset: Any, limit: int | None) -> dict[str, Any]:
        """``sr/test.json``: the test images (ids, the photos they come from), the scale and the LR method, so
        the PSNR is recomputed from the photos ``splits.json`` names."""
        n = len(dataset) if limit is None else min(limit, len(dataset))
        return {"sr/test.json": {"scale": int(getattr(dataset, "scale", 0) or 0),
                                 "lr_method": getattr(dataset, "lr_method", None),
                                 "ids": dataset.sample_ids()[:n],
                                 "data": dataset.describe() if hasattr(dataset, "describe") else None}}

    def write_views(self, root: Path, dataset: Any, targets: Any, details: dict[str, dict], ref: str,
                    other: str | None) -> tuple[dict[str, str], dict[str, Any]]:
        """The report view: ``sr/crop.png`` (bicubic, unfolded FP32 ``ref``, INT8 ``other``, HR of one crop of the
        first test image, with PSNR; ``edgerep.report.sr_picture``) and ``sr/crop.json``. Returns ({manifest key:
        path}, report["task"]["examples"])."""
        import json

        from edgerep.report.sr_picture import crop_picture

        first = {k: v.get("first") for k, v in details.items()}
        if other is None or first.get(other) is None or first.get(ref) is None or not len(dataset):
            return {}, {"files": [], "why_not": "no INT8 engine ran" if other is None else "no test image scored"}
        lr, hr = dataset.pair(0)
        png, info = crop_picture(lr, hr, first[ref][0], first[other][0], int(dataset.scale), ("unfolded FP32", other))
        info.update({"image": dataset.sample_ids()[0], "reference": ref, "engine": other})
        (Path(root) / "sr").mkdir(parents=True, exist_ok=True)
        (Path(root) / "sr" / "crop.png").write_bytes(png)
        (Path(root) / "sr" / "crop.json").write_text(json.dumps(info, indent=1) + "\n")
        return ({"task:sr/crop.png": "sr/crop.png", "task:sr/crop.json": "sr/crop.json"},
                {"files": ["sr/crop.png"], "engine": other, "reference": ref, "crop": info})

    def selection_score(self, outputs: np.ndarray, targets: Any, reference: np.ndarray, *, dataset: Any = None):
        from edgerep.quant.mixed import Score

        o, r = outputs.astype(np.float64), reference.astype(np.float64)
        err = float(np.mean((o - r) ** 2) / (float(np.mean(r ** 2)) or 1.0))
        if not np.isfinite(err):
            return Score(drop=100.0, error=float("inf"), unit="dB")
        if dataset is None or getattr(dataset, "scale", None) is None:  # no HR: the budget is on fidelity
            from edgerep.quant.pipeline import cosine_loss

            return Score(drop=cosine_loss(outputs, reference), error=err)
        key = hashlib.blake2b(np.ascontiguousarray(reference).tobytes(), digest_size=16).hexdigest()
        if key not in self._ref_cache:
            self._ref_cache = {key: selection_psnr(reference, dataset)}
        return Score(drop=self._ref_cache[key] - selection_psnr(outputs, dataset), error=err, top1=None, unit="dB")


TASK = SRTask()
