"""Where the layers of a DLA plan ran: read from TensorRT's engine inspector (JSON, DETAILED verbosity).

TensorRT documents DLA INT8 through implicit calibration; INT8 from explicit Q/DQ on DLA is
UNCONFIRMED for edgerep's TensorRT versions (shared/TENSORRT.md), so a DLA plan is inspected after it
is built: DLA subgraphs show up as ``{ForeignNode[first...last]}`` layers, with ``... to nvm`` /
``... from nvm`` / ``copy finish`` transfer layers around them (NVIDIA/TensorRT#3143); every other
compute layer ran on the GPU (a GPU fallback). UNCONFIRMED: the exact LayerType TensorRT gives the
DLA nodes; they are recognized by name, and also by a LayerType mentioning DLA or Foreign.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# layers that move or re-lay data, not compute that "fell back"
_PLUMBING_TYPES = {"reformat", "noop", "constant"}
_PLUMBING_WORDS = (" to nvm", " from nvm", "copy finish", "reformatting copynode")


@dataclass
class DlaPlacement:
    """How many DLA subgraphs a plan has, and the compute layers that run on the GPU instead."""

    dla_subgraphs: list[str] = field(default_factory=list)
    gpu_layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for a report row."""
        if not self.gpu_layers:
            return f"all compute on DLA ({len(self.dla_subgraphs)} DLA subgraph(s))"
        shown = ", ".join(self.gpu_layers[:5]) + (f" (+{len(self.gpu_layers) - 5} more)" if len(self.gpu_layers) > 5 else "")
        return f"{len(self.gpu_layers)} layer(s) fell back to the GPU: {shown}; {len(self.dla_subgraphs)} DLA subgraph(s)"


def _is_dla(name: str, layer_type: str) -> bool:
    t = layer_type.lower()
    return name.startswith("{ForeignNode[") or "dla" in t or "foreign" in t


def dla_placement(engine_information: str) -> DlaPlacement:
    """Parse ``EngineInspector.get_engine_information(LayerInformationFormat.JSON)``.

    ``{"Layers": [{"Name": ..., "LayerType": ...}, ...]}`` (DETAILED) or ``{"Layers": ["name", ...]}``
    (names only).
    """
    data = json.loads(engine_information)
    layers = data.get("Layers", []) if isinstance(data, dict) else []
    out = DlaPlacement()
    for layer in layers:
        name, ltype = (layer, "") if isinstance(layer, str) else (str(layer.get("Name", "")),
                                                                   str(layer.get("LayerType", "")))
        if _is_dla(name, ltype):
            out.dla_subgraphs.append(name)
        elif ltype.lower() in _PLUMBING_TYPES or any(w in name.lower() for w in _PLUMBING_WORDS):
            continue
        else:
            out.gpu_layers.append(name)
    return out
