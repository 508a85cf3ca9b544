"""Which folded layer comes from which train-time module, and which train-time branch puts the
outliers into a folded kernel.

``fold_for_check`` folds a train-time model the way ``edgerep check`` measures it: every
``ReparamBlock`` becomes its ``to_deploy()`` form (the branches kept aside as named kernels),
every Conv+BN / Linear+BN pair inside an ``nn.Sequential`` becomes one layer, and every
remaining conv / linear is a layer of its own. ``attribute`` then splits each outlier output
channel of a folded kernel into the train-time branches' contributions, in words.
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from edgerep.blocks.base import FoldedConv, ReparamBlock
from edgerep.errors import FoldError
from edgerep.fold.kernel import (
    ConvKernel,
    add_kernels,
    bn_as_kernel,
    bn_scale_shift,
    compose,
    fuse_bn,
    fuse_linear_bn,
    pad_kernel,
    regroup,
    to_dense,
)
from edgerep.quant.thresholds import DOMINANT_SHARE, MAX_OUTLIER_CHANNELS, OUTLIER_CHANNEL_RATIO
from edgerep.quant.weight_stats import channel_absmax

_BN = nn.modules.batchnorm._BatchNorm

#: branch key -> attribute names where block families keep that branch (first hit wins)
BRANCH_MODULES: dict[str, tuple[str, ...]] = {
    "dense": ("dense", "rbr_dense", "dbb_origin"),
    "1x1": ("one_by_one", "rbr_1x1", "dbb_1x1", "rbr_scale"),
    "identity": ("identity", "rbr_identity", "rbr_skip"),
    "square": ("square_bn",),
    "hor": ("hor_bn",),
    "ver": ("ver_bn",),
    "avgpool": ("dbb_avg",),
    "1x1-kxk": ("dbb_1x1_kxk",),
}


@dataclass
class FoldedLayer:
    """One quantizable layer of the folded model and where it came from."""

    name: str  # module path in the train-time model (".sub" added when a block folds to several layers)
    kind: str  # "reparam block", "conv+bn", "conv", "linear+bn", "linear"
    block: str  # class name of the train-time module
    module: nn.Module = field(repr=False)  # the nn.Conv2d / nn.Linear inside the folded model
    branches: dict[str, ConvKernel] | None = field(default=None, repr=False)
    branch_bns: dict[str, _BN] = field(default_factory=dict, repr=False)
    note: str = ""


def find_branch_bn(block: nn.Module, key: str, out_channels: int) -> _BN | None:
    """The BN that scales branch ``key`` of ``block`` (its last BN), or None when there is none.

    Looks under the family's module names for the key (``BRANCH_MODULES``), the key itself and
    ``rbr_<key>`` (MobileOne's ``conv.0`` is ``rbr_conv.0``); a dotted key (``dbb.1x1``) is
    looked up inside its prefix module."""
    names = BRANCH_MODULES.get(key, ()) + (key, f"rbr_{key}")
    for name in names:
        try:
            m = block.get_submodule(name)
        except (AttributeError, ValueError):
            continue
        bns = [b for b in m.modules() if isinstance(b, _BN) and b.num_features == out_channels]
        if bns:
            return bns[-1]
        return None
    if "." in key:
        prefix, last = key.rsplit(".", 1)
        try:
            return find_branch_bn(block.get_submodule(prefix), last, out_channels)
        except (AttributeError, ValueError):
            return None
    return None


def _as_kernel4(weight: Tensor, bias: Tensor | None) -> ConvKernel:
    """A linear layer's (out, in) weight as a 1x1 kernel, so attribution treats both alike."""
    w = weight.detach().to(torch.float64)
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().to(torch.float64)
    return ConvKernel(w.reshape(w.shape[0], -1, 1, 1), b)


def _match_stages(bk: dict, subs: list[tuple[str, nn.Module]]) -> dict[str, tuple[str, dict[str, ConvKernel]]]:
    """Blocks folding to several layers (MobileOne) give ``{stage: {branch: kernel}}``; pair the
    stages with the deploy module's layers by name, else by order. Values: (stage, branches)."""
    out: dict[str, tuple[str, dict[str, ConvKernel]]] = {}
    keys = list(bk)
    for sub_name, _ in subs:
        hit = next((k for k in keys if sub_name == k or sub_name.startswith(k + ".") or sub_name.endswith("." + k)
                    or k in sub_name.split(".")), None)
        if hit is not None:
            out[sub_name] = (hit, bk[hit])
    if not out and len(keys) == len(subs):
        out = {s: (k, bk[k]) for (s, _), k in zip(subs, keys)}
    return out


def fold_for_check(model: nn.Module) -> tuple[nn.Module, list[FoldedLayer]]:
    """A folded copy of ``model`` (eval mode) and its quantizable layers in forward-definition order.

    The input model is untouched. Raises ``FoldError`` naming the module when a block cannot fold.
    """
    root = copy.deepcopy(model).eval()
    layers: list[FoldedLayer] = []
    holder = nn.Module()
    holder.add_module("root", root)
    _walk(holder, "", layers, top=True)
    folded = holder.root.eval()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded, layers


def _path(prefix: str, name: str, top: bool) -> str:
    if top:
        return "<model>"
    return f"{prefix}.{name}" if prefix else name


def _walk(module: nn.Module, prefix: str, layers: list[FoldedLayer], top: bool = False) -> None:
    children = list(module.named_children())
    skip: set[str] = set()
    for i, (name, child) in enumerate(children):
        if name in skip:
            continue
        path = _path(prefix, name, top)
        child_prefix = "" if top else path
        if hasattr(child, "to_deploy") and hasattr(child, "branch_kernels"):
            _fold_block(module, name, child, path, layers)
            continue
        nxt = children[i + 1][1] if i + 1 < len(children) else None
        if isinstance(module, nn.Sequential) and isinstance(child, (nn.Conv2d, nn.Linear)) and isinstance(nxt, _BN):
            if _fuse_pair(module, name, child, children[i + 1][0], nxt, path, layers):
                skip.add(children[i + 1][0])
                continue
        if isinstance(child, nn.Conv2d):
            k = ConvKernel.from_conv(child)
            layers.append(FoldedLayer(path, "conv", type(child).__name__, child, {"conv": k}))
        elif isinstance(child, nn.Linear):
            k = _as_kernel4(child.weight, child.bias)
            layers.append(FoldedLayer(path, "linear", type(child).__name__, child, {"linear": k}))
        else:
            _walk(child, child_prefix, layers)


def _fuse_pair(parent: nn.Module, name: str, layer: nn.Module, bn_name: str, bn: _BN, path: str,
               layers: list[FoldedLayer]) -> bool:
    """Conv -> BN (or Linear -> BN1d) adjacent in a Sequential: one folded layer."""
    if getattr(layer, "out_channels", getattr(layer, "out_features", None)) != bn.num_features:
        return False
    if isinstance(layer, nn.Conv2d):
        k = fuse_bn(ConvKernel.from_conv(layer), bn)
        new: nn.Module = k.to_conv2d(dtype=layer.weight.dtype, device=layer.weight.device)
        kind, bname = "conv+bn", "conv+BN"
    else:
        w, b = fuse_linear_bn(layer.weight, layer.bias, bn)
        new = nn.Linear(layer.in_features, layer.out_features, bias=True).to(layer.weight.device)
        with torch.no_grad():
            new.weight.copy_(w.to(layer.weight.dtype))
            new.bias.copy_(b.to(layer.weight.dtype))
        k = _as_kernel4(w, b)
        kind, bname = "linear+bn", "linear+BN"
    new.eval()
    setattr(parent, name, new)
    setattr(parent, bn_name, nn.Identity())
    layers.append(FoldedLayer(path, kind, f"{type(layer).__name__}+{type(bn).__name__}", new, {bname: k},
                              {bname: bn}))
    return True


def _fold_block(parent: nn.Module, name: str, block: nn.Module, path: str, layers: list[FoldedLayer]) -> None:
    note = ""
    try:
        bk = block.branch_kernels()
    except FoldError as e:
        raise e.at(path) from None
    except NotImplementedError:
        bk, note = None, "no branch information (the block does not list its branches)"
    try:
        if (isinstance(block, ReparamBlock) and type(block).to_deploy is ReparamBlock.to_deploy
                and isinstance(bk, dict) and bk and all(isinstance(v, ConvKernel) for v in bk.values())):
            # the base class's fold, without computing the branch kernels a second time
            w = next(block.parameters())
            deploy = FoldedConv(add_kernels(*bk.values()).to_conv2d(dtype=w.dtype, device=w.device),
                                getattr(block, "act", nn.Identity()))
        else:
            deploy = block.to_deploy()
    except FoldError as e:
        raise e.at(path) from None
    deploy.eval()
    subs = [(n, m) for n, m in deploy.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    per_sub: dict[str, tuple[nn.Module, dict[str, ConvKernel]]] = {}
    if isinstance(bk, dict) and bk and all(isinstance(v, ConvKernel) for v in bk.values()):
        if len(subs) == 1:
            per_sub = {subs[0][0]: (block, bk)}
        else:
            note = "no branch information (the block folds to several layers but lists one set of branches)"
    elif isinstance(bk, dict) and bk and all(isinstance(v, dict) for v in bk.values()):
        for sub_name, (stage, kernels) in _match_stages(bk, subs).items():
            try:
                owner = block.get_submodule(stage)
            except (AttributeError, ValueError):
                owner = block
            per_sub[sub_name] = (owner, kernels)
    for sub_name, m in subs:
        lname = path if len(subs) == 1 else f"{path}.{sub_name}"
        owner, branches = per_sub.get(sub_name, (block, None))
        out_ch = m.weight.shape[0]
        bns = {}
        if branches:
            for key in branches:
                bn = find_branch_bn(owner, key, out_ch)
                if bn is not None:
                    bns[key] = bn
            if len(branches) == 1 and not bns:  # a single conv+BN block: its (only) BN
                only = [b for b in owner.modules() if isinstance(b, _BN) and b.num_features == out_ch]
                if len(only) == 1:
                    bns[next(iter(branches))] = only[0]
        layers.append(FoldedLayer(lname, "reparam block", type(block).__name__, m, branches, bns,
                                  note if branches is None else ""))
    setattr(parent, name, deploy)


# ---------------------------------------------------------------------------------------------
# layers of the shared fold (what deploy ships), from its provenance
# ---------------------------------------------------------------------------------------------
#: train-time branch module name -> the branch key edgerep's blocks use (official names included)
_BRANCH_KEYS = {name: key for key, names in BRANCH_MODULES.items() for name in names}


def _chain_kernel(mods: list[nn.Module]) -> tuple[ConvKernel | None, _BN | None]:
    """One branch (conv -> BN, or a lone BN) as a kernel with the kernel algebra; None if it holds other ops."""
    k: ConvKernel | None = None
    last_bn = None
    for m in mods:
        if isinstance(m, nn.Conv2d):
            c = ConvKernel.from_conv(m)
            k = c if k is None else compose(k, c)
        elif isinstance(m, nn.modules.batchnorm.BatchNorm2d):
            k = bn_as_kernel(m) if k is None else fuse_bn(k, m)
            last_bn = m
        elif not isinstance(m, nn.Identity):
            return None, None
    return k, last_bn


def _region_layer(model: nn.Module, row, module: nn.Module) -> FoldedLayer:
    """A graph-folded region: its branches rebuilt from the train-time modules provenance names."""
    groups = row.branches or ({"conv+BN" if isinstance(module, nn.Conv2d) else "linear+BN": [
        s for s in row.sources if ":" not in s]})
    branches: dict[str, ConvKernel] = {}
    bns: dict[str, _BN] = {}
    for key, paths in groups.items():
        try:
            mods = [model.get_submodule(p) for p in paths]
        except (AttributeError, ValueError):
            mods = []
        k, bn = _chain_kernel(mods) if mods and isinstance(module, nn.Conv2d) else (None, None)
        if k is None:
            why = (f"branch '{key}' of the {row.kind} is not conv / BN modules only" if mods else
                   f"the {row.kind} was made of functional ops ({', '.join(row.sources[:3])}...), not modules")
            return FoldedLayer(row.name, row.kind, row.block, module, None, {}, f"no branch information ({why})")
        key = _BRANCH_KEYS.get(key, key)
        branches[key] = k
        if bn is not None:
            bns[key] = bn
    if not row.branches:  # a conv -> BN chain: one layer, as edgerep always named it
        kind = "conv+bn" if bns else "conv"
        return FoldedLayer(row.name, kind, row.block, module, branches, bns)
    return FoldedLayer(row.name, "reparam block", row.block, module, branches, bns)


def layers_from_fold(model: nn.Module, fold) -> list[FoldedLayer]:
    """The quantizable layers of ``fold`` (an ``edgerep.fold.provenance.FoldResult`` of ``model``),
    each with the train-time branches its provenance names: blocks' ``branch_kernels()``, graph
    regions' branches rebuilt from the modules they summed (official RepVGG names included)."""
    layers: list[FoldedLayer] = []
    rows_by_block: dict[str, list] = {}
    for row in fold.provenance:
        if row.folder == "block":
            rows_by_block.setdefault(row.sources[0], []).append(row)
    from_blocks: dict[str, FoldedLayer] = {}
    for bpath, rows in rows_by_block.items():
        block = model if bpath == "<model>" else model.get_submodule(bpath)
        if not hasattr(block, "branch_kernels"):
            continue
        found: list[FoldedLayer] = []
        _fold_block(nn.Module(), "b", block, bpath, found)
        for row, fl in zip(rows, found):
            from_blocks[row.layer] = fl
    for row in fold.provenance:
        module = fold.module.get_submodule(row.layer)
        if row.layer in from_blocks:
            fl = from_blocks[row.layer]
            layers.append(FoldedLayer(row.name, fl.kind, fl.block, module, fl.branches, fl.branch_bns, fl.note))
        elif row.folder == "graph":
            layers.append(_region_layer(model, row, module))
        elif row.folder == "none":
            kind = _kind_of(module)
            k = ConvKernel.from_conv(module) if kind == "conv" else _as_kernel4(module.weight, module.bias)
            layers.append(FoldedLayer(row.name, kind, row.block, module, {kind: k}))
        else:
            layers.append(FoldedLayer(row.name, row.kind, row.block, module, None, {},
                                      f"no branch information ({row.folder} fold of {', '.join(row.sources)})"))
    return layers


def _kind_of(module: nn.Module) -> str:
    return "conv" if isinstance(module, nn.Conv2d) else "linear"


# ---------------------------------------------------------------------------------------------
# attribution
# ---------------------------------------------------------------------------------------------
@dataclass
class BranchShare:
    """One branch's part in one output channel of the folded kernel."""

    branch: str  # the block's branch key, e.g. "identity"
    words: str  # e.g. "identity-BN"
    value: float  # the branch's weight at the folded channel's peak tap
    share: float  # value / folded peak value (the shares of all branches sum to 1)
    peak: float  # max |w| of this branch in this channel
    bn: dict | None = None  # gamma, running_var, sigma, gamma/sigma (and its median over channels)


@dataclass
class ChannelAttribution:
    channel: int
    peak: float  # max |w| of the folded channel
    ratio_to_median: float  # peak / median channel peak of the layer
    tap: list[int]  # (in_channel, kh, kw) of the peak
    branches: list[BranchShare]
    dominant: str  # branch key with the largest |share|
    sentence: str


@dataclass
class LayerAttribution:
    """Branch attribution of one folded layer."""

    available: bool
    note: str = ""
    branches: dict[str, str] = field(default_factory=dict)  # key -> words
    outlier_channels: int = 0  # channels over OUTLIER_CHANNEL_RATIO x median
    channels: list[ChannelAttribution] = field(default_factory=list)
    dominant_branch: str | None = None  # branch that dominates the outlier channels (None: none / no outliers)
    dominant_share: float = 0.0
    summary: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def describe_branch(key: str, kernel: ConvKernel, has_bn: bool) -> str:
    """A branch key in words: ``identity`` -> "identity-BN", ``dense`` -> "dense 3x3 conv+BN", ..."""
    kh, kw = kernel.kernel_size
    bn = "+BN" if has_bn else ""
    k = key.lower()
    if k in ("identity", "id", "skip", "rbr_identity", "rbr_skip"):
        return "identity-BN" if has_bn else "identity"
    if k in ("dense", "square", "rbr_dense", "origin"):
        return f"dense {kh}x{kw} conv{bn}"
    if k in ("1x1", "one_by_one", "rbr_1x1", "scale", "rbr_scale"):
        return f"1x1 conv{bn}"
    if k == "hor":
        return f"horizontal {kh}x{kw} conv{bn}"
    if k == "ver":
        return f"vertical {kh}x{kw} conv{bn}"
    if k in ("avgpool", "avg"):
        return "average-pool branch (1x1 conv+BN -> avg pool+BN)"
    if k == "1x1-kxk":
        return "1x1 -> KxK branch (+BN)"
    if k in ("conv+bn", "linear+bn"):
        return key
    if k in ("conv", "linear"):
        return f"{key}{bn}" if has_bn else f"{key} (no branches)"
    if k.startswith("conv.") and k[5:].isdigit():  # MobileOne's over-parameterized KxK branches
        return f"over-parameterized {kh}x{kw} conv{bn} #{k[5:]}"
    if "." in key:
        prefix, last = key.rsplit(".", 1)
        inner = describe_branch(last, kernel, has_bn)
        if not inner.startswith("branch '"):
            return f"{inner} (in {prefix})"
    return f"branch '{key}' ({kh}x{kw}{', BN' if has_bn else ''})"


def _is_identity_like(key: str) -> bool:
    return key.lower() in ("identity", "id", "skip", "rbr_identity", "rbr_skip")


def _align(kernel: ConvKernel, like: Tensor, groups: int) -> Tensor | None:
    try:
        k = kernel
        if k.groups != groups:
            k = regroup(to_dense(k), groups)
        k = pad_kernel(k, (like.shape[2], like.shape[3]))
    except FoldError:
        return None
    return k.weight if tuple(k.weight.shape) == tuple(like.shape) else None


def _bn_detail(bn: _BN, channel: int) -> dict:
    scale, _ = bn_scale_shift(bn)
    gamma = float(bn.weight.detach()[channel]) if bn.weight is not None else 1.0
    var = float(bn.running_var[channel])
    return {"gamma": gamma, "running_var": var, "sigma": math.sqrt(var + bn.eps),
            "gamma_over_sigma": float(scale[channel]), "median_gamma_over_sigma": float(scale.abs().median())}


def attribute(layer: FoldedLayer, max_channels: int = MAX_OUTLIER_CHANNELS,
              ratio: float = OUTLIER_CHANNEL_RATIO) -> LayerAttribution:
    """Split the outlier output channels of ``layer``'s folded kernel into its train-time branches.

    Outlier channels are those whose max |w| is ``ratio`` x the median channel's; with none, the
    single largest channel is described (for context). Each branch's share is its weight at the
    folded channel's peak tap divided by the folded value there, so the shares sum to one.
    """
    w = layer.module.weight.detach().to(torch.float64)
    if w.dim() == 2:
        w = w.reshape(w.shape[0], -1, 1, 1)
    if not layer.branches:
        return LayerAttribution(False, layer.note or "no branch information")
    groups = getattr(layer.module, "groups", 1)
    aligned: dict[str, Tensor] = {}
    for key, k in layer.branches.items():
        a = _align(k, w, groups)
        if a is None:
            return LayerAttribution(False, f"no branch information (branch '{key}' does not line up with the "
                                           f"folded {tuple(w.shape)} kernel)")
        aligned[key] = a
    total = sum(aligned.values())
    if float((total - w).abs().max()) > 1e-4 * max(float(w.abs().max()), 1e-12):
        return LayerAttribution(False, "no branch information (the branches do not sum to the folded kernel)")
    words = {key: describe_branch(key, k, key in layer.branch_bns) for key, k in layer.branches.items()}

    ch = channel_absmax(w)
    med = float(ch.median())
    order = torch.argsort(ch, descending=True)
    outliers = [int(c) for c in order if med > 0 and float(ch[c]) >= ratio * med]
    picked = outliers[:max_channels] or [int(order[0])]
    # reference branch for "Nx the ..." statements: the branch with the biggest kernel (the dense one)
    ref_key = max(layer.branches, key=lambda k: layer.branches[k].kernel_size[0] * layer.branches[k].kernel_size[1])

    channels: list[ChannelAttribution] = []
    for c in picked:
        row = w[c]
        flat_i = int(row.abs().reshape(-1).argmax())
        tap = _unravel(flat_i, tuple(row.shape))
        peak_val = float(row[tuple(tap)])
        shares = []
        for key, a in aligned.items():
            v = float(a[c][tuple(tap)])
            bn = layer.branch_bns.get(key)
            shares.append(BranchShare(key, words[key], v, v / peak_val if peak_val else 0.0,
                                      float(a[c].abs().max()), _bn_detail(bn, c) if bn is not None else None))
        dom = max(shares, key=lambda s: abs(s.share))
        channels.append(ChannelAttribution(c, float(ch[c]), float(ch[c]) / med if med > 0 else math.inf, tap,
                                           shares, dom.branch, _sentence(layer.name, c, dom, shares, ref_key)))

    dominant, dshare = None, 0.0
    if outliers:
        counts: dict[str, float] = {}
        for ca in channels:
            for s in ca.branches:
                counts[s.branch] = counts.get(s.branch, 0.0) + abs(s.share) / len(channels)
        dominant = max(counts, key=counts.get)
        dshare = counts[dominant]
        if dshare < DOMINANT_SHARE:
            dominant = None
    if outliers:
        summary = (f"{len(outliers)} outlier channel(s) >= {ratio:g}x the median channel range; "
                   + (f"the {words[dominant]} branch gives {100 * dshare:.0f}% of their peak weights"
                      if dominant else "no single branch dominates them"))
    else:
        top = float(ch.max()) / med if med > 0 else 0.0
        summary = f"no outlier channels (largest channel range is {top:.1f}x the median)"
    return LayerAttribution(True, "", words, len(outliers), channels, dominant, dshare, summary)


def _unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    """Index tuple of a flat position (torch.unravel_index imports sympy: seconds, for nothing)."""
    out = []
    for n in reversed(shape):
        out.append(flat % n)
        flat //= n
    return out[::-1]


def _sentence(layer: str, c: int, dom: BranchShare, shares: list[BranchShare], ref_key: str) -> str:
    if dom.bn is not None and _is_identity_like(dom.branch):
        what = (f"{dom.words} gamma/sigma = {dom.bn['gamma_over_sigma']:.3g} "
                f"(gamma {dom.bn['gamma']:.3g}, running_var {dom.bn['running_var']:.2e})")
    else:
        what = f"{dom.words} weight {dom.value:.3g} ({100 * dom.share:.0f}% of the peak)"
    ref = next((s for s in shares if s.branch == ref_key), None)
    if ref is None or ref.branch == dom.branch:
        others = [s for s in shares if s.branch != dom.branch]
        ref = max(others, key=lambda s: s.peak) if others else None
    if ref is None:
        tail = ""
    elif ref.peak > 0:
        tail = f", {dom.peak / ref.peak:.0f}x the {ref.words} branch"
    else:
        tail = f"; the {ref.words} branch is zero there"
    return f"{layer} channel {c}: {what}{tail}"


__all__ = ["FoldedLayer", "fold_for_check", "layers_from_fold", "find_branch_bn", "describe_branch", "attribute",
           "LayerAttribution", "ChannelAttribution", "BranchShare"]
