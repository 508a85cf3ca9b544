"""Affine-region analysis of a traced graph: which nodes are affine maps of one activation, and
what single conv / linear each such region collapses to.

Walking the nodes in order, every tensor node gets a value: ``Const`` (depends on parameters
only: constant-folded, e.g. DO-Conv's composed kernel), ``Affine`` (``kernel(src)`` for one
activation ``src``) or a fresh source (anything non-linear or unknown). The rules themselves
are the kernel algebra's; this module only reads the graph and decides where regions end.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from edgerep.errors import FoldError
from edgerep.fold.graph_kernels import (
    check_crop_then_pad,
    compose_exact,
    is_plain_identity,
    match_dilation,
    max_groups,
)
from edgerep.fold.kernel import (
    FOLD_DTYPE,
    ConvKernel,
    add_kernels,
    avgpool_kernel,
    bn_scale_shift,
    concat_kernels,
    fuse_bn,
    identity_kernel,
    scale_channels,
    to_dense,
)


class NotAffine(Exception):
    """The node is not an affine map of one activation (a region boundary, not an error)."""


@dataclass(frozen=True)
class Const:
    """A value computed from parameters / constants only."""

    value: Any


@dataclass(frozen=True)
class Meta:
    """A non-tensor value derived from an activation (``x.shape``): not foldable, not affine."""


@dataclass(frozen=True)
class Split:
    """The tuple returned by ``torch.split`` / ``chunk`` along channels of an affine value."""

    base: "Affine"
    bounds: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Affine:
    """``value = kernel(src)`` (conv domain), ``linear(src)`` (last-dim domain) or ``src`` itself."""

    src: fx.Node
    kernel: ConvKernel | None = None
    linear: tuple[Tensor, Tensor] | None = None
    nodes: tuple[fx.Node, ...] = ()
    labels: tuple[str, ...] = ()
    terms: int = 1
    computed: bool = False  # a weight came from a constant-folded computation
    macs: int = 0  # multiply-accumulates of the original conv / linear / pool ops in the region
    joins: tuple[fx.Node, ...] = ()  # where a conv was composed in series, or branches were summed

    @property
    def is_identity(self) -> bool:
        return self.kernel is None and self.linear is None

    def needs_rewrite(self) -> bool:
        """Collapse when it removes work: several ops with a conv / linear among them, a weight
        computed in forward (DO-Conv), or a chain of no-ops. A channel selection, a lone BN or a
        BN + pool pair is left as it is rather than turned into a new conv."""
        if self.is_identity:
            return len(self.nodes) >= 2
        weighted = any(lab.startswith(("conv", "linear")) for lab in self.labels)
        return (len(self.nodes) >= 2 and weighted) or (self.computed and len(self.nodes) >= 1)


def source(node: fx.Node) -> Affine:
    return Affine(src=node)


@dataclass
class Analysis:
    values: dict[fx.Node, Any] = field(default_factory=dict)
    regions: dict[fx.Node, Affine] = field(default_factory=dict)  # region end -> its collapsed form
    materialize: list[fx.Node] = field(default_factory=list)  # region ends that must exist in the graph
    refused: list[tuple[str, str]] = field(default_factory=list)
    absorbed: set[fx.Node] = field(default_factory=set)  # mutations (setitem) folded into a region


def owner_path(node: fx.Node) -> str:
    """The path of the module whose forward created the node ("" for the model's own forward)."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1]
    return str(path[0]) if isinstance(path, tuple) else str(path)


def where(node: fx.Node) -> str:
    """A human name for a node: the module path for module calls, else ``owner:node`` (e.g.
    ``dbb_avg.bn:pad``), or the node name in the model's own forward."""
    if node.op == "call_module":
        return str(node.target)
    owner = owner_path(node)
    return f"{owner}:{node.name}" if owner else node.name


def collapsed_macs(a: Affine, end_numel: int) -> int:
    """Multiply-accumulates of the one conv / linear the region collapses to."""
    if a.kernel is not None:
        return end_numel * int(max_groups(a.kernel).weight[0].numel())
    if a.linear is not None:
        return end_numel * int(a.linear[0].shape[1])
    return 0


def describe_region(a: Affine) -> str:
    if "cat" in a.labels:
        return f"{a.terms}-way concat"
    if a.terms > 1:
        return f"{a.terms}-branch sum"
    return "+".join(a.labels) if a.labels else "identity"


# ---------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------
#: reads of an activation that carry no data (timm's ``torch._assert(x.ndim == 4)`` shape checks):
#: they never end a region, and a folded region's interior nodes hand them over (``graph.py``)
_META_ATTRS = {"dtype", "device", "ndim", "shape", "is_cuda", "requires_grad"}
_META_METHODS = {"size", "dim"}
_INPLACE_SUFFIX = "_"


def _is_setitem(n: fx.Node) -> bool:
    return n.op == "call_function" and n.target is operator.setitem


def _is_meta_use(n: fx.Node) -> bool:
    """``x.dtype`` / ``x.shape`` / ``x.size()`` / ``x.dim()``: a read of the tensor's metadata, not its values."""
    if n.op == "call_method":
        return n.target in _META_METHODS
    return n.op == "call_function" and n.target is getattr and len(n.args) > 1 and n.args[1] in _META_ATTRS


def _reads_size(n: fx.Node) -> bool:
    return (n.op == "call_method" and n.target == "size") or (n.op == "call_function" and n.args[1] == "shape")


_SHAPE_OF = {"reshape_as", "view_as", "expand_as"}


def is_shape_use(u: fx.Node, n: fx.Node) -> bool:
    """``y.reshape_as(n)``: ``n`` is read for its shape only (LeViT reshapes its BN output back so)."""
    return (u.op == "call_method" and u.target in _SHAPE_OF and len(u.args) > 1 and u.args[1] is n
            and u.args[0] is not n)


def real_users(n: fx.Node, absorbed: set[fx.Node]) -> list[fx.Node]:
    """Users that consume the node's value (metadata and shape reads, absorbed mutations excluded)."""
    return [u for u in n.users if not _is_meta_use(u) and not is_shape_use(u, n) and u not in absorbed]


def _flat_nodes(args: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: out.append(n))
    return out


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(i) for i in v)
    return (t[0], t[0]) if len(t) == 1 else (t[0], t[1])


# ---------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------
class Analyzer:
    """Walks ``gm``'s graph once. ``env`` holds each node's float64 value on the example input
    (constants and shapes come from it); ``forced`` names nodes to treat as boundaries (regions
    that failed numerical verification)."""

    def __init__(self, gm: fx.GraphModule, env: dict[str, Any], forced: set[str] | None = None,
                 value_tol: float = 1e-6, split_at: set[str] | None = None, max_cost_growth: float | None = None):
        self.gm = gm
        self.max_cost_growth = max_cost_growth  # a serial composition costing more starts a new region
        self.split_at = split_at or set()  # nodes that start a new region (what feeds them ends there)
        self.value_tol = value_tol
        self.env = env
        self.forced = forced or set()
        self.a = Analysis()
        self.modules = dict(gm.named_modules())
        self._const_memo: dict[fx.Node, bool] = {}
        # tensors written in place (y[...] = v, x.add_(...)): their recorded value is not what readers see
        self.mutated: set[fx.Node] = set()
        self._order = {n: i for i, n in enumerate(gm.graph.nodes)}
        for n in gm.graph.nodes:
            if n.args and isinstance(n.args[0], fx.Node) and (
                    _is_setitem(n) or (n.op == "call_method" and str(n.target).endswith(_INPLACE_SUFFIX))):
                self.mutated.add(n.args[0])

    # -- values ------------------------------------------------------------------
    def val(self, arg: Any) -> Any:
        if isinstance(arg, fx.Node):
            return self.a.values[arg]
        if isinstance(arg, (int, float, bool)) and not isinstance(arg, bool):
            return Const(torch.tensor(float(arg), dtype=FOLD_DTYPE))
        return Const(arg)

    def shape(self, node: fx.Node) -> tuple[int, ...]:
        v = self.env.get(node.name)
        if not isinstance(v, Tensor):
            raise NotAffine()
        return tuple(v.shape)

    def channels(self, a: Affine) -> int:
        return self.shape(a.src)[1]

    def as_kernel(self, a: Affine) -> ConvKernel:
        if a.kernel is not None:
            return a.kernel
        if a.linear is not None or len(self.shape(a.src)) != 4:
            raise NotAffine()
        return identity_kernel(self.channels(a), 1, groups=self.channels(a))

    def as_linear(self, a: Affine) -> tuple[Tensor, Tensor]:
        if a.linear is not None:
            return a.linear
        if a.kernel is not None:
            raise NotAffine()
        n = self.shape(a.src)[-1]
        return torch.eye(n, dtype=FOLD_DTYPE), torch.zeros(n, dtype=FOLD_DTYPE)

    # -- main loop ----------------------------------------------------------------
    def run(self) -> Analysis:
        a = self.a
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                a.values[node] = source(node)
                continue
            if node.op == "get_attr":
                if self.is_const(node):
                    a.values[node] = Const(self.env.get(node.name))
                else:  # a buffer written in place during forward: not a constant
                    a.values[node] = source(node) if isinstance(self.env.get(node.name), Tensor) else Meta()
                continue
            if node.op == "output":
                for n in _flat_nodes(node.args):
                    self.need(n)
                continue
            if node in a.absorbed:
                a.values[node] = Meta()
                continue
            inputs = _flat_nodes((node.args, node.kwargs))
            if self.channel_read(node) or (_is_meta_use(node) and _reads_size(node) and node.users
                                           and all(self.channel_read(u) for u in node.users)):
                # ``x.shape[1]`` (a depthwise conv's ``groups``): a channel count, fixed by the weights;
                # read it from the example (``_static_int``), and let the region go on through ``x``
                a.values[node] = Meta()
                continue
            if self.is_const(node):
                a.values[node] = Const(self.env.get(node.name))
                continue
            if node.name in self.split_at:
                for n in inputs:
                    self.need(n)
            try:
                if node.name in self.forced:
                    raise NotAffine()
                v = self.step(node)
            except NotAffine:
                v = None
            except FoldError as e:
                # cannot join what comes before: what comes before ends here, and this node may
                # still start a region of its own (a refused 1x1 -> 3x3 still folds 3x3 + BN)
                a.refused.append((where(node), e.one_line()))
                for n in inputs:
                    self.need(n)
                try:
                    v = self.step(node)
                except (NotAffine, FoldError):
                    v = None
            if v is None:
                for n in inputs:
                    self.need(n)
                env_v = self.env.get(node.name)
                a.values[node] = source(node) if isinstance(env_v, Tensor) else Meta()
                continue
            if isinstance(v, Affine):
                v = replace(v, nodes=v.nodes + (node,))
                if len(real_users(node, a.absorbed)) > 1 and not v.is_identity:
                    # fan-out: compute it once, consumers read it as a source
                    self.a.regions[node] = v
                    self.a.materialize.append(node)
                    a.values[node] = source(node)
                    continue
            a.values[node] = v
        return a

    def channel_read(self, n: fx.Node) -> bool:
        """``x.shape[1]`` / ``x.size(1)`` / ``x.size()[1]`` of an activation that is 4-D on the example."""
        if not _is_channel_read(n):
            return False
        src = n.args[0] if n.op == "call_method" else n.args[0].args[0]
        v = self.env.get(src.name) if isinstance(src, fx.Node) else None
        return isinstance(v, Tensor) and v.dim() == 4

    def need(self, n: fx.Node) -> None:
        """``n``'s value is read by something that is not foldable: the region ending at ``n`` must exist."""
        v = self.a.values.get(n)
        if isinstance(v, Split):  # the split itself stays: what it splits must exist
            for m in _flat_nodes((n.args, n.kwargs)):
                self.need(m)
            self.a.values[n] = Meta()
            return
        if isinstance(v, Affine) and v.nodes and n not in self.a.regions:
            self.a.regions[n] = v
            self.a.materialize.append(n)
            self.a.values[n] = source(n)

    def is_const(self, node: fx.Node) -> bool:
        """Depends on parameters and constants only (never on an activation), and is never mutated:
        its recorded value is the value every reader sees."""
        if node in self._const_memo:
            return self._const_memo[node]
        if node.op == "get_attr":
            ok = node not in self.mutated
        elif node.op in ("call_function", "call_method") and _is_meta_use(node):
            # dtype / ndim are constants; an activation's size is the example input's and must not be
            # baked into a kernel (``x / x.shape[-1]`` would fold for one resolution only)
            ok = not _reads_size(node) or self.is_const(node.args[0])
        elif node.op in ("call_function", "call_method") and not _is_setitem(node):
            name = getattr(node.target, "__name__", str(node.target))
            ok = "rand" not in name and not name.endswith(_INPLACE_SUFFIX)
            inputs = _flat_nodes((node.args, node.kwargs))
            if ok and not inputs and node.op == "call_method":
                ok = False
            ok = ok and all(self.is_const(n) for n in inputs)
            if ok and node in self.mutated:
                ok = self._built_then_read(node)
        else:
            ok = False
        self._const_memo[node] = ok
        return ok

    def _built_then_read(self, node: fx.Node) -> bool:
        """A constant written in place (``k = zeros(..); k[..] = w``) is still a constant when only
        constant ``y[..] = v`` writes touch it and every other reader comes after the last write:
        the recorder keeps its value as of the last write."""
        writes = [u for u in node.users if _is_setitem(u) and u.args[0] is node]
        others = [u for u in node.users if u not in writes]
        if any(n.op == "call_method" and str(n.target).endswith(_INPLACE_SUFFIX) for n in others):
            return False
        if not all(all(self.is_const(m) for m in _flat_nodes(w.args[1:])) for w in writes):
            return False
        last = max(self._order[w] for w in writes)
        return all(self._order[u] > last for u in others)

    def const_value(self, node: fx.Node) -> Any:
        if not self.is_const(node):
            raise NotAffine()
        return self.env.get(node.name)

    # -- rules --------------------------------------------------------------------
    def step(self, node: fx.Node) -> Any:
        if node.op == "call_module":
            mod = self.modules[node.target]
            rule = module_rule(mod)
            if rule is None or node.kwargs or len(node.args) != 1:
                raise NotAffine()
            return rule(self, node, mod)
        if node.op == "call_function":
            rule = _FUNCTION_RULES.get(node.target)
        elif node.op == "call_method":
            rule = _METHOD_RULES.get(node.target)
        else:
            rule = None
        if rule is None:
            raise NotAffine()
        return rule(self, node)

    def input_affine(self, arg: Any) -> Affine:
        v = self.val(arg)
        if not isinstance(v, Affine):
            raise NotAffine()
        return v

    # conv domain ---------------------------------------------------------------
    def apply_conv(self, node: fx.Node, x: Affine, k: ConvKernel, label: str, computed: bool = False) -> Affine:
        if len(self.shape(x.src)) != 4 or x.linear is not None:
            raise NotAffine()
        if k.in_channels != (x.kernel.out_channels if x.kernel is not None else self.channels(x)):
            raise NotAffine()
        joins = x.joins
        if x.kernel is not None and not is_plain_identity(x.kernel) and self._too_costly(node, x, k, label):
            x = self.a.values[self._restart_from(node, x)]  # this conv starts a region of its own
        if x.kernel is None:
            out = k.double()
        elif is_plain_identity(x.kernel):
            kk = k.double()
            check_crop_then_pad(x.kernel, kk)
            out = replace(kk, padding=(kk.padding[0] + x.kernel.padding[0], kk.padding[1] + x.kernel.padding[1]))
        else:
            out = compose_exact(x.kernel, k)
            joins = joins + (node,)
        macs = x.macs + self.numel(node) * int(k.weight[0].numel())
        return replace(x, kernel=out, labels=x.labels + (label,), computed=x.computed or computed, macs=macs,
                       joins=joins)

    def _too_costly(self, node: fx.Node, x: Affine, k: ConvKernel, label: str) -> bool:
        """Composing ``k`` after ``x`` would give one conv costing more than ``max_cost_growth`` times
        the multiply-adds of the ops it replaces, where a grouped first conv would turn dense (a
        depthwise KxK then a pointwise 1x1, FastViT's and RepViT's blocks): decided before that dense,
        expensive composition is computed, and recorded as a refusal with the cost. Other growth
        (a branch inside a sum, DBB's 1x1 -> avg pool) is judged on the whole region afterwards."""
        if self.max_cost_growth is None or self._input_node(node, x) is None:
            return False
        a = x.kernel
        assert a is not None
        macs = x.macs + self.numel(node) * int(k.weight[0].numel())
        if k.kernel_size == (1, 1) and k.stride == (1, 1) and k.padding == (0, 0):
            kh, kw = a.kernel_size
        elif a.kernel_size == (1, 1) and a.stride == (1, 1):
            kh, kw = k.kernel_size
        else:
            kh, kw = a.kernel_size[0] + k.kernel_size[0] - 1, a.kernel_size[1] + k.kernel_size[1] - 1
        groups = math.gcd(a.groups, k.groups)  # the grouping the composition keeps for sure
        if groups >= a.groups:
            return False
        cost = self.numel(node) * (a.in_channels // groups) * kh * kw
        if macs <= 0 or cost <= self.max_cost_growth * macs:
            return False
        labels = x.labels + (label,)
        self.a.refused.append((where(node), f"{'+'.join(labels)} would become one conv costing {cost / macs:.1f}x "
                                            f"the MACs of the original (> max_cost_growth={self.max_cost_growth:g}); "
                                            "its parts were folded separately"))
        return True

    def _input_node(self, node: fx.Node, x: Affine) -> fx.Node | None:
        return next((n for n in _flat_nodes((node.args, node.kwargs)) if self.a.values.get(n) is x), None)

    def _restart_from(self, node: fx.Node, x: Affine) -> fx.Node:
        """End the region at ``node``'s input, which ``node`` then reads as a source."""
        n = self._input_node(node, x)
        assert n is not None
        self.need(n)
        return n

    def numel(self, node: fx.Node) -> int:
        v = self.env.get(node.name)
        return int(v.numel()) if isinstance(v, Tensor) else 0

    def channel_affine(self, x: Affine, scale: Tensor, shift: Tensor, label: str) -> Affine:
        """``x * scale + shift`` per channel (dim 1 of a 4-D map, or the last dim of a linear value)."""
        if x.linear is not None or (x.kernel is None and len(self.shape(x.src)) != 4):
            w, b = self.as_linear(x)
            scale = scale.to(FOLD_DTYPE).reshape(-1).expand(w.shape[0])
            shift = shift.to(FOLD_DTYPE).reshape(-1).expand(w.shape[0])
            return replace(x, linear=(w * scale.view(-1, 1), b * scale + shift), labels=x.labels + (label,))
        k = self.as_kernel(x)
        return replace(x, kernel=scale_channels(k, scale, shift), labels=x.labels + (label,))


def _per_channel(c: Tensor, x_shape: tuple[int, ...], linear: bool) -> Tensor:
    """The constant as a per-channel vector if broadcasting it against ``x`` acts per channel."""
    c = torch.as_tensor(c, dtype=FOLD_DTYPE)
    if c.numel() == 1:
        return c.reshape(1)
    nd = len(x_shape)
    if c.dim() > nd:
        raise NotAffine()
    full = (1,) * (nd - c.dim()) + tuple(c.shape)
    ch = nd - 1 if linear or nd != 4 else 1
    for i, s in enumerate(full):
        if i != ch and s != 1:
            raise NotAffine()
    if full[ch] != x_shape[ch]:
        raise NotAffine()
    return c.reshape(-1)


def _is_linear_domain(an: Analyzer, x: Affine) -> bool:
    return x.linear is not None or (x.kernel is None and len(an.shape(x.src)) != 4)


# ---------------------------------------------------------------------------------
# module rules
# ---------------------------------------------------------------------------------
def _conv_module(an: Analyzer, node: fx.Node, mod: nn.Conv2d) -> Affine:
    if mod.padding_mode != "zeros":
        raise NotAffine()  # reflect / replicate / circular padding is no zero-padded conv
    if isinstance(mod.padding, str):  # 'valid' / 'same' (odd effective kernel: symmetric)
        k = ConvKernel(mod.weight.detach().to(FOLD_DTYPE),
                       (mod.bias.detach() if mod.bias is not None else mod.weight.new_zeros(mod.out_channels))
                       .to(FOLD_DTYPE), mod.stride, _string_padding(mod.padding, mod.kernel_size, mod.dilation),
                       mod.dilation, mod.groups)
    else:
        k = ConvKernel.from_conv(mod)
    return an.apply_conv(node, an.input_affine(node.args[0]), k, f"conv{k.kernel_size[0]}x{k.kernel_size[1]}")


def _string_padding(padding: str, kernel_size: Any, dilation: Any) -> tuple[int, int]:
    if padding == "valid":
        return (0, 0)
    out = []
    for k, d in zip(_pair(kernel_size), _pair(dilation)):
        total = d * (k - 1)
        if total % 2:
            raise NotAffine()  # 'same' with an even kernel pads one side more: no symmetric conv
        out.append(total // 2)
    return (out[0], out[1])


def _bn_module(an: Analyzer, node: fx.Node, mod: nn.modules.batchnorm._BatchNorm) -> Affine:
    x = an.input_affine(node.args[0])
    nd = len(an.shape(node))
    if (nd == 4) == _is_linear_domain(an, x) or nd not in (2, 4):  # channels at dim 1: NCHW, or (N, C)
        raise NotAffine()
    scale, shift = bn_scale_shift(mod)
    if x.kernel is not None:
        return replace(x, kernel=fuse_bn(x.kernel, mod), labels=x.labels + ("bn",))
    return an.channel_affine(x, scale, shift, "bn")


def _linear_module(an: Analyzer, node: fx.Node, mod: nn.Linear) -> Affine:
    b = mod.bias.detach() if mod.bias is not None else None
    return _apply_linear(an, node, an.input_affine(node.args[0]), mod.weight.detach(), b, False)


def _apply_linear(an: Analyzer, node: fx.Node, x: Affine, w: Tensor, b: Tensor | None, computed: bool) -> Affine:
    if not _is_linear_domain(an, x):
        raise NotAffine()
    w1, b1 = an.as_linear(x)
    w2 = w.to(FOLD_DTYPE)
    b2 = torch.zeros(w2.shape[0], dtype=FOLD_DTYPE) if b is None else b.to(FOLD_DTYPE)
    if w2.shape[1] != w1.shape[0]:
        raise NotAffine()
    joins = x.joins + ((node,) if x.linear is not None else ())
    return replace(x, linear=(w2 @ w1, w2 @ b1 + b2), labels=x.labels + ("linear",),
                   computed=x.computed or computed, macs=x.macs + an.numel(node) * int(w2.shape[1]), joins=joins)


def _identity_module(an: Analyzer, node: fx.Node, mod: nn.Module) -> Affine:
    x = an.input_affine(node.args[0])
    return replace(x, labels=x.labels + ("identity",))


def _avgpool_module(an: Analyzer, node: fx.Node, mod: nn.AvgPool2d) -> Affine:
    return _avgpool(an, node, an.input_affine(node.args[0]), mod.kernel_size, mod.stride, mod.padding,
                    mod.ceil_mode, mod.count_include_pad, mod.divisor_override)


def _avgpool(an: Analyzer, node: fx.Node, x: Affine, k: Any, s: Any, p: Any, ceil_mode: bool,
             count_include_pad: bool, divisor_override: Any) -> Affine:
    if divisor_override is not None or len(an.shape(x.src)) != 4 or x.linear is not None:
        raise NotAffine()
    c = x.kernel.out_channels if x.kernel is not None else an.channels(x)
    pool = avgpool_kernel(c, _pair(k), _pair(s if s not in (None, []) else k), _pair(p), groups=c,
                          count_include_pad=count_include_pad)
    if ceil_mode:
        h, w = an.shape(node.args[0])[2:]
        if tuple(an.shape(node)[2:]) != pool.output_size(h, w):
            raise FoldError("AvgPool with ceil_mode=True adds a partial window at the border; no conv reproduces it")
    return an.apply_conv(node, x, pool, f"avgpool{pool.kernel_size[0]}x{pool.kernel_size[1]}")


def _zeropad_module(an: Analyzer, node: fx.Node, mod: nn.Module) -> Affine:
    value = float(getattr(mod, "value", 0.0))
    return _pad(an, node, an.input_affine(node.args[0]), list(mod.padding), value)


_MODULE_RULES: dict[type, Callable[..., Affine]] = {
    nn.Conv2d: _conv_module,
    nn.BatchNorm2d: _bn_module,
    nn.BatchNorm1d: _bn_module,
    nn.SyncBatchNorm: _bn_module,
    nn.Linear: _linear_module,
    nn.Identity: _identity_module,
    nn.Dropout: _identity_module,
    nn.Dropout2d: _identity_module,
    nn.Dropout1d: _identity_module,
    nn.AlphaDropout: _identity_module,
    nn.AvgPool2d: _avgpool_module,
    nn.ZeroPad2d: _zeropad_module,
    nn.ConstantPad2d: _zeropad_module,
}


def module_rule(mod: nn.Module) -> Callable[..., Affine] | None:
    """The rule for a module called as a leaf: its class's, or an ancestor's when the subclass keeps
    that ancestor's ``forward`` (``SyncBatchNorm`` in eval is a BatchNorm; a subclass with its own
    forward is traced into, or opaque, never folded by its parent's rule)."""
    for cls in type(mod).__mro__:
        rule = _MODULE_RULES.get(cls)
        if rule is not None:
            return rule if type(mod).forward is cls.forward else None
    return None


# ---------------------------------------------------------------------------------
# function / method rules
# ---------------------------------------------------------------------------------
def _const_tensor(an: Analyzer, arg: Any) -> Tensor | None:
    if arg is None:
        return None
    if isinstance(arg, fx.Node) and arg not in an.a.values:  # defined later (read by a mutation)
        v = Const(an.const_value(arg))
    else:
        v = an.val(arg)
    if not isinstance(v, Const) or not isinstance(v.value, Tensor):
        raise NotAffine()
    return v.value


def _is_computed(arg: Any) -> bool:
    return isinstance(arg, fx.Node) and arg.op != "get_attr"


def _is_channel_read(n: fx.Node) -> bool:
    """``x.shape[1]``, ``x.size(1)`` or ``x.size()[1]`` (dim 1 or -3): a 4-D activation's channel count
    (``Analyzer.channel_read`` checks the 4-D)."""
    if n.op == "call_method" and n.target == "size":
        return _arg(n, 1, "dim") in (1, -3) and isinstance(n.args[0], fx.Node)
    if n.op == "call_function" and n.target is operator.getitem and len(n.args) == 2 and n.args[1] in (1, -3):
        src = n.args[0]
        return (isinstance(src, fx.Node) and _is_meta_use(src) and _reads_size(src)
                and isinstance(src.args[0], fx.Node) and (src.op == "call_function" or _arg(src, 1, "dim") is None))
    return False


def _static_int(an: Analyzer, arg: Any) -> int:
    """An int argument of a conv (``groups``): a literal, a constant, or an activation's channel count
    (``groups=x.shape[1]``, a depthwise conv written for any width). Channel counts are fixed by the
    weights (the folder reads them from the example everywhere); spatial sizes are not, and end the region."""
    if not isinstance(arg, fx.Node):
        return int(arg)
    if an.is_const(arg) or an.channel_read(arg):
        v = an.env.get(arg.name)
        if isinstance(v, (int, Tensor)) and not isinstance(v, bool):
            return int(v)
    raise NotAffine()


def _conv2d_fn(an: Analyzer, node: fx.Node) -> Affine:
    x = an.input_affine(_arg(node, 0, "input"))
    w_arg, b_arg = _arg(node, 1, "weight"), _arg(node, 2, "bias")
    w = _const_tensor(an, w_arg)
    b = _const_tensor(an, b_arg)
    padding = _arg(node, 4, "padding", 0)
    if w is None or w.dim() != 4:
        raise NotAffine()
    if isinstance(padding, str):
        padding = _string_padding(padding, tuple(w.shape[2:]), _arg(node, 5, "dilation", 1))
    k = ConvKernel(w.to(FOLD_DTYPE), (b if b is not None else w.new_zeros(w.shape[0])).to(FOLD_DTYPE),
                   _pair(_arg(node, 3, "stride", 1)), _pair(padding), _pair(_arg(node, 5, "dilation", 1)),
                   _static_int(an, _arg(node, 6, "groups", 1)))
    computed = _is_computed(w_arg) or _is_computed(b_arg)
    return an.apply_conv(node, x, k, f"conv{k.kernel_size[0]}x{k.kernel_size[1]}", computed)


def _linear_fn(an: Analyzer, node: fx.Node) -> Affine:
    x = an.input_affine(_arg(node, 0, "input"))
    w_arg, b_arg = _arg(node, 1, "weight"), _arg(node, 2, "bias")
    w = _const_tensor(an, w_arg)
    if w is None or w.dim() != 2:
        raise NotAffine()
    return _apply_linear(an, node, x, w, _const_tensor(an, b_arg), _is_computed(w_arg) or _is_computed(b_arg))


def _batch_norm_fn(an: Analyzer, node: fx.Node) -> Affine:
    x = an.input_affine(_arg(node, 0, "input"))
    if _arg(node, 5, "training", False):
        raise FoldError("batch_norm called with training=True (batch statistics are not affine)")
    mean, var = _const_tensor(an, _arg(node, 1, "running_mean")), _const_tensor(an, _arg(node, 2, "running_var"))
    if mean is None or var is None:
        raise NotAffine()
    weight, bias = _const_tensor(an, _arg(node, 3, "weight")), _const_tensor(an, _arg(node, 4, "bias"))
    eps = float(_arg(node, 7, "eps", 1e-5))
    sigma = torch.sqrt(var.to(FOLD_DTYPE) + eps)
    gamma = weight.to(FOLD_DTYPE) if weight is not None else torch.ones_like(sigma)
    beta = bias.to(FOLD_DTYPE) if bias is not None else torch.zeros_like(sigma)
    scale = gamma / sigma
    nd = len(an.shape(node))
    if (nd == 4) == _is_linear_domain(an, x) or nd not in (2, 4):
        raise NotAffine()
    return an.channel_affine(x, scale, beta - mean.to(FOLD_DTYPE) * scale, "bn")


def _avg_pool2d_fn(an: Analyzer, node: fx.Node) -> Affine:
    x = an.input_affine(_arg(node, 0, "input"))
    k = _arg(node, 1, "kernel_size")
    return _avgpool(an, node, x, k, _arg(node, 2, "stride", None), _arg(node, 3, "padding", 0),
                    bool(_arg(node, 4, "ceil_mode", False)), bool(_arg(node, 5, "count_include_pad", True)),
                    _arg(node, 6, "divisor_override", None))


def _identity_fn(an: Analyzer, node: fx.Node) -> Affine:
    if node.target in (F.dropout, F.dropout2d) and _arg(node, 2, "training", True):
        raise NotAffine()
    x = an.input_affine(node.args[0])
    return replace(x, labels=x.labels + ("identity",))


def _combine(an: Analyzer, node: fx.Node, a: Affine, b: Affine, sign: float, label: str) -> Affine:
    if a.src is not b.src:
        raise NotAffine()
    if _is_linear_domain(an, a) or _is_linear_domain(an, b):
        wa, ba = an.as_linear(a)
        wb, bb = an.as_linear(b)
        if wa.shape != wb.shape:
            raise NotAffine()
        lin = (wa + sign * wb, ba + sign * bb)
        return Affine(a.src, None, lin, a.nodes + b.nodes, a.labels + b.labels + (label,), a.terms + b.terms,
                      a.computed or b.computed, a.macs + b.macs, a.joins + b.joins + (node,))
    ka, kb = match_dilation(an.as_kernel(a), an.as_kernel(b))
    if sign != 1.0:
        kb = scale_channels(kb, torch.tensor(sign, dtype=FOLD_DTYPE))
    k = add_kernels(ka, kb)
    return Affine(a.src, k, None, a.nodes + b.nodes, a.labels + b.labels + (label,), a.terms + b.terms,
                  a.computed or b.computed, a.macs + b.macs, a.joins + b.joins + (node,))


def _shift(an: Analyzer, x: Affine, c: Tensor, sign_x: float, sign_c: float, label: str) -> Affine:
    out_shape = an.shape(x.src) if x.is_identity else None
    lin = _is_linear_domain(an, x)
    shape = _value_shape(an, x) if out_shape is None else out_shape
    v = _per_channel(c, shape, lin)
    return an.channel_affine(x, torch.tensor(sign_x, dtype=FOLD_DTYPE), sign_c * v, label)


def _value_shape(an: Analyzer, x: Affine) -> tuple[int, ...]:
    s = list(an.shape(x.src))
    if x.kernel is not None:
        s[1] = x.kernel.out_channels
    if x.linear is not None:
        s[-1] = x.linear[0].shape[0]
    return tuple(s)


def _add_like(sign: float, label: str) -> Callable[[Analyzer, fx.Node], Affine]:
    def rule(an: Analyzer, node: fx.Node) -> Affine:
        a_arg = _arg(node, 0, "input")
        b_arg = _arg(node, 1, "other")
        alpha = node.kwargs.get("alpha", 1)
        va, vb = an.val(a_arg), an.val(b_arg)
        if isinstance(va, Affine) and isinstance(vb, Affine):
            return _combine(an, node, va, vb if alpha == 1 else _scaled(an, vb, alpha), sign, label)
        if isinstance(va, Affine) and isinstance(vb, Const) and isinstance(vb.value, Tensor):
            return _shift(an, va, vb.value * alpha, 1.0, sign, label)
        if isinstance(vb, Affine) and isinstance(va, Const) and isinstance(va.value, Tensor) and alpha == 1:
            return _shift(an, vb, va.value, sign, 1.0, label)
        raise NotAffine()
    return rule


def _scaled(an: Analyzer, x: Affine, s: float) -> Affine:
    return an.channel_affine(x, torch.tensor(float(s), dtype=FOLD_DTYPE), torch.zeros(1, dtype=FOLD_DTYPE), "mul")


def _rsub(an: Analyzer, node: fx.Node) -> Affine:  # torch.rsub(a, b) = b - a
    va, vb = an.val(node.args[0]), an.val(node.args[1])
    if isinstance(va, Affine) and isinstance(vb, Const) and isinstance(vb.value, Tensor):
        return _shift(an, va, vb.value, -1.0, 1.0, "sub")
    raise NotAffine()


def _mul_like(divide: bool) -> Callable[[Analyzer, fx.Node], Affine]:
    def rule(an: Analyzer, node: fx.Node) -> Affine:
        if node.kwargs.get("rounding_mode") is not None:
            raise NotAffine()
        va, vb = an.val(_arg(node, 0, "input")), an.val(_arg(node, 1, "other"))
        if isinstance(va, Affine) and isinstance(vb, Const) and isinstance(vb.value, Tensor):
            x, c = va, vb.value
        elif not divide and isinstance(vb, Affine) and isinstance(va, Const) and isinstance(va.value, Tensor):
            x, c = vb, va.value
        else:
            raise NotAffine()
        v = _per_channel(c, _value_shape(an, x), _is_linear_domain(an, x))
        if divide:
            if (v == 0).any():
                raise NotAffine()
            v = 1.0 / v
        return an.channel_affine(x, v, torch.zeros(1, dtype=FOLD_DTYPE), "div" if divide else "mul")
    return rule


def _neg(an: Analyzer, node: fx.Node) -> Affine:
    x = an.input_affine(node.args[0])
    return _scaled(an, x, -1.0)


def _cat(an: Analyzer, node: fx.Node) -> Affine:
    tensors = _arg(node, 0, "tensors")
    dim = _arg(node, 1, "dim", 0)
    vals = [an.val(t) for t in tensors]
    if not vals or not all(isinstance(v, Affine) for v in vals):
        raise NotAffine()
    src = vals[0].src
    if any(v.src is not src for v in vals):
        raise NotAffine()
    nd = len(an.shape(src))
    nodes = tuple(n for v in vals for n in v.nodes)
    labels = tuple(lab for v in vals for lab in v.labels) + ("cat",)
    computed = any(v.computed for v in vals)
    macs = sum(v.macs for v in vals)
    joins = tuple(j for v in vals for j in v.joins) + (node,)
    if nd == 4 and dim in (1, -3) and not any(_is_linear_domain(an, v) for v in vals):
        k = concat_kernels(*[an.as_kernel(v) for v in vals])
        return Affine(src, k, None, nodes, labels, len(vals), computed, macs, joins)
    if dim in (-1, nd - 1) and all(_is_linear_domain(an, v) for v in vals):
        ws, bs = zip(*[an.as_linear(v) for v in vals])
        return Affine(src, None, (torch.cat(ws), torch.cat(bs)), nodes, labels, len(vals), computed, macs, joins)
    raise NotAffine()


def _split(an: Analyzer, node: fx.Node) -> Split:
    x = an.input_affine(node.args[0])
    if _is_linear_domain(an, x):
        raise NotAffine()
    sizes = _arg(node, 1, "split_size_or_sections", None)
    if sizes is None:
        sizes = _arg(node, 1, "split_size", None)
    dim = _arg(node, 2, "dim", 0)
    if dim not in (1, -3):
        raise NotAffine()
    c = _value_shape(an, x)[1]
    if node.target in (torch.chunk, "chunk"):
        n = int(sizes)
        step = -(-c // n)
        sizes = [min(step, c - i) for i in range(0, c, step)]
    elif isinstance(sizes, int):
        sizes = [min(sizes, c - i) for i in range(0, c, sizes)]
    bounds, o = [], 0
    for s in sizes:
        bounds.append((o, o + int(s)))
        o += int(s)
    if o != c:
        raise NotAffine()
    return Split(replace(x, labels=x.labels), tuple(bounds))


def _select_channels(an: Analyzer, node: fx.Node, x: Affine, lo: int, hi: int) -> Affine:
    c = _value_shape(an, x)[1]
    w = torch.zeros(hi - lo, c, 1, 1, dtype=FOLD_DTYPE)
    w[torch.arange(hi - lo), torch.arange(lo, hi)] = 1.0
    sel = ConvKernel(w, torch.zeros(hi - lo, dtype=FOLD_DTYPE))
    if x.kernel is None:
        return replace(x, kernel=sel, labels=x.labels + ("split",))
    k = x.kernel.double()
    dense = to_dense(k)
    out = replace(dense, weight=dense.weight[lo:hi], bias=dense.bias[lo:hi])
    return replace(x, kernel=max_groups(out), labels=x.labels + ("split",))


def _getitem(an: Analyzer, node: fx.Node) -> Affine:
    base, idx = node.args
    v = an.val(base)
    if isinstance(v, Split) and isinstance(idx, int):
        lo, hi = v.bounds[idx]
        return _select_channels(an, node, v.base, lo, hi)
    if isinstance(v, Affine) and isinstance(idx, tuple) and len(idx) == 4 and not _is_linear_domain(an, v) and (
            idx[0] == slice(None) and idx[1] == slice(None)):
        return _crop(an, v, idx[2], idx[3])
    if isinstance(v, Affine) and isinstance(idx, tuple) and len(idx) >= 2 and not _is_linear_domain(an, v):
        if idx[0] != slice(None) or not isinstance(idx[1], slice) or idx[1].step not in (None, 1):
            raise NotAffine()
        if any(i != slice(None) for i in idx[2:]) or len(idx) > 4:
            raise NotAffine()
        c = _value_shape(an, v)[1]
        lo, hi, _ = idx[1].indices(c)
        if hi <= lo:
            raise NotAffine()
        return _select_channels(an, node, v, lo, hi)
    raise NotAffine()


def _crop(an: Analyzer, x: Affine, rows: Any, cols: Any) -> Affine:
    """``y[:, :, a:-a, b:-b]`` (ACNet's crop before its 1xK / Kx1 convs): the same conv with
    ``a*stride`` less padding; negative padding is fine inside a region as long as a branch sum
    or an unpadded conv brings it back to a real conv."""
    _, _, h, w = _value_shape(an, x)
    crops = []
    for sl, n in ((rows, h), (cols, w)):
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise NotAffine()
        start, stop, _ = sl.indices(n)
        if start != n - stop or start < 0:
            raise NotAffine()
        crops.append(start)
    c = _value_shape(an, x)[1]
    k = x.kernel if x.kernel is not None else identity_kernel(c, 1, groups=c)
    pad = (k.padding[0] - crops[0] * k.stride[0], k.padding[1] - crops[1] * k.stride[1])
    return replace(x, kernel=replace(k.double(), padding=pad), labels=x.labels + ("crop",))


def _pad_fn(an: Analyzer, node: fx.Node) -> Affine:
    x = an.input_affine(_arg(node, 0, "input"))
    mode = _arg(node, 2, "mode", "constant")
    value = _arg(node, 3, "value", None)
    if mode != "constant":
        raise NotAffine()
    return _pad(an, node, x, list(_arg(node, 1, "pad")), float(value or 0.0))


def _pad(an: Analyzer, node: fx.Node, x: Affine, pad: list[int], value: float) -> Affine:
    """Constant padding of the last two dims (optionally overwritten at the border by per-channel
    constants, DBB's "BN and pad"): exact as more conv padding when the map before it is a 1x1
    that produces exactly the fill value at a zero input."""
    if len(pad) == 2:
        pad = pad + [0, 0]
    if len(pad) != 4 or len(an.shape(x.src)) != 4 or x.linear is not None:
        raise NotAffine()
    left, right, top, bottom = (int(p) for p in pad)
    if left != right or top != bottom or min(pad) < 0:
        raise NotAffine()
    if x.kernel is not None and min(x.kernel.padding) < 0:
        raise NotAffine()  # a crop then a pad is not a conv's padding
    c = _value_shape(an, x)[1]
    fill = torch.full((c,), float(value), dtype=FOLD_DTYPE)
    setitems = [u for u in node.users if _is_setitem(u)]
    if setitems:
        fill = _border_fill(an, node, setitems, (top, left), fill)
    if x.kernel is None:
        if fill.abs().max() != 0:
            raise NotAffine()
        k = identity_kernel(c, 1, groups=c)
        k = replace(k, padding=(top, left))
        out = replace(x, kernel=k, labels=x.labels + ("pad",))
    else:
        k = x.kernel
        if k.kernel_size != (1, 1) or k.stride != (1, 1):
            raise FoldError(f"padding the output of a {k.kernel_size[0]}x{k.kernel_size[1]} map (stride {k.stride}): "
                            "the folded conv would see image values where the original sees the fill value")
        # the model may compute its fill in its own dtype (float32): agree to that precision
        tol = an.value_tol * max(1.0, float(k.bias.abs().max()))
        if not torch.allclose(fill, k.bias, rtol=0, atol=tol):
            raise FoldError("serial 1x1 with bias -> padded conv: the border is filled with "
                            f"{_fmt(fill)} but a zero input maps to {_fmt(k.bias)}; no single conv reproduces "
                            "the border", hint="pad with the bias value (DBB 'BN and pad') or drop the bias/BN")
        out = replace(x, kernel=replace(k, padding=(k.padding[0] + top, k.padding[1] + left)),
                      labels=x.labels + ("pad",))
    an.a.absorbed.update(setitems)
    return out


def _fmt(t: Tensor) -> str:
    vals = ", ".join(f"{float(v):.4g}" for v in t.reshape(-1)[:3])
    return f"[{vals}{', ...' if t.numel() > 3 else ''}]"


def _border_fill(an: Analyzer, node: fx.Node, setitems: list[fx.Node], pad: tuple[int, int],
                 fill: Tensor) -> Tensor:
    """The per-channel value written over the whole padded border by ``y[..] = v`` statements,
    or NotAffine when the writes are anything else."""
    shape = an.shape(node)
    if len(shape) != 4:
        raise NotAffine()
    n, c, h, w = shape
    mask = torch.zeros(h, w, dtype=torch.bool)
    value: Tensor | None = None
    for s in setitems:
        _, idx, v = s.args
        if not (isinstance(idx, tuple) and len(idx) == 4 and idx[0] == slice(None) and idx[1] == slice(None)):
            raise NotAffine()
        if not all(isinstance(i, slice) for i in idx[2:]):
            raise NotAffine()
        cv = _const_tensor(an, v) if isinstance(v, fx.Node) else torch.tensor(float(v), dtype=FOLD_DTYPE)
        vec = _per_channel(cv, (n, c, 1, 1), False).expand(c).to(FOLD_DTYPE)
        if value is not None and not torch.equal(vec, value):
            raise NotAffine()
        value = vec
        mask[idx[2], idx[3]] = True
    border = torch.ones(h, w, dtype=torch.bool)
    border[pad[0]:h - pad[0], pad[1]:w - pad[1]] = False
    if not torch.equal(mask, border):
        raise NotAffine()
    assert value is not None
    return value.clone()


def _contiguous(an: Analyzer, node: fx.Node) -> Affine:
    x = an.input_affine(node.args[0])
    return replace(x, labels=x.labels + ("identity",))


def _reshape_rows(an: Analyzer, node: fx.Node) -> Affine:
    """``x.flatten(0, 1)`` / ``x.reshape_as(y)`` / ``x.view(..., C)`` of a last-dim (linear) value that
    keeps the last dim: the rows are regrouped, each still mapped alike (LeViT's LinearNorm runs its
    BatchNorm1d on ``linear(x).flatten(0, 1)``). The region's folded Linear reads the source as it
    is, so a region ending at a regrouped shape fails its shape check and stays unfolded."""
    x = an.input_affine(node.args[0])
    if not _is_linear_domain(an, x):
        raise NotAffine()
    before, after = an.shape(node.args[0]), an.shape(node)
    if len(before) < 2 or len(after) < 2 or before[-1] != after[-1]:
        raise NotAffine()
    return replace(x, labels=x.labels + ("reshape",))


_FUNCTION_RULES: dict[Any, Callable[[Analyzer, fx.Node], Any]] = {
    F.conv2d: _conv2d_fn,
    torch.conv2d: _conv2d_fn,
    F.linear: _linear_fn,
    torch._C._nn.linear: _linear_fn,
    F.batch_norm: _batch_norm_fn,
    F.avg_pool2d: _avg_pool2d_fn,
    torch._C._nn.avg_pool2d: _avg_pool2d_fn,
    F.dropout: _identity_fn,
    F.dropout2d: _identity_fn,
    operator.add: _add_like(1.0, "add"),
    operator.iadd: _add_like(1.0, "add"),
    torch.add: _add_like(1.0, "add"),
    operator.sub: _add_like(-1.0, "sub"),
    operator.isub: _add_like(-1.0, "sub"),
    torch.sub: _add_like(-1.0, "sub"),
    torch.rsub: _rsub,
    operator.mul: _mul_like(False),
    operator.imul: _mul_like(False),
    torch.mul: _mul_like(False),
    operator.truediv: _mul_like(True),
    operator.itruediv: _mul_like(True),
    torch.div: _mul_like(True),
    operator.neg: _neg,
    torch.neg: _neg,
    torch.cat: _cat,
    torch.concat: _cat,
    torch.split: _split,
    torch.chunk: _split,
    operator.getitem: _getitem,
    F.pad: _pad_fn,
    torch._C._nn.pad: _pad_fn,
    torch.flatten: _reshape_rows,
    torch.reshape: _reshape_rows,
}

_METHOD_RULES: dict[str, Callable[[Analyzer, fx.Node], Any]] = {
    "add": _add_like(1.0, "add"),
    "sub": _add_like(-1.0, "sub"),
    "mul": _mul_like(False),
    "div": _mul_like(True),
    "neg": _neg,
    "split": _split,
    "chunk": _split,
    "contiguous": _contiguous,
    "flatten": _reshape_rows,
    "reshape": _reshape_rows,
    "view": _reshape_rows,
    "reshape_as": _reshape_rows,
    "view_as": _reshape_rows,
}

__all__ = ["Analyzer", "Analysis", "Affine", "Const", "NotAffine", "describe_region", "where", "owner_path",
           "real_users", "is_shape_use", "collapsed_macs", "max_groups"]
