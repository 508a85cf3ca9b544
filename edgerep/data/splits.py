"""Three disjoint data sets for one deploy: calibration (activation ranges), selection (every choice:
calibration method, CPU policy, layers kept in float) and test (only reported and gated).

Every role, however it is named (a flag, a recipe, a source's own splits), is resolved here, once:
1. a set named for the role (``--calib-data``, ``--val-data``, ``--eval-data``; a recipe's data for
   calibration): its own split for the role when it has one, else (calibration, selection) its
   ``train`` split, else all of it;
2. otherwise ``--data`` (or the data set the checkpoint names): its own split for the role when it
   has one (``digits``: calib / val / test; a folder with ``calib/``, ``val/``, ``test/`` sub-folders;
   an ``.npz`` with ``x_calib``, ``x_val``, ``x_test``); roles it has no split for are carved, stratified
   by label, out of its calibration split, else its ``train`` split (``x_train`` / ``train/``: train
   feeds calibration and selection, test stays test), else all of it (weights 20 / 20 / 60).
A source is deduplicated (same decoded pixels) before it is carved; the dropped samples are said and
listed in ``splits.json``. Refused unless ``allow_overlap`` (the report then says the numbers are
optimistic): calibration or selection reading a ``test`` split; two roles reading one split; any two
roles sharing a sample, compared by its decoded pixels before preprocessing (``pixel_digest``), so the
same image as a PNG and as an .npz row is one sample. ``splits.json`` lists every sample id of each role.
An optional fourth role, ``train`` (``--train-data``), is what the recovery ladder learns on instead of the
calibration set: held to the same rules against selection and test (``_add_train``).
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
FLAG = {"calibration": "--calib-data", "selection": "--val-data", "test": "--eval-data", "train": "--train-data"}
#: the optional fourth role: what the recovery ladder's learning steps (AdaRound, QAT) learn on, instead of the
#: calibration set; disjoint from selection and test like calibration (it may share samples with calibration)
TRAIN_ROLE = "train"


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
    duplicates: dict[str, str] = field(default_factory=dict)  # dropped id -> the id kept (same decoded pixels)

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

    @property
    def train(self) -> Dataset | None:
        """The learning steps' set (``--train-data``), or None: they learn on the calibration set."""
        return self.sets.get(TRAIN_ROLE)

    def roles(self) -> tuple[str, ...]:
        """The roles this deploy has: the three, and ``train`` when one was named."""
        return ROLES + ((TRAIN_ROLE,) if TRAIN_ROLE in self.sets else ())

    def ids(self) -> dict[str, list[str]]:
        """``splits.json``: every sample id of each role."""
        return {r: self.sets[r].sample_ids() for r in self.roles()}

    def to_report(self) -> dict[str, Any]:
        """Counts, fingerprints (of the id lists) and sources per role, and what the reader must know."""
        d: dict[str, Any] = {}
        ids_of = self.ids()
        for r in self.roles():
            ids = ids_of[r]
            d[r] = {"count": len(ids), "fingerprint": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
                    "source": self.sources[r].spec, "how": self.sources[r].how,
                    "labelled": bool(self.sets[r].has_labels)}
        d["overlap"] = dict(self.overlap)
        d["duplicates_dropped"] = len(self.duplicates)
        d["note"] = " ".join(self.notes) or None
        return d

    def write(self, path: Path) -> None:
        """``splits.json``: the ids of each role, and ``duplicates_dropped`` ({dropped id: id kept})."""
        from edgerep.report.models import Splits, dump

        doc = dump(Splits(**self.ids(), duplicates_dropped=dict(self.duplicates)))
        if doc.get(TRAIN_ROLE) is None:  # no --train-data: the file is the three roles, as always
            doc.pop(TRAIN_ROLE, None)
        Path(path).write_text(json.dumps(doc, indent=1) + "\n")


def _has_split(spec: str, split: str, meta: Any = None) -> bool:
    """Whether the data set ``spec`` holds its own ``split`` (digits, a sub-folder, an npz key; SR data: every
    role, split by photo)."""
    if not split:
        return False
    from edgerep.data import is_sr_folder

    if spec == "photos" or is_sr_folder(spec, meta):
        from edgerep.data.sr import ROLES as SR_ROLES

        return split in SR_ROLES
    if spec == "digits":
        from edgerep.data.digits import SPLITS

        return split in SPLITS
    if spec == "scenes":
        from edgerep.data.scenes import SPLITS as SCENE_SPLITS

        return split in SCENE_SPLITS
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


def _split_for(spec: str, role: str, calib_split: str) -> str | None:
    """The split of ``spec`` that ``role`` reads when ``spec`` is named for it: its own (``calib``, or
    the recipe's split; ``val``; ``test``), else for calibration / selection the source's ``train``
    split (else its ``test`` split, which the resolver refuses), else None (all of it)."""
    want = calib_split if role == "calibration" else SPLIT_NAME[role]
    if spec == "digits" and role == "calibration":
        return want  # digits refuses an unknown split by name
    if _has_split(spec, want):
        return want
    if role != "test" and _has_split(spec, TRAIN):
        return TRAIN
    if role != "test" and _has_split(spec, SPLIT_NAME["test"]):
        return SPLIT_NAME["test"]  # its only samples are test samples: refused by name, not read as "x"
    return None


def _refuse_test_split(role: str, spec: str, split: str | None, allow: bool, origin: str, notes: list[str]) -> None:
    """A split named ``test`` is a source's test samples: calibration and selection never read it
    (however they were named: flag, recipe, the source's own splits) unless ``--allow-overlap``."""
    if role == "test" or split != SPLIT_NAME["test"]:
        return
    if not allow:
        raise DataError(f"the {role} set would read the test split of {spec} ({origin}): {role} on test samples "
                        "makes every figure optimistic",
                        hint=f"use its {SPLIT_NAME[role] if role == 'selection' else 'calib'} or train split, or "
                             "pass --allow-overlap to accept optimistic numbers")
    notes.append(f"the {role} set reads the test split of {spec} (--allow-overlap): accuracy figures are OPTIMISTIC")


def resolve_splits(*, data: str | None, calib: str | None = None, val: str | None = None, test: str | None = None,
                   calib_split: str = "calib", meta: Any = None, allow_overlap: bool = False,
                   calib_origin: str | None = None, train: str | None = None, say=lambda msg: None) -> DataSplits:
    """The calibration, selection and test sets (see the module docstring); ``data=None`` with no named
    sets means synthetic inputs for every role (latency only: no accuracy verdict). The one resolver of
    every role: a non-test role on a test split, two roles on one split, and shared content (decoded
    pixels, across containers) are refused unless ``allow_overlap``. ``calib_origin`` says where
    ``calib_split`` came from (e.g. a recipe's path) for the message. ``train`` (``--train-data``) names the
    set the recovery ladder learns on: its own ``train`` split when it has one, else all of it; never a test
    split, and sharing no sample with the selection or test set (it may share with calibration)."""
    from edgerep.data import open_dataset

    named = {"calibration": calib, "selection": val, "test": test}
    origin = {"calibration": calib_origin or "--calib-data", "selection": "--val-data", "test": "--eval-data"}
    sets: dict[str, Dataset] = {}
    sources: dict[str, RoleSource] = {}
    notes: list[str] = []
    dropped: dict[str, str] = {}
    carved: set[str] = set()  # roles cut from one deduplicated source: disjoint by construction
    for role, spec in named.items():
        if spec is not None:
            split = _split_for(str(spec), role, calib_split)
            _refuse_test_split(role, str(spec), split, allow_overlap, origin[role], notes)
            nominal = calib_split if role == "calibration" else SPLIT_NAME[role]
            sets[role] = _open(spec, split or nominal, meta, role)
            sources[role] = RoleSource(str(spec), "named" + (f" (split {split})" if split else ""), split)
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
            split_of = {r: calib_split if r == "calibration" else SPLIT_NAME[r] for r in rest}
            own = [r for r in rest if _has_split(spec, split_of[r], meta)
                   or (r == "calibration" and spec == "digits")]  # digits refuses an unknown split by name
            for r in own:
                split = split_of[r]
                _refuse_test_split(r, spec, split, allow_overlap,
                                   origin[r] if r == "calibration" and calib_origin else f"its {split} split", notes)
                sets[r] = _open(spec, split, meta, r)
                sources[r] = RoleSource(spec, f"split {split}", split)
            cut = [r for r in rest if r not in own]
            if cut:
                dropped, carved = _carve(spec, meta, sets, sources, own, cut, notes, say)
    for r in ROLES:
        if len(sets[r]) == 0:
            for ds in sets.values():  # a damaged file is the better message: read everything once
                for _ in ds.batches(256):
                    pass
            raise DataError(f"the {r} set ({sources[r].spec}, {sources[r].how}) is empty",
                            hint=f"name a non-empty set with {FLAG[r]}")
    _refuse_shared_split(sources, allow_overlap)
    overlap = _overlaps(sets, sources, allow_overlap, carved)
    if train is not None:
        overlap.update(_add_train(str(train), sets, sources, meta, allow_overlap))
    if overlap:
        notes.append("the sets share samples (--allow-overlap): accuracy figures are OPTIMISTIC")
    return DataSplits(sets, sources, notes, overlap, dropped)


TRAIN = "train"


def _add_train(spec: str, sets: dict, sources: dict, meta: Any, allow: bool) -> dict[str, int]:
    """Open ``--train-data`` (its train split, else all of it) into ``sets["train"]``; refused on a test split or
    when it shares samples (decoded pixels) with the selection or test set (``_overlaps``), unless ``allow``."""
    split = TRAIN if _has_split(spec, TRAIN) else None
    if split is None and _has_split(spec, SPLIT_NAME["test"]) and not allow:
        raise DataError(f"the train set would read {spec}, which holds a test split: learning on test samples makes "
                        "every figure optimistic", hint="give it a train/ split (x_train in an .npz), or pass "
                                                        "--allow-overlap to accept optimistic numbers")
    ds = _open(spec, split or TRAIN, meta, "calibration")
    if len(ds) == 0:
        raise DataError(f"the train set ({spec}) is empty", hint="name a non-empty set with --train-data")
    sets[TRAIN_ROLE] = ds
    sources[TRAIN_ROLE] = RoleSource(spec, "named" + (f" (split {split})" if split else ""), split)
    return _overlaps(sets, sources, allow, pairs=[(TRAIN_ROLE, "selection"), (TRAIN_ROLE, "test")])


def _carve(spec: str, meta: Any, sets: dict, sources: dict, own: list[str], cut: list[str], notes: list[str],
           say) -> tuple[dict[str, str], set[str]]:
    """The roles no split of ``spec`` names, carved (stratified) out of one donor after dropping its
    duplicates: its calibration split, else its train split, else its selection split, else all of it
    (with no test split of its own, the test role is carved too). Returns ``{dropped id: kept id}`` and
    the roles carved (disjoint by construction)."""
    if "test" in cut and own:
        raise DataError(f"{spec} has {', '.join(SPLIT_NAME[r] for r in own)} but no test split",
                        hint="add a test/ sub-folder (x_test in an .npz), or name the test set with --eval-data")
    if "calibration" in own:
        donor_role, donor_split = "calibration", sources["calibration"].split
    elif _has_split(spec, TRAIN):
        donor_role, donor_split = None, TRAIN
    elif "selection" in own:
        donor_role, donor_split = "selection", SPLIT_NAME["selection"]
    elif own:  # only a test split: nothing is left to calibrate on
        raise DataError(f"{spec} has a test split but no train, calib or val split to calibrate and choose on",
                        hint="add a train/ sub-folder (x_train in an .npz), or name --calib-data and --val-data")
    else:
        donor_role, donor_split = None, None
    whole = sets[donor_role] if donor_role else _open(spec, donor_split or "", meta, cut[0])
    whole, dropped = dedupe(whole)
    roles = ([donor_role] if donor_role else []) + cut
    what = f"its {donor_split} split" if donor_split else "all of it"
    if dropped:
        msg = f"{spec}: dropped {len(dropped)} duplicate samples (same decoded pixels) from {what} before splitting"
        notes.append(msg)
        say(msg)
    if len(roles) == 1:
        sets[roles[0]] = whole
        sources[roles[0]] = RoleSource(spec, f"split {donor_split}" if donor_split else "all of it", donor_split)
        return dropped, set()
    parts = stratified_split(whole.labels(), len(whole), {r: WEIGHTS[r] for r in roles})
    how = (f"split {donor_split}, cut {len(roles)}-way (stratified, seed {SPLIT_SEED})" if donor_split
           else f"stratified {len(roles)}-way split (seed {SPLIT_SEED})")
    for r in roles:
        sets[r] = Subset(whole, parts[r], r)
        sources[r] = RoleSource(spec, how, donor_split)
    shares = ", ".join(f"{r} {len(parts[r])}" for r in roles)
    msg = (f"{spec} has no {'/'.join(SPLIT_NAME[r] for r in cut)} split: "
           + (f"cut from {what} ({shares} samples, stratified by label, seed {SPLIT_SEED})" if donor_split else
              f"split it deterministically ({shares} samples, stratified by label, seed {SPLIT_SEED})"))
    notes.append(msg)
    say(msg)
    return dropped, set(roles)


def dedupe(ds: Dataset) -> tuple[Dataset, dict[str, str]]:
    """``ds`` without its repeated samples (same decoded pixels: the first of each kept), and
    ``{dropped id: kept id}``: duplicates inside one source would otherwise land in two roles."""
    digests = ds.sample_digests()
    first: dict[str, int] = {}
    keep, dup = [], []
    for i, d in enumerate(digests):
        if d in first:
            dup.append((i, first[d]))
        else:
            first[d] = i
            keep.append(i)
    if not dup:
        return ds, {}
    ids = ds.sample_ids()
    sub = Subset(ds, np.asarray(keep), "deduplicated")
    sub._digests = [digests[i] for i in keep]
    return sub, {ids[i]: ids[j] for i, j in dup}


def _refuse_shared_split(sources: dict[str, RoleSource], allow: bool) -> None:
    """Two roles reading one split (or all) of one source whole are the same samples: refused unless ``allow``
    (the content check then counts them)."""
    for i, a in enumerate(ROLES):
        for b in ROLES[i + 1:]:
            sa, sb = sources[a], sources[b]
            if (sa.spec == sb.spec and sa.spec != "synthetic" and sa.split == sb.split
                    and not _is_cut(sa) and not _is_cut(sb) and not allow):
                where = f"split {sa.split!r}" if sa.split else "all"
                raise DataError(f"the {a} and the {b} set both read {where} of {sa.spec}: the same samples",
                                hint=f"name disjoint sets ({FLAG[a]}, {FLAG[b]}), or pass --allow-overlap to "
                                     "accept optimistic numbers")


def _is_cut(src: RoleSource) -> bool:
    return "cut" in src.how or "way split" in src.how


def _open(spec: str, split: str, meta: Any, role: str) -> Dataset:
    from edgerep.data import open_dataset

    ds = open_dataset(spec, split=split, meta=meta)
    if spec == "synthetic":
        from edgerep.data.synthetic import SyntheticDataset

        ds = SyntheticDataset(ds.pre, n=len(ds), seed=ROLES.index(role))
    return ds


def _overlaps(sets: dict[str, Dataset], sources: dict[str, RoleSource], allow: bool,
              carved: set[str] = frozenset(), pairs: list[tuple[str, str]] | None = None) -> dict[str, int]:
    """Shared samples (same decoded pixels) between every two roles (or the role ``pairs`` given), whatever
    container or split each came from, except two parts of one deduplicated cut (disjoint by construction);
    refused unless ``allow``."""
    out: dict[str, int] = {}
    digests: dict[str, set[str]] = {}
    for a, b in pairs if pairs is not None else [(a, b) for i, a in enumerate(ROLES) for b in ROLES[i + 1:]]:
        sa, sb = sources[a], sources[b]
        if a in carved and b in carved:
            continue  # parts of one deduplicated split: disjoint by construction
        if "synthetic" in (sa.spec, sb.spec):
            continue
        for r in (a, b):
            if r not in digests:
                digests[r] = set(_digests(sets[r]))
        shared = len(digests[a] & digests[b])
        if shared:
            if not allow:
                raise DataError(f"the {a} set ({sa.spec}, {sa.how}) and the {b} set ({sb.spec}, {sb.how}) share "
                                f"{shared} samples (same decoded pixels)",
                                hint=f"name disjoint sets ({FLAG[a]}, {FLAG[b]}), or pass "
                                "--allow-overlap to accept optimistic numbers")
            out[f"{a}/{b}"] = shared
    return out


def _digests(ds: Dataset) -> list[str]:
    """``ds.sample_digests()``, reusing a parent's digests already computed (a deduplicated source)."""
    if getattr(ds, "_digests", None) is not None:
        return ds._digests
    if isinstance(ds, Subset):
        parent = _digests(ds.parent)
        return [parent[i] for i in ds.indices]
    return ds.sample_digests()
