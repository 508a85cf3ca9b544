"""Tracing for the graph folder: torch.fx with a fallback that leaves untraceable submodules opaque,
and an interpreter that records every node's value (float64) for constant folding and verification."""
from __future__ import annotations

import copy
import copy as _copy
import operator
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_map

from edgerep.fold.kernel import FOLD_DTYPE


class RootUntraceable(Exception):
    """The model's own ``forward`` (outside any submodule) cannot be traced symbolically."""


class _MutableProxy(fx.Proxy):
    """A proxy that records ``y[idx] = v`` as an ``operator.setitem`` node (DBB's BN-and-pad
    writes the border that way; plain fx proxies refuse item assignment)."""

    def __setitem__(self, idx: Any, value: Any) -> None:
        self.tracer.create_proxy("call_function", operator.setitem, (self, idx, value), {})

    def __iter__(self):  # type: ignore[override]
        """``torch.split(x, [a, b, c])`` has a known number of parts: iterate them (``zip(convs, xs)``)."""
        node = self.node
        sizes = node.args[1] if len(node.args) > 1 else node.kwargs.get("split_size_or_sections")
        if node.target in (torch.split, "split") and isinstance(sizes, (list, tuple)):
            return iter([self[i] for i in range(len(sizes))])
        return super().__iter__()


class _LeafTracer(fx.Tracer):
    """An fx tracer that treats the named submodules as leaves and remembers which submodule
    was being traced when tracing failed (the innermost one)."""

    def __init__(self, opaque: set[str] | None = None):  # no-arg: GraphModule unpickling re-traces with it
        super().__init__()
        self.opaque = opaque or set()
        self.culprit: str | None = None

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _MutableProxy(node, self)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.opaque or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.culprit is None:
                try:
                    self.culprit = self.path_of_module(m)
                except Exception:  # pragma: no cover - a module outside the hierarchy
                    self.culprit = None
            raise


def is_standard_leaf(module: nn.Module) -> bool:
    """A torch.nn layer fx never traces into (Conv2d, BatchNorm2d, ReLU...): nothing to fold inside."""
    return fx.Tracer().is_leaf_module(module, "")


def trace_with_fallback(model: nn.Module, max_attempts: int = 64) -> tuple[fx.GraphModule, dict[str, str]]:
    """Trace ``model``; every submodule whose forward cannot be traced (data-dependent control
    flow, unsupported Python) becomes an opaque leaf. Returns the GraphModule and
    ``{submodule path: why it is opaque}``. Raises ``RootUntraceable`` when the failure is in
    the model's own forward."""
    opaque: dict[str, str] = {}
    for _ in range(max_attempts):
        tracer = _LeafTracer(set(opaque))
        try:
            graph = tracer.trace(model)
        except Exception as e:  # noqa: BLE001 - any tracing failure means "leave it opaque"
            reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
            if not tracer.culprit:
                raise RootUntraceable(reason) from e
            if tracer.culprit in opaque:  # no progress: give up on the whole model
                raise RootUntraceable(reason) from e
            opaque[tracer.culprit] = reason
            continue
        gm = fx.GraphModule(tracer.root, graph, model.__class__.__name__)
        return gm, opaque
    raise RootUntraceable(f"more than {max_attempts} untraceable submodules")


def _clone(v: Any) -> Any:
    return tree_map(lambda t: t.detach().clone() if isinstance(t, Tensor) else t, v)


class Recorder(fx.Interpreter):
    """Runs a GraphModule and keeps a copy of every node's output (copies, so later in-place
    ops such as ``ReLU(inplace=True)`` do not rewrite what was recorded)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n.name] = _clone(out)
        target = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
        if target is not None and (n.op == "call_function" and n.target is operator.setitem or (
                n.op == "call_method" and str(n.target).endswith("_"))):
            # an in-place write: readers after it see the written tensor
            self.values[target.name] = _clone(self.env[target])
        return out


def to_double(module: nn.Module) -> nn.Module:
    """A float64 deep copy, tensor attributes that are neither parameters nor buffers included
    (fx stores traced tensor constants that way)."""
    return cast_floating(module, FOLD_DTYPE)


def cast_floating(module: nn.Module, dtype: torch.dtype, *, copy: bool = True) -> nn.Module:
    """``module`` (a deep copy unless ``copy=False``) with every floating tensor in ``dtype``: parameters,
    buffers and the plain tensor attributes fx stores traced constants in."""
    m = _copy.deepcopy(module) if copy else module
    m = m.to(dtype)
    for sub in m.modules():
        for k, v in list(vars(sub).items()):
            if isinstance(v, Tensor) and v.is_floating_point() and k not in ("_parameters", "_buffers"):
                setattr(sub, k, v.to(dtype))
    return m


@torch.no_grad()
def record(gm64: fx.GraphModule, x: Tensor) -> dict[str, Any]:
    """Every node's value when ``gm64`` runs on ``x`` (cast to float64)."""
    rec = Recorder(gm64)
    rec.run(x.to(FOLD_DTYPE))
    return rec.values


__all__ = ["RootUntraceable", "trace_with_fallback", "is_standard_leaf", "Recorder", "to_double", "cast_floating", "record"]
