"""Official code bases' state_dict key layouts, mapped onto edgerep's blocks: one function each.

Each mapping renames block-internal key segments only; edgerep's models keep the official
top-level names (``stage0`` .. ``stage4``, ``linear``), so a renamed state_dict loads as is.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

StateDict = dict[str, torch.Tensor]

#: segments that only official layouts use (an unmapped one points at a layout problem)
OFFICIAL_MARKERS = ("rbr_dense", "rbr_1x1", "rbr_identity", "rbr_conv", "rbr_scale", "rbr_skip",
                    "square_conv", "ver_conv", "hor_conv", "dbb_origin", "dbb_1x1", "dbb_avg")
#: segments of deploy-form (already folded) official checkpoints
FOLDED_MARKERS = ("rbr_reparam", "reparam_conv", "fused_conv", "dbb_reparam")


def _rename_segments(sd: Mapping[str, torch.Tensor], table: Mapping[str, str]) -> StateDict:
    out: StateDict = {}
    for k, v in sd.items():
        out[".".join(table.get(p, p) for p in k.split("."))] = v
    return out


def _has_segment(sd: Mapping[str, torch.Tensor], names: tuple[str, ...]) -> bool:
    return any(p in names for k in sd for p in k.split("."))


def map_repvgg(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """DingXiaoH/RepVGG (and YOLOv6 QARepVGG): ``rbr_dense.{conv,bn}``, ``rbr_1x1.{conv,bn}``,
    ``rbr_identity`` (a BN) -> ``dense``, ``one_by_one``, ``identity``."""
    return _rename_segments(sd, {"rbr_dense": "dense", "rbr_1x1": "one_by_one", "rbr_identity": "identity"})


def map_mobileone(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """apple/ml-mobileone: ``rbr_conv.{i}.{conv,bn}``, ``rbr_scale.{conv,bn}``, ``rbr_skip``.
    edgerep's ``MobileOneStage`` and ``models.mobileone`` keep these names and the official
    stage layout (depthwise and pointwise units alternating), so nothing is renamed."""
    return dict(sd)


def map_acnet(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """DingXiaoH/ACNet ``ACBlock``: ``square_{conv,bn}``, ``ver_{conv,bn}``, ``hor_{conv,bn}`` - the
    names of edgerep's ``ACBlock``, so nothing is renamed (an official ``last_bn`` stays
    unexpected: edgerep's ACBlock has none, and the key check says so)."""
    return dict(sd)


def map_dbb(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """DingXiaoH/DiverseBranchBlock: ``dbb_origin``, ``dbb_1x1``, ``dbb_avg.{conv,bn.bn,avgbn}``,
    ``dbb_1x1_kxk.{idconv1,conv1,bn1.bn,conv2,bn2}`` - the names of edgerep's
    ``DiverseBranchBlock`` (whose identity tensor is not persistent, like the official one)."""
    return dict(sd)


def map_folded(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """Deploy-form checkpoints: ``rbr_reparam`` / ``reparam_conv`` / ``fused_conv`` / ``dbb_reparam``
    (one conv per block) -> edgerep's folded block ``FoldedConv.conv``."""
    return _rename_segments(sd, {m: "conv" for m in FOLDED_MARKERS})


#: layout name -> (segments that identify it, mapping)
LAYOUTS: dict[str, tuple[tuple[str, ...], Callable[[Mapping[str, torch.Tensor]], StateDict]]] = {
    "repvgg": (("rbr_dense", "rbr_1x1", "rbr_identity"), map_repvgg),
    "mobileone": (("rbr_conv", "rbr_scale", "rbr_skip"), map_mobileone),
    "acnet": (("square_conv", "ver_conv", "hor_conv"), map_acnet),
    "dbb": (("dbb_origin", "dbb_1x1", "dbb_avg", "dbb_1x1_kxk"), map_dbb),
}


def detect_layout(sd: Mapping[str, torch.Tensor]) -> str | None:
    """The official layout whose marker segments occur in the keys, or None for edgerep's own."""
    for name, (markers, _) in LAYOUTS.items():
        if _has_segment(sd, markers):
            return name
    return None


def to_edgerep_layout(sd: Mapping[str, torch.Tensor]) -> tuple[StateDict, str | None, bool]:
    """(renamed state_dict, layout name or None, whether it is in folded deploy form)."""
    folded = _has_segment(sd, FOLDED_MARKERS)
    layout = detect_layout(sd)
    out = dict(sd)
    if layout is not None:
        out = LAYOUTS[layout][1](out)
    if folded:
        out = map_folded(out)
        layout = layout or "deploy"
    return out, layout, folded
