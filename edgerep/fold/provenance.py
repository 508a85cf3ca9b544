"""Provenance of a fold: for each conv / linear of the folded model, the train-time modules and
branches it came from and which folder (the blocks' own ``to_deploy`` or the traced-graph folder)
produced it.

``build_provenance`` reads the block folder's record ({block path: class}) and the graph
folder's report (each folded region's ``sources`` in forward order and the ``module`` it became);
``FoldResult`` is what every command's fold returns. ``edgerep check`` turns a row back into
branch kernels (``edgerep.quant.attribution.layers_from_fold``); ``fold --json`` shows the table.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

#: which folder produced a layer
FOLDERS = ("block", "graph", "block+graph", "none")


@dataclass
class LayerProvenance:
    """Where one folded conv / linear came from."""

    layer: str  # its path in the folded module
    name: str  # the train-time name: block path, the region's common module, or the layer's own path
    folder: str  # one of FOLDERS
    kind: str  # "reparam block", "3-branch sum", "conv3x3+bn", "conv", "linear", ...
    block: str  # class name of the train-time module ``name`` points at ("" when none)
    sources: list[str] = field(default_factory=list)  # train-time modules (and ops) in forward order
    branches: dict[str, list[str]] = field(default_factory=dict)  # branch -> its train-time modules

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FoldResult:
    """The one fold result every command uses: folded module, provenance, graph report, verification."""

    module: nn.Module
    provenance: list[LayerProvenance]
    graph: dict | None = None
    verify: Any = None  # edgerep.fold.model.FoldReport once verified
    seconds: float = 0.0

    def layer(self, path: str) -> LayerProvenance | None:
        """The row of the folded layer at ``path`` (None when it is not a conv / linear)."""
        return next((r for r in self.provenance if r.layer == path), None)

    def counts(self) -> dict[str, int]:
        """How many folded layers each folder produced."""
        return {f: sum(1 for r in self.provenance if r.folder == f) for f in FOLDERS}

    def to_dict(self) -> dict:
        return {"provenance": [r.to_dict() for r in self.provenance], "folders": self.counts(),
                "fold_seconds": self.seconds, "graph": self.graph,
                "verify": self.verify.to_dict() if self.verify is not None else None}


def _module_at(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path) if path else model
    except (AttributeError, ValueError):
        return None


def _block_of(path: str, blocks: dict[str, str]) -> str | None:
    """The longest recorded block path that is ``path`` or contains it."""
    hits = [b for b in blocks if b == "" or path == b or path.startswith(b + ".")]
    return max(hits, key=len) if hits else None


def _common_prefix(paths: list[str]) -> str:
    parts = [p.split(".") for p in paths]
    common: list[str] = []
    for level in zip(*parts):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    if parts and len(common) == min(len(p) for p in parts):  # one path is the prefix itself: go one up
        common = common[:-1]
    return ".".join(common)


def _kind(m: nn.Module) -> str:
    return "linear" if isinstance(m, nn.Linear) else "conv"


def _region_row(layer: str, region: dict, model: nn.Module, blocks: dict[str, str]) -> LayerProvenance:
    mods = [s for s in region.get("sources") or region.get("where") or []
            if ":" not in s and _module_at(model, s) is not None]
    via_blocks = [b for b in (_block_of(s, blocks) for s in mods) if b is not None]
    sources: list[str] = []
    for s in region.get("sources") or region.get("where") or []:
        b = _block_of(s, blocks)
        s = b if b is not None else s
        if s not in sources:
            sources.append(s)
    weighted = [s for s in mods if isinstance(_module_at(model, s), (nn.Conv2d, nn.Linear))]
    if len(weighted) == 1 and not via_blocks:
        name = weighted[0]
    else:
        name = _common_prefix(mods) if len(mods) > 1 else ""
        # no common parent (a user's net written flat): the region's first conv, as the user named it
        name = name or (weighted[0] if weighted else layer.rsplit(".reparam", 1)[0])
    branches: dict[str, list[str]] = {}
    if not via_blocks:
        for s in mods:
            rel = s[len(name) + 1:] if name and s.startswith(name + ".") else s
            branches.setdefault(rel.split(".")[0], []).append(s)
    if len(branches) < 2:
        branches = {}
    owner = _module_at(model, name)
    return LayerProvenance(layer, name, "block+graph" if via_blocks else "graph", region.get("kind", ""),
                           type(owner).__name__ if owner is not None else "", sources, branches)


def build_provenance(model: nn.Module, folded: nn.Module, blocks: dict[str, str],
                     graph_report: dict | None) -> list[LayerProvenance]:
    """One row per conv / linear of ``folded`` (forward-definition order)."""
    regions = {r["module"]: r for r in (graph_report or {}).get("folded_regions", []) if r.get("module")}
    layers = [(p, m) for p, m in folded.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    per_block: dict[str, int] = {}
    for p, _ in layers:
        b = _block_of(p, blocks)
        if p not in regions and b is not None:
            per_block[b] = per_block.get(b, 0) + 1
    rows: list[LayerProvenance] = []
    for path, m in layers:
        if path in regions:
            rows.append(_region_row(path, regions[path], model, blocks))
            continue
        b = _block_of(path, blocks)
        if b is not None:
            name = (b or "<model>") if per_block.get(b) == 1 else path
            rows.append(LayerProvenance(path, name, "block", "reparam block", blocks[b], [b or "<model>"]))
            continue
        owner = _module_at(model, path)
        rows.append(LayerProvenance(path, path, "none", _kind(m), type(owner or m).__name__, [path]))
    return rows


__all__ = ["LayerProvenance", "FoldResult", "build_provenance", "FOLDERS"]
