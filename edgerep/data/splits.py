"""Three disjoint data sets for one deploy: calibration (activation ranges), selection (every choice:
calibration method, CPU policy, layers kept in float) and test (only reported and gated).

Where each comes from, in order:
1. a set named for the role (``--calib-data``, ``--val-data``, ``--eval-data``; a recipe's data for
   calibration);
2. otherwise ``--data`` (or the data set the checkpoint names): its own split for the role when it
   has one (``digits``: calib / val / test; a folder with ``calib/``, ``val/``, ``test/`` sub-folders;
   an ``.npz`` with ``x_calib``, ``x_val``, ``x_test``), else a deterministic split, stratified by
   label, of whatever it holds among the roles that need it (weights 20 / 20 / 60).
Named sets that share samples (same content hash) are refused unless ``allow_overlap``; the
report then says the numbers are optimistic. ``splits.json`` lists every sample id of each role.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgerep.data.base import Dataset, Subset
from edgerep.errors import DataError

ROLES = ("calibration", "selection", "test")
#: the split name each role reads from a data set that has splits
SPLIT_NAME = {"calibration": "calib", "selection": "val", "test": "test"}
#: shares of one unsplit source, by role (normalized over the roles that need it)
WEIGHTS = {"calibration": 0.2, "selection": 0.2, "test": 0.6}
SPLIT_SEED = 0
FLAG = {"calibration": "--calib-data", "selection": "--val-data", "test": "--eval-data"}


def stratified_split(labels: np.ndarray | None, n: int, weights: dict[str, float],
                     seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Sorted row indices per role: per class (or over all rows without labels), a seeded permutation
    cut at rounded cumulative shares, so every class is spread over the roles in proportion."""
    roles = [r for r in ("test", "selection", "calibration") if r in weights]
    total = sum(weights[r] for r in roles)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    rng = np.random.RandomState(seed)
    # each sample gets its class-relative rank (i + 0.5) / n_c in a seeded permutation; all samples are
    # ordered by rank and cut at the cumulative shares: every role gets round(share * n) samples and
    # about its share of every class, even when classes are smaller than the number of roles
    order, rank = [], []
    for idx in groups:
        idx = rng.permutation(idx)
        order.append(idx)
        rank.append((np.arange(len(idx)) + 0.5) / len(idx))
    order_all = np.concatenate(order) if order else np.zeros(0, np.int64)
    rank_all = np.concatenate(rank) if rank else np.zeros(0)
    ranked = order_all[np.lexsort((rng.random_sample(len(rank_all)), rank_all))]
    out, cum, start = {}, 0.0, 0
    for r in roles:
        cum += weights[r] / total
        stop = int(round(cum * n))
        out[r] = np.sort(ranked[start:stop]).astype(np.int64)
        start = stop
    return out


@dataclass
class RoleSource:
    """Where one role's data came from, for the report."""

    spec: str
    how: str  # "named", "split <name>", "stratified <k>-way split", "synthetic"
    split: str | None = None  # the source's own split read whole (disjoint from its other splits)


@dataclass
class DataSplits:
    """The three data sets of a deploy and how they were made."""

    sets: dict[str, Dataset]
    sources: dict[str, RoleSource]
    notes: list[str] = field(default_factory=list)
    overlap: dict[str, int] = field(default_factory=dict)  # "calibration/test" -> shared samples (allowed)

    @property
    def calibration(self) -> Dataset:
        return self.sets["calibration"]

    @property
    def selection(self) -> Dataset:
        return self.sets["selection"]

    @property
    def test(self) -> Dataset:
        return self.sets["test"]

    @property
    def labelled(self) -> bool:
        """Whether the test set has labels (an accuracy verdict is possible)."""
        return bool(self.test.has_labels)

    def ids(self) -> dict[str, list[str]]:
        """``splits.json``: every sample id of each role."""
        return {r: self.sets[r].sample_ids() for r in ROLES}

    def to_report(self) -> dict[str, Any]:
        """Counts, fingerprints (of the id lists) and sources per role, and what the reader must know."""
        d: dict[str, Any] = {}
        for r, ids in self.ids().items():
            d[r] = {"count": len(ids), "fingerprint": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
                    "source": self.sources[r].spec, "how": self.sources[r].how,
                    "labelled": bool(self.sets[r].has_labels)}
        d["overlap"] = dict(self.overlap)
        d["note"] = " ".join(self.notes) or None
        return d

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.ids(), indent=1) + "\n")


def _has_split(spec: str, split: str) -> bool:
    """Whether the data set ``spec`` holds its own ``split`` (digits, a sub-folder, an npz key)."""
    if spec == "digits":
        return True
    p = Path(spec)
    if p.is_dir():
        return (p / split).is_dir()
    if p.suffix.lower() == ".npz" and p.is_file():
        import zipfile

        try:
            with zipfile.ZipFile(p) as zf:
                return f"x_{split}.npy" in zf.namelist()
        except (OSError, zipfile.BadZipFile):
            return False
    return False


def resolve_splits(*, data: str | None, calib: str | None = None, val: str | None = None, test: str | None = None,
                   calib_split: str = "calib", meta: Any = None, allow_overlap: bool = False,
                   say=lambda msg: None) -> DataSplits:
    """The calibration, selection and test sets (see the module docstring); ``data=None`` with no named
    sets means synthetic inputs for every role (latency only: no accuracy verdict)."""
    from edgerep.data import open_dataset

    named = {"calibration": calib, "selection": val, "test": test}
    sets: dict[str, Dataset] = {}
    sources: dict[str, RoleSource] = {}
    notes: list[str] = []
    for role, spec in named.items():
        if spec is not None:
            split = calib_split if role == "calibration" else SPLIT_NAME[role]
            sets[role] = _open(spec, split, meta, role)
            own = _has_split(str(spec), split)
            sources[role] = RoleSource(str(spec), "named" + (f" (split {split})" if own else ""),
                                       split if own else None)
    rest = [r for r in ROLES if r not in sets]
    if rest:
        spec = data if data is not None else "synthetic"
        if spec == "synthetic":
            from edgerep.data.synthetic import SyntheticDataset

            base = open_dataset("synthetic", meta=meta)
            for i, r in enumerate(ROLES):
                if r in rest:
                    sets[r] = SyntheticDataset(base.pre, n=len(base), seed=i)
                    sources[r] = RoleSource("synthetic", f"synthetic seed {i}")
            notes.append("synthetic inputs have no labels: no accuracy is measured")
        else:
            own = [r for r in rest if _has_split(spec, calib_split if r == "calibration" else SPLIT_NAME[r])]
            for r in own:
                split = calib_split if r == "calibration" else SPLIT_NAME[r]
                sets[r] = _open(spec, split, meta, r)
                sources[r] = RoleSource(spec, f"split {split}", split)
            cut = [r for r in rest if r not in own]
            if cut and own:
                _cut_from_own_split(spec, sets, sources, own, cut, notes, say)
            elif cut:
                whole = _open(spec, "", meta, cut[0])  # no split of its own: all of it
                parts = stratified_split(whole.labels(), len(whole), {r: WEIGHTS[r] for r in cut})
                how = f"stratified {len(cut)}-way split (seed {SPLIT_SEED})" if len(cut) > 1 else "all of it"
                for r in cut:
                    sets[r] = Subset(whole, parts[r], r) if len(cut) > 1 else whole
                    sources[r] = RoleSource(spec, how)
                if len(cut) > 1:
                    shares = ", ".join(f"{r} {len(parts[r])}" for r in cut)
                    msg = (f"{spec} has no {'/'.join(SPLIT_NAME[r] for r in cut)} split: split it deterministically "
                           f"({shares} samples, stratified by label, seed {SPLIT_SEED})")
                    notes.append(msg)
                    say(msg)
    for r in ROLES:
        if len(sets[r]) == 0:
            for ds in sets.values():  # a damaged file is the better message: read everything once
                for _ in ds.batches(256):
                    pass
            raise DataError(f"the {r} set ({sources[r].spec}, {sources[r].how}) is empty",
                            hint=f"name a non-empty set with {FLAG[r]}")
    overlap = _overlaps(sets, sources, allow_overlap)
    if overlap:
        notes.append("the sets share samples (--allow-overlap): accuracy figures are OPTIMISTIC")
    return DataSplits(sets, sources, notes, overlap)


def _cut_from_own_split(spec: str, sets: dict, sources: dict, own: list[str], cut: list[str], notes: list[str],
                        say) -> None:
    """A source with some of its splits (say ``calib/`` and ``test/`` but no ``val/``): the missing
    non-test roles are cut, stratified, out of its calibration (else selection) split."""
    if "test" in cut:
        raise DataError(f"{spec} has {', '.join(SPLIT_NAME[r] for r in own)} but no test split",
                        hint="add a test/ sub-folder (x_test in an .npz), or name the test set with --eval-data")
    donor = "calibration" if "calibration" in own else "selection"
    ds = sets[donor]
    parts = stratified_split(ds.labels(), len(ds), {donor: 1.0, **{r: 1.0 for r in cut}})
    how = f"{sources[donor].how}, cut {len(cut) + 1}-way (stratified, seed {SPLIT_SEED})"
    for r in [donor, *cut]:
        sets[r] = Subset(ds, parts[r], r)
        sources[r] = RoleSource(spec, how)
    msg = (f"{spec} has no {'/'.join(SPLIT_NAME[r] for r in cut)} split: cut from its {SPLIT_NAME[donor]} split ("
           + ", ".join(f"{r} {len(parts[r])}" for r in [donor, *cut]) + " samples)")
    notes.append(msg)
    say(msg)


def _open(spec: str, split: str, meta: Any, role: str) -> Dataset:
    from edgerep.data import open_dataset

    ds = open_dataset(spec, split=split, meta=meta)
    if spec == "synthetic":
        from edgerep.data.synthetic import SyntheticDataset

        ds = SyntheticDataset(ds.pre, n=len(ds), seed=ROLES.index(role))
    return ds


def _overlaps(sets: dict[str, Dataset], sources: dict[str, RoleSource], allow: bool) -> dict[str, int]:
    """Shared samples between roles whose sets do not come from one split of one source (those are
    disjoint by construction); refused unless ``allow``."""
    out: dict[str, int] = {}
    digests: dict[str, set[str]] = {}
    for i, a in enumerate(ROLES):
        for b in ROLES[i + 1:]:
            sa, sb = sources[a], sources[b]
            if sa.spec == sb.spec and (not sa.how.startswith("named") and not sb.how.startswith("named")
                                       or None not in (sa.split, sb.split) and sa.split != sb.split):
                continue  # parts of one deterministic split, or the source's own splits: disjoint by construction
            if "synthetic" in (sa.spec, sb.spec):
                continue
            for r in (a, b):
                if r not in digests:
                    digests[r] = set(sets[r].sample_digests())
            shared = len(digests[a] & digests[b])
            if shared:
                if not allow:
                    raise DataError(f"the {a} set ({sa.spec}) and the {b} set ({sb.spec}) share {shared} samples "
                                    "(same content)", hint=f"name disjoint sets ({FLAG[a]}, {FLAG[b]}), or pass "
                                    "--allow-overlap to accept optimistic numbers")
                out[f"{a}/{b}"] = shared
    return out

