"""Small /2 report pieces for tests that gate or render hand-made reports (the shapes of edgerep.report.models)."""
from __future__ import annotations

from edgerep.report.models import dump
from edgerep.report.models.results import Accuracy, Drop, Fidelity


def acc(top1: float | None = None, *, samples: int = 100, cosine: float | None = None, sqnr_db: float | None = None,
        agreement: float | None = None, classes: int | None = None, nonfinite: int = 0, **extra) -> dict:
    """A serialized accuracy: top-1 against labels when given, else agreement with the unfolded model."""
    fid = Fidelity(cosine=cosine, sqnr_db=sqnr_db, top1_agreement=agreement) \
        if any(v is not None for v in (cosine, sqnr_db, agreement)) else None
    if top1 is not None:
        a = Accuracy(task="classify", metric="top1", unit="%", vs="labels", value=top1,
                     correct=int(round(top1 * samples / 100.0)), samples=samples, labelled=True, fidelity=fid,
                     nonfinite=nonfinite, classes=classes, **extra)
    else:
        a = Accuracy(task="classify", metric="top1_agreement", unit="%", vs="unfolded fp32", value=agreement,
                     correct=None if agreement is None else int(round(agreement * samples / 100.0)), samples=samples,
                     labelled=False, fidelity=fid, nonfinite=nonfinite, classes=classes, **extra)
    return dump(a)


def drop(value: float, of: str = "top1") -> dict:
    """A serialized drop vs the unfolded FP32 model, in points."""
    return dump(Drop(of=of, unit="points", value=value))
