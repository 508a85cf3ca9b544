"""Classification (the default task): top-1 against labels in %, agreement or cosine with the unfolded model
without labels; a choice is scored by its top-1 drop on the selection split (paired counts), or by the
outputs' cosine when there are no labels. A model whose output is not (N, classes) is scored by cosine only."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from edgerep.tasks.base import Evaluation


class ClassifyTask:
    """``Task`` for classifiers (and, by fidelity only, any model no other task claims)."""

    name = "classify"
    metric = "top1"

    def matches_output(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == 2

    def collect_targets(self, batches: Iterable[Any]) -> np.ndarray | None:
        ys = []
        for y in batches:
            if y is None:
                return None
            ys.append(np.asarray(y, np.int64))
        return np.concatenate(ys) if ys else None

    def evaluate(self, outputs: np.ndarray, targets: Any, reference: np.ndarray | None, *, dataset: Any = None,
                 name: str = "", user_metric: Callable | None = None) -> Evaluation:
        from edgerep.bench.accuracy import score

        return Evaluation(score(outputs, targets, reference, user_metric, classifier=outputs.ndim == 2))

    def selection_score(self, outputs: np.ndarray, targets: Any, reference: np.ndarray):
        from edgerep.quant.mixed import Score
        from edgerep.quant.paired import Paired
        from edgerep.quant.pipeline import cosine_loss

        ref = reference.astype(np.float64)
        err = float(np.mean((outputs.astype(np.float64) - ref) ** 2) / (float(np.mean(ref ** 2)) or 1.0))
        if not np.isfinite(err):
            return Score(drop=100.0, error=float("inf"))
        if outputs.ndim != 2:
            return Score(drop=cosine_loss(outputs, reference), error=err)
        agree = float((outputs.argmax(1) == reference.argmax(1)).mean() * 100.0)
        if targets is None:
            # no labels: top-1 agreement flips on noise when logits are near-uniform (random or low-margin
            # nets), so the budget applies to the logits' fidelity instead
            return Score(drop=cosine_loss(outputs, reference, centered=True), error=err, agreement=agree)
        correct, ref_correct = outputs.argmax(1) == targets, reference.argmax(1) == targets
        top1 = float(correct.mean() * 100.0)
        return Score(drop=float(ref_correct.mean() * 100.0) - top1, error=err, top1=top1, agreement=agree,
                     paired=Paired.of(ref_correct, correct), correct=correct)

    def ground_truth_files(self, dataset: Any, limit: int | None) -> dict[str, Any]:
        return {}


TASK = ClassifyTask()
