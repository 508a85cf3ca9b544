"""Accuracy decisions on paired counts: is a candidate worse than the reference by more than the budget?

Both models see the same images, so what matters is where they disagree: ``lost`` images the
reference got right and the candidate got wrong, ``gained`` the other way round. One image of ``n``
is ``100 / n`` points, often coarser than a 0.5-point budget (1.39 points on 72 images), so the raw
drop cannot be compared with the budget. Instead, conditional on the ``m = lost + gained``
discordant images, ``lost ~ Binomial(m, theta)`` and the drop is ``100 * m / n * (2 theta - 1)``;
a one-sided exact (Clopper-Pearson) lower bound on ``theta`` gives the lower bound on the drop
(the upper bound is the exact bound of ``lost / n``, valid whatever the discordance). A candidate
is *worse than the budget* only when even the lower bound exceeds it (with a zero budget this is
the exact one-sided McNemar test); otherwise it is within the budget as far as the set can tell,
and the message says how coarse the set is. Pure functions, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: one-sided error rate of every decision (each bound is a one-sided 95% bound)
ALPHA = 0.05


@dataclass(frozen=True)
class Paired:
    """How a candidate and a reference disagree on the same ``n`` labelled images."""

    n: int
    lost: int  # reference right, candidate wrong
    gained: int  # reference wrong, candidate right

    @classmethod
    def of(cls, reference_correct: Sequence[bool], candidate_correct: Sequence[bool]) -> "Paired":
        """Counts from per-image correctness of the reference and the candidate (same images, same order)."""
        r = np.asarray(reference_correct, dtype=bool)
        c = np.asarray(candidate_correct, dtype=bool)
        if r.shape != c.shape:
            raise ValueError(f"paired counts need the same images: {r.shape} vs {c.shape}")
        return cls(int(r.size), int(np.sum(r & ~c)), int(np.sum(~r & c)))

    @property
    def drop(self) -> float:
        """Observed drop in points (reference top-1 minus candidate top-1)."""
        return 100.0 * (self.lost - self.gained) / self.n if self.n else 0.0

    @property
    def resolution(self) -> float:
        """Points one image is worth on this set."""
        return 100.0 / self.n if self.n else float("inf")

    def words(self) -> str:
        """``3 of 180 flipped to wrong, 1 to right``."""
        return f"{self.lost} of {self.n} flipped to wrong, {self.gained} to right"

    def to_dict(self) -> dict:
        return {"n": self.n, "lost": self.lost, "gained": self.gained}


@dataclass(frozen=True)
class Verdict:
    """The decision on one candidate: within the budget or shown worse, with the numbers behind it."""

    holds: bool  # True: not shown worse than the budget
    drop: float  # observed, points
    low: float | None  # one-sided 95% lower bound on the drop (points); None without counts
    high: float | None  # one-sided 95% upper bound
    p_value: float | None  # exact, H0: drop <= budget (conditional on the discordant images)
    budget: float
    paired: Paired | None
    text: str

    def to_dict(self) -> dict:
        return {"holds": self.holds, "drop": round(self.drop, 4),
                "low": None if self.low is None else round(self.low, 4),
                "high": None if self.high is None else round(self.high, 4),
                "p_value": None if self.p_value is None else float(f"{self.p_value:.4g}"),
                "budget": self.budget, "counts": self.paired.to_dict() if self.paired else None,
                "text": self.text}


def _theta_bounds(lost: int, m: int, alpha: float) -> tuple[float, float]:
    """One-sided (1 - alpha) Clopper-Pearson bounds on ``lost / m``."""
    from scipy.stats import beta

    low = 0.0 if lost == 0 else float(beta.ppf(alpha, lost, m - lost + 1))
    high = 1.0 if lost == m else float(beta.ppf(1.0 - alpha, lost + 1, m - lost))
    return low, high


def drop_bounds(p: Paired, alpha: float = ALPHA) -> tuple[float, float]:
    """One-sided (1 - alpha) lower and upper bounds on the drop in points.

    Lower (the one that decides): exact given the ``lost + gained`` discordant images (McNemar's
    conditioning). Upper: the exact upper bound of the share of images lost, ``lost / n`` (the drop
    cannot exceed it): valid whatever the discordance, so "no image changed" on a small set still
    admits a drop of several points, which is what such a set can tell."""
    if p.n == 0:
        return 0.0, 0.0
    m = p.lost + p.gained
    lo = 0.0 if m == 0 else 100.0 * m / p.n * (2.0 * _theta_bounds(p.lost, m, alpha)[0] - 1.0)
    return lo, 100.0 * _theta_bounds(p.lost, p.n, alpha)[1]


def p_value(p: Paired, budget: float) -> float:
    """Exact one-sided p-value of "the drop is at most ``budget`` points" (small: shown worse)."""
    from edgerep.bench.binomial import p_at_least

    m = p.lost + p.gained
    if m == 0 or p.n == 0:
        return 1.0
    theta0 = 0.5 + budget * p.n / (200.0 * m)  # the share of discordant images lost at a drop of exactly budget
    if theta0 >= 1.0:
        return 1.0  # so few disagreements cannot exceed the budget
    if theta0 <= 0.0:
        return 0.0  # a budget below -100 m / n: any count of lost images exceeds it
    return p_at_least(p.lost, m, theta0)  # P(at least `lost` of the m discordant images lost, at theta0)


def judge(drop: float, budget: float, paired: Paired | None = None, *, alpha: float = ALPHA,
          unit: str = "points") -> Verdict:
    """Within ``budget`` or shown worse: decided on ``paired`` counts when given, else on ``drop``
    itself (a continuous measure such as the outputs' cosine loss, which has no image counts)."""
    if paired is None or paired.n == 0:
        holds = drop <= budget
        text = (f"drop {drop:.2f} {'<=' if holds else '>'} {budget:g} {unit}"
                " (no per-image counts: compared as measured)")
        return Verdict(holds, drop, None, None, None, budget, None, text)
    low, high = drop_bounds(paired, alpha)
    holds = low <= budget
    pv = p_value(paired, budget)
    conf = round(100 * (1 - alpha))
    if paired.lost + paired.gained == 0:
        return Verdict(True, 0.0, low, high, 1.0, budget, paired,
                       f"drop 0.00 points (no image of {paired.n} changed; one-sided {conf}% upper bound "
                       f"{high:.2f}): within the {budget:g}-point budget")
    shown = (f"drop {paired.drop:.2f} points ({paired.words()}; one-sided {conf}% bounds {low:+.2f} to "
             f"{high:+.2f})")
    if not holds:
        text = f"{shown}: worse than the {budget:g}-point budget (lower bound {low:.2f} > {budget:g}, p = {pv:.2g})"
    elif paired.drop <= budget:
        text = f"{shown}: within the {budget:g}-point budget"
    else:
        text = f"{shown}: not shown worse than the {budget:g}-point budget (lower bound {low:.2f})"
    if paired.resolution > budget:
        text += f"; one image is {paired.resolution:.2f} points on {paired.n} images, coarser than the budget"
    return Verdict(holds, paired.drop, low, high, pv, budget, paired, text)


def resolution_note(n: int, budget: float) -> str | None:
    """A sentence when one image of ``n`` is worth more than ``budget`` points, else None."""
    if n <= 0 or 100.0 / n <= budget:
        return None
    return (f"one image of the {n}-image selection set is {100.0 / n:.2f} points, coarser than the {budget:g}-point "
            "budget: accuracy choices are decided on paired counts (an exact one-sided test of a drop beyond the "
            "budget), not on the raw drop")


def tied_with_best(correct: dict[str, Sequence[bool] | None], drops: dict[str, float], *,
                   alpha: float = ALPHA) -> tuple[str, list[str]]:
    """The most accurate candidate and every candidate *not shown less accurate* than it (itself first).

    ``correct``: per candidate, per-image correctness on the same images (None when unlabelled:
    then only an equal ``drops`` value ties). Paired exact one-sided test at a zero budget."""
    best = min(drops, key=lambda k: (drops[k], list(drops).index(k)))
    tied = [best]
    for k in drops:
        if k == best:
            continue
        a, b = correct.get(best), correct.get(k)
        if a is None or b is None:
            if drops[k] == drops[best]:
                tied.append(k)
            continue
        if judge(0.0, 0.0, Paired.of(a, b), alpha=alpha).holds:
            tied.append(k)
    return best, tied


__all__ = ["ALPHA", "Paired", "Verdict", "judge", "drop_bounds", "p_value", "resolution_note", "tied_with_best"]
