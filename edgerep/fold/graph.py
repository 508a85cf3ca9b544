"""The generic graph folder: fold models edgerep has never seen, from their computation graph.

``fold_graph(model, x)`` traces the model (torch.fx; untraceable submodules stay opaque and are
folded on their own), finds every affine region between non-linearities (conv, eval BN, linear,
average pooling, padding, identity, add/sub, channel concat/split, constant scaling, and
parameter-only computations, which are constant-folded), collapses each region with a single
activation input into one conv / linear with the kernel algebra, checks every collapsed region in
float64 on the example input (borders included; also on a random input when the example is
constant or nearly so), and leaves any region that cannot fold exactly as it was, listed with its
reason. The whole model is checked again at the end.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten

from edgerep.errors import FoldError
from edgerep.fold.graph_affine import (
    Affine,
    Analyzer,
    _is_meta_use,
    is_shape_use,
    collapsed_macs,
    describe_region,
    owner_path,
    where,
)
from edgerep.fold.graph_cost import measure_cost
from edgerep.fold.graph_kernels import max_groups
from edgerep.fold.graph_trace import (
    RootUntraceable,
    cast_floating,
    is_standard_leaf,
    record,
    to_double,
    trace_with_fallback,
)
from edgerep.fold.kernel import FOLD_DTYPE

#: float64 recomputation of a collapsed region must match the float64 run of the original this
#: closely. An exact fold gives ~1e-15, but a model may bake constants in its own dtype (DBB's pad
#: values computed in float32 at trace time), so "exact" means "within float32 rounding"; a real
#: border or kernel mistake is orders of magnitude larger.
REGION_RTOL_F64 = 1e-6
#: the whole folded model and the model it came from, both run in float64, must agree this closely. The
#: fold runs on a float64 copy (kernels and every traced constant in float64), so an exact fold differs
#: only by summation order (~1e-15 even in deep nets); a kernel, border or bias mistake that hides under
#: float32 rounding (~1e-7) is 100x above it. What ships is that verified model cast to the model's dtype.
WHOLE_RTOL_F64 = 1e-9


@dataclass
class RegionInfo:
    """One collapsed affine region: the original nodes / modules it covered, what kind of
    structure it was, and the module it became."""

    where: list[str]
    kind: str
    became: str
    max_rel_error: float | None = None  # float64 recomputation vs the original, on the example input
    sources: list[str] = field(default_factory=list)  # the region's nodes in forward order (module paths)
    module: str | None = None  # path of the folded conv / linear in the result (None: removed identity)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GraphFoldResult:
    """What ``fold_graph`` produced. ``module`` runs eagerly and round-trips through ``state_dict``."""

    module: nn.Module
    folded_regions: list[RegionInfo] = field(default_factory=list)
    refused_regions: list[tuple[str, str]] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    flops_before: int = 0
    flops_after: int = 0
    convs_before: int = 0
    convs_after: int = 0
    norms_before: int = 0  # batch norms run (module or functional)
    norms_after: int = 0
    max_rel_error: float | None = None  # whole model, caller's dtype
    max_rel_error_f64: float | None = None  # whole model in float64 (the fold as verified, before its cast)
    notes: list[str] = field(default_factory=list)
    norms_left: list[str] = field(default_factory=list)  # each BatchNorm still run, and the node it reads

    def to_dict(self) -> dict:
        return {
            "folded_regions": [r.to_dict() for r in self.folded_regions],
            "refused_regions": [{"where": w, "reason": r} for w, r in self.refused_regions],
            "params_before": self.params_before, "params_after": self.params_after,
            "flops_before": self.flops_before, "flops_after": self.flops_after,
            "convs_before": self.convs_before, "convs_after": self.convs_after,
            "norms_before": self.norms_before, "norms_after": self.norms_after,
            "max_rel_error": self.max_rel_error, "max_rel_error_f64": self.max_rel_error_f64,
            "notes": list(self.notes), "norms_left": list(self.norms_left),
        }

    def summary(self) -> str:
        return (f"{len(self.folded_regions)} regions folded, {len(self.refused_regions)} refused; "
                f"convs {self.convs_before} -> {self.convs_after}, batch norms {self.norms_before} -> "
                f"{self.norms_after}, params {self.params_before} -> "
                f"{self.params_after}, FLOPs {self.flops_before} -> {self.flops_after}")


# ---------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------
def fold_graph(model: nn.Module, example_input: Tensor, *, verify: bool = True, rtol: float = 1e-5,
               max_cost_growth: float | None = 2.0) -> GraphFoldResult:
    """Fold every exactly-foldable affine region of ``model`` into one conv / linear.

    ``model`` must be in eval mode (``FoldError`` naming the module otherwise) and is not modified.
    The fold runs on a float64 copy of ``model``. With ``verify`` every collapsed region is recomputed
    in float64 (must agree to 1e-6 relative), and the whole folded float64 model must match the float64
    original on ``example_input`` to ``WHOLE_RTOL_F64`` (1e-9 relative), else ``model`` comes back
    unfolded with the reason. The verified model is then cast to the model's dtype; its error in that
    dtype (``rtol``) is reported, and noted when weight rounding alone exceeds it. A region that fails
    is left unfolded and reported. Raises ``FoldError`` only when not even the unfolded
    model reproduces the original, or when the model does not run on ``example_input``. A region whose single conv would cost more than
    ``max_cost_growth`` times the multiply-accumulates of its original ops (a depthwise conv then a
    pointwise one, a low-rank 1x1 -> KxK pair) is folded in parts instead (``None``: always collapse);
    official reparam blocks shrink or grow by at most ~1.3x.
    """
    _require_eval(model)
    x = example_input.detach()
    device = x.device
    if device.type != "cpu":  # the kernel algebra runs on CPU in float64; the result goes back
        model = copy.deepcopy(model).cpu()
        x = x.cpu()
    try:
        before = measure_cost(model, x)
    except Exception as e:  # noqa: BLE001 - a user's model on a user's input: say which and why
        raise FoldError(f"the model does not run on the example input of shape {tuple(x.shape)} "
                        f"({type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''})",
                        path=type(model).__name__, hint="pass an input the model accepts, e.g. the checkpoint's "
                                                        "input_shape with a batch dimension") from e
    dtype = _model_dtype(model, x)
    result = _fold_any(to_double(model), x.to(FOLD_DTYPE), _Opts(verify, max_cost_growth), "")
    if verify:
        result = _verify_whole(model, result, x, rtol)
    result.module = cast_floating(result.module, dtype, copy=False)
    if verify:
        result = _verify_cast(model, result, x, rtol)
    result.module.eval()
    after = measure_cost(result.module, x)
    result.module.to(device)
    result.params_before, result.params_after = before.params, after.params
    result.flops_before, result.flops_after = before.flops, after.flops
    result.convs_before, result.convs_after = before.convs, after.convs
    result.norms_before, result.norms_after = before.norms, after.norms
    result.norms_left = norms_left(result.module)
    return result


_BN_FUNCTIONS = (F.batch_norm, torch.batch_norm)


def norms_left(module: nn.Module) -> list[str]:
    """Every BatchNorm the folded model still runs, named with the node it reads: the op that
    stopped its region (``stages.0.norm:batch_norm (batch_norm) reads stages.0.act (ReLU)``: a BN
    after a non-linearity)."""
    out: list[str] = []
    called: set[str] = set()
    for path, gm in module.named_modules():
        if not isinstance(gm, fx.GraphModule):
            continue
        for n in gm.graph.nodes:
            is_bn = n.op == "call_function" and n.target in _BN_FUNCTIONS
            if n.op == "call_module":
                called.add(_join(path, str(n.target)))
                is_bn = isinstance(gm.get_submodule(str(n.target)), nn.modules.batchnorm._BatchNorm)
            if is_bn and n.args and isinstance(n.args[0], fx.Node):
                out.append(f"{_join(path, where(n))} ({_node_kind(gm, n)}) reads {_join(path, where(n.args[0]))} "
                           f"({_node_kind(gm, n.args[0])})")
    for path, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and path not in called:
            out.append(f"{path or '<model>'} ({type(m).__name__} inside a module that was not traced)")
    return out


def _node_kind(gm: fx.GraphModule, n: fx.Node) -> str:
    if n.op == "call_module":
        return type(gm.get_submodule(str(n.target))).__name__
    if n.op == "call_function":
        return getattr(n.target, "__name__", str(n.target))
    return str(n.target) if n.op == "call_method" else n.op


def _require_eval(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if m.training:
            raise FoldError("module is in training mode (BatchNorm would use batch statistics, which are not "
                            "affine)", path=name or type(model).__name__, hint="call model.eval() before folding")


# ---------------------------------------------------------------------------------
# tracing strategy: whole model first; untraceable submodules opaque (folded on their own);
# an untraceable top-level forward: fold each child on its own
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Opts:
    verify: bool
    max_cost_growth: float | None


def _fold_any(work: nn.Module, x: Tensor, opts: _Opts, prefix: str) -> GraphFoldResult:
    """Fold ``work`` (a copy we own) traced whole; fall back to its children when it cannot be."""
    if is_standard_leaf(work):
        return GraphFoldResult(work)
    try:
        gm, opaque = trace_with_fallback(work)
    except RootUntraceable as e:
        return _fold_children(work, x, opts, prefix, str(e))
    try:
        result, opaque_inputs = _fold_traced(gm, x, opts.verify, prefix, opts.max_cost_growth, set(opaque))
    except FoldError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. the traced graph does not run in float64
        why = f"traced graph could not be folded ({type(e).__name__}: {str(e).strip()[:160]})"
        # analysis and checks run before any rewrite, and the GraphModule only shares the leaf
        # modules it calls (never modified), so ``work`` is still the untouched copy
        return _fold_children(work, x, opts, prefix, why)
    for path, why in opaque.items():
        result.notes.append(f"{_join(prefix, path)}: not traceable ({why}); folded on its own")
    if opaque:
        _fold_opaque(result, x, opaque_inputs, opts, prefix)
    return result


def _join(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if prefix and path else (prefix or path)


def _fold_children(work: nn.Module, x: Tensor, opts: _Opts, prefix: str, why: str) -> GraphFoldResult:
    """Fold each direct child on the input it receives when ``work`` runs on ``x``."""
    inputs: dict[str, Tensor] = {}
    handles = []
    for name, child in work.named_children():
        def hook(mod: nn.Module, args: tuple, kwargs: dict, name: str = name) -> None:
            if name not in inputs and len(args) == 1 and not kwargs and isinstance(args[0], Tensor):
                inputs[name] = args[0].detach().clone()
        handles.append(child.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            work(x)
    finally:
        for h in handles:
            h.remove()
    result = GraphFoldResult(work)
    result.refused_regions.append((prefix or "<model>", f"forward not traceable ({why}); its submodules were "
                                                        "folded one by one" if "traced graph" not in why else
                                   f"{why}; its submodules were folded one by one"))
    for name, child in list(work.named_children()):
        if name not in inputs:
            continue
        sub = _fold_any(child, inputs[name], opts, _join(prefix, name))
        if sub.folded_regions:
            _set_submodule(work, name, sub.module)
        result.folded_regions += sub.folded_regions
        result.refused_regions += sub.refused_regions
        result.notes += sub.notes
    return result


def _fold_opaque(result: GraphFoldResult, x: Tensor, inputs: dict[str, Any], opts: _Opts, prefix: str) -> None:
    """Fold each opaque (untraceable) submodule on its own, on the input it saw in the traced run."""
    gm = result.module
    for target, sub_x in inputs.items():
        if not isinstance(sub_x, Tensor):
            result.refused_regions.append((_join(prefix, target), "not traceable and not called with one tensor; "
                                                                  "left as it is"))
            continue
        sub = _fold_any(gm.get_submodule(target), sub_x.to(x.dtype), opts, _join(prefix, target))
        if sub.folded_regions:
            _set_submodule(gm, target, sub.module)
        result.folded_regions += sub.folded_regions
        result.refused_regions += sub.refused_regions
        result.notes += sub.notes


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    _carry_attributes(getattr(parent, name, None), module)
    setattr(parent, name, module)


def _carry_attributes(original: Any, folded: nn.Module) -> None:
    """The original's plain attributes (numbers, strings, tuples: timm's ``attn.resolution``) on the
    folded module that replaces it, for an untraced parent whose forward reads them."""
    if not isinstance(original, nn.Module) or original is folded:
        return
    for k, v in vars(original).items():
        if k.startswith("_") or k in vars(folded) or isinstance(v, (Tensor, nn.Module)):
            continue
        if isinstance(v, (int, float, str, bool, tuple, type(None))):
            setattr(folded, k, v)
            if isinstance(folded, fx.GraphModule):  # GraphModule's deepcopy keeps only what it lists here
                folded.meta.setdefault("_user_preserved_attributes", {})[k] = v


# ---------------------------------------------------------------------------------
# one traced graph: analyse, verify regions, rewrite
# ---------------------------------------------------------------------------------
def _numel(v: Any) -> int:
    return int(v.numel()) if isinstance(v, Tensor) else 0


def _fold_traced(gm: fx.GraphModule, x: Tensor, verify: bool, prefix: str, max_cost_growth: float | None,
                 opaque: set[str]) -> tuple[GraphFoldResult, dict[str, Any]]:
    """Analyse, verify and rewrite one traced graph. Also returns the (float64) input each opaque
    submodule received, for folding it on its own (a shared one: its first call)."""
    gm64 = to_double(gm)
    env = record(gm64, x)
    # a random input as well when the example cannot show a wrong kernel (zeros, a constant)
    env_rand = record(gm64, _random_like(x)) if verify and _degenerate(x) else None
    # constants a model bakes in its own dtype (float16: ~1e-3) bound how exact "exact" can be
    tol = max(REGION_RTOL_F64, 8 * torch.finfo(_model_dtype(gm, x)).eps)
    forced: set[str] = set()
    split: set[str] = set()
    failed: list[tuple[str, str]] = []
    for _ in range(len(gm.graph.nodes) + 1):
        analysis = Analyzer(gm, env, forced, value_tol=tol, split_at=split, max_cost_growth=max_cost_growth).run()
        bad = []
        checks: dict[fx.Node, float] = {}
        n_split = len(split)
        for end in analysis.materialize:
            region = analysis.regions[end]
            if not region.needs_rewrite():
                continue
            if region.kernel is not None and min(region.kernel.padding) < 0:
                forced.add(end.name)  # ends in a crop no conv absorbed: keep those ops as they are
                bad.append(end)
                continue
            err = _region_error(region, end, env)
            if env_rand is not None:
                err = max(err, _region_error(region, end, env_rand))
            checks[end] = err
            if verify and not err <= tol:
                bad.append(end)
                continue
            if max_cost_growth is not None and region.joins and region.macs > 0:
                cost = collapsed_macs(region, _numel(env.get(end.name)))
                if cost > max_cost_growth * region.macs:
                    # e.g. a depthwise conv composed with a pointwise one: one dense conv costs more
                    split.update(j.name for j in region.joins)
                    failed.append((_join(prefix, where(end)),
                                   f"{describe_region(region)} ({', '.join(region.labels)}) would become one conv "
                                   f"costing {cost / region.macs:.1f}x the MACs of the original "
                                   f"(> max_cost_growth={max_cost_growth:g}); its parts were folded separately"))
        if not bad and len(split) == n_split:
            break
        for end in bad:
            if end.name in forced:
                continue
            forced.add(end.name)
            failed.append((_join(prefix, where(end)), f"collapsed region differs from the original by "
                                                      f"{checks[end]:.3g} (relative, float64); left unfolded"))
    opaque_inputs: dict[str, Any] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module" and n.target in opaque and str(n.target) not in opaque_inputs:
            one = len(n.args) == 1 and not n.kwargs and isinstance(n.args[0], fx.Node)
            opaque_inputs[str(n.target)] = env.get(n.args[0].name) if one else None
    result = GraphFoldResult(gm)
    result.refused_regions += [(_join(prefix, w), r) for w, r in analysis.refused] + failed
    dtype = _model_dtype(gm, x)
    replaced: dict[fx.Node, fx.Node] = {}
    wanted: dict[fx.Node, str] = {}
    placed: list[tuple[RegionInfo, fx.Node]] = []
    graph = gm.graph
    # the folded op goes where the region first read its source: after any in-place write the
    # original reads saw (DBB's border writes), before anything later
    order = {n: i for i, n in enumerate(graph.nodes)}
    for end in analysis.materialize:
        region = analysis.regions[end]
        if not region.needs_rewrite():
            continue
        src = replaced.get(region.src, region.src)
        if region.is_identity:
            new, became = src, "identity (removed)"
        else:
            module, became = _materialize(region, dtype)
            name = _free_name(gm, f"{end.name}_folded")
            gm.add_module(name, module)
            first = min(region.nodes, key=order.__getitem__)
            with graph.inserting_before(first):
                new = graph.call_module(name, (src,))
        end.replace_all_uses_with(new)
        replaced[end] = new
        _hand_over_meta_uses(region, ((new, env.get(end.name)), (src, env.get(region.src.name))), env)
        if new is not src:
            wanted[new] = _wanted_name(region)
        info = RegionInfo([_join(prefix, where(n)) for n in region.nodes], describe_region(region), became,
                          checks.get(end), [_join(prefix, where(n)) for n in sorted(region.nodes, key=order.get)])
        result.folded_regions.append(info)
        if new is not src:
            placed.append((info, new))
    attrs_before = {str(n.target) for n in graph.nodes if n.op == "get_attr"}
    _dead_code(graph)
    gm.delete_all_unused_submodules()
    _delete_unused_attrs(gm, attrs_before)
    _rename(gm, wanted)
    for info, node in placed:  # provenance: where each folded module ended up
        info.module = _join(prefix, str(node.target))
    for node in graph.nodes:  # annotations (torch.Tensor) break pickling of the generated code
        node.type = None
    graph.lint()
    gm.recompile()
    return result, opaque_inputs


def _hand_over_meta_uses(region: Affine, survivors: tuple[tuple[fx.Node, Any], ...], env: dict[str, Any]) -> None:
    """Metadata reads of a collapsed region's interior nodes (timm's ``torch._assert(x.ndim == 4)``
    after every conv) read a surviving node with the same metadata instead, so the interior ops
    can go; a read no survivor answers alike keeps its node (still exact, just not removed)."""
    for node in region.nodes:
        for user in [u for u in node.users if _is_meta_use(u)]:
            want = env.get(user.name)
            for cand, value in survivors:
                if cand is not node and _meta_value(user, value) == want:
                    user.replace_input_with(node, cand)
                    break
        for user in [u for u in node.users if is_shape_use(u, node)]:
            want = getattr(env.get(node.name), "shape", None)
            for cand, value in survivors:
                if cand is not node and want is not None and getattr(value, "shape", None) == want:
                    user.replace_input_with(node, cand)
                    break


def _meta_value(user: fx.Node, value: Any) -> Any:
    if not isinstance(value, Tensor):
        return None
    if user.op == "call_method":
        return getattr(value, str(user.target))(*user.args[1:], **user.kwargs)
    return getattr(value, str(user.args[1]))


def _degenerate(x: Tensor) -> bool:
    """An example input too poor to check a kernel with (constant, or a handful of values)."""
    if x.numel() < 2 or not x.is_floating_point():
        return True
    return bool(x.double().std() == 0) or torch.unique(x).numel() < min(64, x.numel() // 2)


def _random_like(x: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(1234)
    r = torch.randn(x.shape, generator=g, dtype=FOLD_DTYPE)
    if x.is_floating_point() and x.numel() > 1:
        r = r * x.double().std().clamp_min(1e-3) + x.double().mean()
    return r


def _model_dtype(gm: nn.Module, x: Tensor) -> torch.dtype:
    for p in gm.parameters():
        if p.is_floating_point():
            return p.dtype
    return x.dtype if x.is_floating_point() else torch.float32


def _region_error(region: Affine, end: fx.Node, env: dict[str, Any]) -> float:
    src, ref = env.get(region.src.name), env.get(end.name)
    if not isinstance(src, Tensor) or not isinstance(ref, Tensor):
        return float("inf")
    if region.kernel is not None:
        k = region.kernel
        if min(k.padding) < 0:  # a crop that nothing brought back to a real conv
            return float("inf")
        out = F.conv2d(src, k.weight, k.bias, k.stride, k.padding, k.dilation, k.groups)
    elif region.linear is not None:
        out = F.linear(src, *region.linear)
    else:
        out = src
    if out.shape != ref.shape:
        return float("inf")
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _materialize(region: Affine, dtype: torch.dtype) -> tuple[nn.Module, str]:
    if region.kernel is not None:
        k = max_groups(region.kernel)
        conv = k.to_conv2d(dtype=dtype)
        kh, kw = k.kernel_size
        return conv, (f"Conv2d({k.in_channels}->{k.out_channels}, {kh}x{kw}, stride {k.stride[0]}, "
                      f"padding {k.padding[0]}, groups {k.groups})")
    assert region.linear is not None
    w, b = region.linear
    lin = nn.Linear(w.shape[1], w.shape[0]).to(dtype)  # first, so a float64 kernel is not rounded via float32
    with torch.no_grad():
        lin.weight.copy_(w.to(dtype))
        lin.bias.copy_(b.to(dtype))
    return lin, f"Linear({w.shape[1]}->{w.shape[0]})"


def _free_name(gm: nn.Module, base: str) -> str:
    name, i = base, 1
    while hasattr(gm, name):
        name = f"{base}_{i}"
        i += 1
    return name


def _wanted_name(region: Affine) -> str:
    """Where the folded module should live: in place of the region's only conv / linear, else
    ``<common parent>.reparam`` (the deploy-time name official code bases use), else a flat name."""
    mods = [str(n.target) if n.op == "call_module" else f"{owner_path(n)}.{n.name}".lstrip(".")
            for n in region.nodes if n.op == "call_module" or _is_weighted_fn(n)]
    convs = [n for n in region.nodes if n.op == "call_module" and _is_weighted_target(n)]
    if len(convs) == 1 and not any(_is_weighted_fn(n) for n in region.nodes):
        return str(convs[0].target)
    parts = [m.split(".") for m in mods]
    common: list[str] = []
    if parts:
        for level in zip(*parts):
            if all(p == level[0] for p in level):
                common.append(level[0])
            else:
                break
        if len(common) == min(len(p) for p in parts):  # every module is the prefix itself: go one up
            common = common[:-1]
    return ".".join(common + ["reparam"]) if common or len(mods) > 1 else ""


def _is_weighted_target(n: fx.Node) -> bool:
    try:
        mod = n.graph.owning_module.get_submodule(str(n.target))
    except AttributeError:
        return False
    return type(mod) in (nn.Conv2d, nn.Linear)


def _is_weighted_fn(n: fx.Node) -> bool:
    return n.op == "call_function" and n.target in (F.conv2d, torch.conv2d, F.linear)


def _delete_unused_attrs(gm: fx.GraphModule, before: set[str]) -> None:
    """Drop parameters / buffers / constants that only dead nodes read (DO-Conv's D and W once
    the composed kernel is folded), unless a module still called owns them."""
    still = {str(n.target) for n in gm.graph.nodes if n.op == "get_attr"}
    called = {str(n.target) for n in gm.graph.nodes if n.op == "call_module"}
    emptied: set[str] = set()
    for target in before - still:
        owner, _, name = target.rpartition(".")
        # a called module (or one above it) may read the attribute itself; a called child cannot
        if any(c == owner or owner.startswith(c + ".") for c in called if owner):
            continue
        try:
            mod = gm.get_submodule(owner) if owner else gm
        except AttributeError:
            continue
        if hasattr(mod, name):
            delattr(mod, name)
            emptied.add(owner)
    for owner in emptied:  # timm's BatchNormAct2d whose act is still called: no BN shell without statistics
        mod = gm.get_submodule(owner) if owner else gm
        if owner and isinstance(mod, nn.modules.batchnorm._BatchNorm):
            shell = nn.Module()
            for child_name, child in mod.named_children():
                shell.add_module(child_name, child)
            _set_submodule(gm, owner, shell)


def _rename(gm: fx.GraphModule, wanted: dict[fx.Node, str]) -> None:
    """Move each folded module to its wanted path when that path is free after dead-code removal."""
    for node, path in wanted.items():
        if not path or node.graph is not gm.graph or node.op != "call_module":
            continue
        try:
            gm.get_submodule(path)
            continue  # taken (the original is still used)
        except AttributeError:
            pass
        module = gm.get_submodule(str(node.target))  # missing parents are created as plain containers
        if not gm.add_submodule(path, module):
            continue
        old = str(node.target)
        node.target = path
        gm.delete_submodule(old)


def _dead_code(graph: fx.Graph) -> None:
    """Dead-code elimination that also drops writes (``y[..] = v``) into tensors nobody reads."""
    import operator

    changed = True
    while changed:
        changed = False
        for node in reversed(list(graph.nodes)):
            if node.op in ("placeholder", "output"):
                continue
            if node.op == "call_function" and node.target is operator.setitem:
                target = node.args[0]
                if isinstance(target, fx.Node) and target.op != "placeholder" and all(
                        u.op == "call_function" and (u.target is operator.setitem or _is_meta_use(u))
                        for u in target.users):
                    graph.erase_node(node)
                    changed = True
                continue
            if node.users:
                continue
            if node.op == "call_method" and str(node.target).endswith("_"):
                continue
            if node.op != "get_attr" and node.is_impure():
                continue
            graph.erase_node(node)
            changed = True


# ---------------------------------------------------------------------------------
# whole-model comparison
# ---------------------------------------------------------------------------------
def _verify_whole(model: nn.Module, result: GraphFoldResult, x: Tensor, rtol: float) -> GraphFoldResult:
    """Accept the float64 fold only when it matches ``model`` run in float64 to ``WHOLE_RTOL_F64``; else
    hand back a float64 copy of ``model`` unfolded, with the reason (never an inexact model)."""
    try:
        f64 = _compare(model, result.module, x, double=True)
        broken = None
    except Exception as e:  # noqa: BLE001 - e.g. an untraced forward reads an attribute of a folded child
        f64, broken = float("inf"), f"the folded model does not run ({type(e).__name__}: {str(e).strip()[:160]})"
    if broken is None and f64 <= WHOLE_RTOL_F64:
        result.max_rel_error_f64 = f64
        return result
    fallback = to_double(model)
    if not _compare(model, fallback, x, double=True) <= WHOLE_RTOL_F64:
        raise FoldError("even the unfolded copy differs from the model (non-deterministic forward?)",
                        path=type(model).__name__)
    why = broken or (f"whole-model check failed after folding (float64 rel error {f64:.3g}, "
                     f"limit {WHOLE_RTOL_F64:g})")
    refused = list(result.refused_regions) + [("<model>", f"{why}; nothing was folded")]
    out = GraphFoldResult(fallback, [], refused)
    out.max_rel_error_f64 = 0.0
    return out


def _verify_cast(model: nn.Module, result: GraphFoldResult, x: Tensor, rtol: float) -> GraphFoldResult:
    """The error of the verified fold in the model's own dtype (its weights rounded once): reported."""
    f32 = _compare(model, result.module, x, double=False)
    if not f32 <= rtol:
        result.notes.append(f"{str(_model_dtype(model, x)).replace('torch.', '')} rel error {f32:.3g} exceeds "
                            f"rtol={rtol:g} although the fold is exact in float64 ({result.max_rel_error_f64:.3g}): "
                            "rounding of the folded weights in a deep or ill-conditioned model")
    result.max_rel_error = f32
    return result


@torch.no_grad()
def _compare(original: nn.Module, folded: nn.Module, x: Tensor, double: bool) -> float:
    """Max relative error (max |a-b| / max |a| over all outputs), in float64 copies or as they are."""
    if double:
        a = tree_flatten(to_double(original).eval()(x.to(FOLD_DTYPE)))[0]
        b = tree_flatten(to_double(folded).eval()(x.to(FOLD_DTYPE)))[0]
    else:
        a, b = tree_flatten(original(x))[0], tree_flatten(folded(x))[0]
    return _max_rel(a, b)


def _max_rel(a: list, b: list) -> float:
    if len(a) != len(b):
        return float("inf")
    worst = 0.0
    for u, v in zip(a, b):
        if isinstance(u, Tensor):
            if not isinstance(v, Tensor) or u.shape != v.shape:
                return float("inf")
            if u.numel() == 0:
                continue
            d = (u.double() - v.double()).abs().max() / u.double().abs().max().clamp_min(1e-30)
            worst = max(worst, float(d))
    return worst


__all__ = ["fold_graph", "GraphFoldResult", "RegionInfo"]
