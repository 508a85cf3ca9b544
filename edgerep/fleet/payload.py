"""What travels to the devices: a bundle's ONNX / QDQ files and calibration cache as bytes, and the
test split as shards of preprocessed arrays with the unfolded model's outputs beside them.

Never the checkpoint: the folded and unfolded torch models stay on the CI side, where the reference
is measured once. Files, settings and shards travel in the fleet's data-only format
(``edgerep.fleet.wire``); Ray still pickles the task call itself, so a node trusts the CI side that
sends work, while the CI side reads a node's result as data only, never unpickled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgerep.errors import EdgerepError

SHIPPED_SUFFIXES = (".onnx", ".json")  # ONNX files and the calibration cache (JSON ranges)


@dataclass
class Bundle:
    """A bundle written by `edgerep deploy`, as the fleet reads it."""

    path: Path
    manifest: dict
    report: dict
    fp32: str | None  # file names relative to the bundle
    int8: dict[str, str] = field(default_factory=dict)  # QDQ policy -> file
    calibration: str | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def target(self) -> str | None:
        """The target profile the bundle was deployed for."""
        return (self.manifest.get("target_profile") or {}).get("name") or (self.report.get("target") or {}).get("name")

    @property
    def session_config(self) -> dict | None:
        """onnxruntime session settings of the bundle's CPU INT8 policy."""
        return (self.manifest.get("cpu_policy") or {}).get("session_config") or None

    def shipped(self) -> list[str]:
        """The files a node receives: FP32 ONNX, every QDQ file, the calibration cache."""
        names = [n for n in (self.fp32, *self.int8.values(), self.calibration) if n]
        for n in names:
            if not n.endswith(SHIPPED_SUFFIXES):  # a bundle edited by hand: never ship anything else
                raise EdgerepError(f"{self.path / n}: only ONNX and JSON files travel to fleet nodes")
        return names


def read_bundle(path: str | Path) -> Bundle:
    """The bundle at ``path``; ``EdgerepError`` naming the file when it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise EdgerepError(f"{p}: not a bundle directory", hint="make one with `edgerep deploy CKPT --out DIR`")
    try:
        manifest = json.loads((p / "manifest.json").read_text())
    except FileNotFoundError:
        raise EdgerepError(f"{p}: not a bundle (no manifest.json)") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise EdgerepError(f"{p / 'manifest.json'}: not JSON ({e})") from None
    report_path = p / "report.json"
    report = {}
    if report_path.is_file():  # any known version, through the one migration
        from edgerep.report.migrate import migrate
        from edgerep.report.models import dump

        try:
            report = dump(migrate(json.loads(report_path.read_text()), report_path))
        except (ValueError, UnicodeDecodeError) as e:
            raise EdgerepError(f"{report_path}: not JSON ({e})") from None
    files = manifest.get("files") or {}
    int8 = {k[len("int8_onnx_"):]: v for k, v in files.items() if k.startswith("int8_onnx_")}
    b = Bundle(path=p, manifest=manifest, report=report, fp32=files.get("fp32_onnx"), int8=int8,
               calibration=files.get("calibration_cache"))
    if not b.fp32:
        raise EdgerepError(f"{p}/manifest.json: names no fp32_onnx file")
    for n in b.shipped():
        if not (p / n).is_file():
            raise EdgerepError(f"{p / n}: named in the manifest but missing")
    return b


def payload(bundle: Bundle) -> dict[str, bytes]:
    """``{relative name: bytes}`` of every shipped file (put once in Ray's object store)."""
    return {n: (bundle.path / n).read_bytes() for n in bundle.shipped()}


def safe_relative(name: str) -> Path:
    """A received file name as a relative path that cannot leave the node's work folder."""
    p = Path(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise EdgerepError(f"fleet payload: refusing file name {name!r}")
    return p


# ----------------------------------------------------------------------------------------------- reference + data
@dataclass
class Reference:
    """The unfolded FP32 model on the CI side (or, without its checkpoint, the bundle's folded one)."""

    model: Any
    meta: Any
    source: str  # what the reference is, in words


def load_reference(bundle: Bundle) -> Reference:
    """The unfolded checkpoint the manifest names (``edgerep.bundle_inputs.find_checkpoint``: beside the
    bundle, at its absolute path, as given; its sha256 checked), else the folded one.

    The metadata (preprocessing as deployed) comes from the bundle's folded checkpoint when it has one.
    """
    from edgerep.bundle_inputs import find_checkpoint
    from edgerep.checkpoint import load_checkpoint

    inputs = bundle.manifest.get("inputs") or {}
    load_kw = (bundle.manifest.get("settings") or {}).get("load") or {}
    load_kw = {k: v for k, v in load_kw.items() if v is not None}
    folded_name = (bundle.manifest.get("files") or {}).get("folded_checkpoint")
    folded = load_checkpoint(bundle.path / folded_name) if folded_name and (bundle.path / folded_name).is_file() \
        else None
    ckpt = inputs.get("checkpoint")
    found = find_checkpoint(bundle.path, bundle.manifest)
    if found.path is not None:
        loaded = load_checkpoint(found.path, **load_kw)
        return Reference(loaded.model.eval(), folded.meta if folded else loaded.meta, found.note)
    if folded is None:
        raise EdgerepError(f"{bundle.path}: neither the unfolded checkpoint ({ckpt}) nor a folded one is there",
                           hint="run fleet deploy where the checkpoint named in manifest.json is reachable")
    return Reference(folded.model.eval(), folded.meta, f"folded checkpoint {bundle.path / folded_name} "
                                                       f"({found.note}; the fold is verified exact)")


def test_set(bundle: Bundle, meta: Any, data: str | None = None) -> tuple[Any, str, int | None, bool | None]:
    """The test set of the bundle's deploy, made the way deploy made it (``edgerep.pipeline`` with the
    manifest's settings), or the test role of ``data`` when given.

    Returns (dataset, its spec, the sample cap deploy used, whether its fingerprint is the manifest's).
    """
    from dataclasses import fields

    from edgerep.pipeline import DeployOptions, resolve_calibration, resolve_data

    settings = dict(bundle.manifest.get("settings") or {})
    known = {f.name for f in fields(DeployOptions)}
    kw = {k: v for k, v in settings.items() if k in known}
    kw["checkpoint"] = Path(str(kw.get("checkpoint") or bundle.path))
    if data is not None:
        kw["eval_data"] = data
    opts = DeployOptions(**kw)
    splits = resolve_data(opts, meta, resolve_calibration(opts, meta))
    test = splits.test
    fp = (bundle.manifest.get("inputs") or {}).get("evaluation_fingerprint")
    same = (test.fingerprint() == fp) if fp and data is None else None
    return test, splits.sources["test"].spec, opts.eval_samples, same


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous [start, stop) ranges covering ``range(n)``, sizes differing by at most one."""
    shards = max(1, min(int(shards), max(n, 1)))
    edges = np.linspace(0, n, shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def make_shards(dataset: Any, reference: Any, shards: int, limit: int | None = None,
                batch: int = 64) -> Iterator[dict[str, Any]]:
    """Yield shards ``{"index", "start", "stop", "x", "y", "ref"}`` of the test split, one at a time (``y``: the
    rows' targets as a list, None without labels).

    ``ref`` holds the reference model's outputs on the same rows (a callable on numpy batches),
    so a node scores fidelity without the reference model.
    """
    n = len(dataset) if limit is None else min(len(dataset), int(limit))
    bounds = shard_bounds(n, shards)
    xs: list[np.ndarray] = []
    ys: list[Any] = []  # one target per row, as the batches give them (a label; a detector's dict of boxes)
    have = 0
    labelled = True
    it = dataset.batches(batch, limit=n)
    for i, (a, b) in enumerate(bounds):
        while have < b - a:
            x, y = next(it)
            xs.append(x)
            labelled = labelled and y is not None
            ys.extend(list(y) if y is not None else [None] * len(x))
            have += len(x)
        x_all = np.concatenate(xs)
        k = b - a
        x, y = np.ascontiguousarray(x_all[:k]), ys[:k]
        xs, ys, have = [x_all[k:]], ys[k:], len(x_all) - k
        ref = np.concatenate([reference(x[j:j + batch]) for j in range(0, k, batch)]) if k else np.zeros((0,))
        yield {"index": i, "start": a, "stop": b, "x": x, "y": y if labelled and dataset.has_labels else None,
               "ref": np.asarray(ref, np.float32)}
