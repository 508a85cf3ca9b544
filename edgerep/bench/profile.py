"""Where the time goes: the most expensive layers of one engine, named as the user knows them.

onnxruntime engines run a profiling session (``SessionOptions.enable_profiling``) and their kernels'
times are summed per node; torch engines run under ``torch.profiler`` with one labelled range per
leaf module. Node names of edgerep's ONNX files carry the folded module path (``/stage1/stage1.0/
conv/Conv_token_4`` or, fused with its ReLU, ``/stage1/stage1.0/act/Relu_output_0_nchwc``), so every
row maps back to a folded layer and, through the fold's layer map, to the train-time block that a
user would change first.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

TOP = 10


def layer_map(folded, train=None) -> dict[str, dict]:
    """Folded weighted layer path -> {"op", "block", "branches"}: the train-time block it came from.

    ``fold_model`` replaces each re-parameterizable block in place, so a folded layer's path starts
    with its train-time block's path; the block is the nearest such ancestor in ``train``."""
    from torch import nn

    modules = dict(train.named_modules()) if train is not None else {}
    out: dict[str, dict] = {}
    for name, m in folded.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        block, branches = None, []
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            t = modules.get(".".join(parts[:i]))
            if t is not None and hasattr(t, "branch_kernels"):
                branches = [n for n, c in t.named_children() if c is not None]
                block = f"{'.'.join(parts[:i])} ({type(t).__name__}: {', '.join(branches)})"
                break
        out[name] = {"op": type(m).__name__, "block": block, "branches": branches}
    return out


def layers_from_provenance(rows: list[dict]) -> dict[str, dict]:
    """The same map from the fold's provenance rows (``report["fold"]["provenance"]``)."""
    out = {}
    for r in rows:
        branches = list(r.get("branches") or {})
        block = r.get("name") or r.get("layer")
        if r.get("block"):
            block += f" ({r['block']}" + (f": {', '.join(branches)})" if branches else ")")
        out[r["layer"]] = {"op": r.get("kind"), "block": block, "branches": branches}
    return out


def _rows(per_run_us: dict[str, list[float]], ops: dict[str, str], layers: dict[str, dict], top: int,
          own_blocks: dict[str, str] | None = None, names: dict[str, str] | None = None) -> list[dict]:
    """Median time per run of each node (robust to a run the scheduler interrupted), top first;
    ``names`` maps the ONNX file's nodes and outputs to folded layers (``edgerep.fold.onnx_names``)."""
    from edgerep.fold.onnx_names import layer_of_node, module_path, resolve

    med = {node: float(np.median(v)) for node, v in per_run_us.items() if v}
    grand = sum(med.values()) or 1.0
    rows = []
    for node, us in sorted(med.items(), key=lambda kv: -kv[1])[:top]:
        path = node if own_blocks is not None else module_path(node)
        layer = resolve(path, layers) if own_blocks is not None else layer_of_node(node, names or {}, layers)
        info = layers.get(layer or "", {})
        block = (own_blocks or {}).get(node) or info.get("block")
        shown = path if own_blocks is not None else (layer or path)
        rows.append({"node": node, "op": ops.get(node), "layer": shown or node, "block": block,
                     "branches": info.get("branches", []), "ms_per_run": us / 1000.0, "share": us / grand})
    return rows


def _blocks(model) -> dict[str, str]:
    """Leaf module path -> its nearest re-parameterizable ancestor block, in ``model`` itself."""
    modules = dict(model.named_modules())
    out = {}
    for name, m in modules.items():
        if not name or list(m.children()):
            continue
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            t = modules.get(".".join(parts[:i]))
            if hasattr(t, "branch_kernels"):
                out[name] = f"{'.'.join(parts[:i])} ({type(t).__name__})"
                break
    return out


def profile_ort(engine, x: np.ndarray, *, runs: int = 20, layers: dict | None = None, top: int = TOP) -> dict:
    """onnxruntime's profiler on a session like ``engine``'s: per-node kernel time over ``runs``."""
    from edgerep.engines.onnxruntime_engine import OrtEngine

    with tempfile.TemporaryDirectory(prefix="edgerep-prof-") as tmp:
        prof = OrtEngine(engine.path, precision=engine.precision, threads=engine.threads,
                         optimization=engine.optimization, session_config=engine.session_config,
                         spinning="on" if engine.spinning else "off", profile_prefix=str(Path(tmp) / "ort"))
        for _ in range(3):
            prof.run(x)
        events = _ort_events(prof, x, runs)
    per_run: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            per_run[node].append(float(e.get("dur", 0)))
            ops[node] = (e.get("args") or {}).get("op_name")
    from edgerep.fold.onnx_names import node_layers

    names = node_layers(engine.path, layers) if layers else {}  # a fused ReLU belongs to the conv it follows
    return {"source": "onnxruntime profiler", "runs": runs, "statistic": "median per run",
            "top": _rows(per_run, ops, layers or {}, top, names=names)}


def _ort_events(prof, x: np.ndarray, runs: int) -> list[dict]:
    """Run ``runs`` times and read the profile; warm-up runs (before ``runs``) are dropped by count."""
    for _ in range(runs):
        prof.run(x)
    path = prof.session.end_profiling()
    events = json.loads(Path(path).read_text())
    node_runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if len(node_runs) > runs:  # keep the last ``runs`` model runs only
        start = node_runs[-runs]["ts"]
        events = [e for e in events if e.get("ts", 0) >= start]
    return events


def profile_torch(engine, x: np.ndarray, *, runs: int = 20, layers: dict | None = None, top: int = TOP) -> dict:
    """torch.profiler with one labelled range per leaf module: per-layer CPU time over ``runs``."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    model = engine.model
    open_ranges: dict[str, object] = {}
    handles = []
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    for name, m in leaves:
        def pre(_m, _inp, name=name):
            r = record_function(f"layer::{name}")
            r.__enter__()
            open_ranges[name] = r

        def post(_m, _inp, _out, name=name):
            open_ranges.pop(name).__exit__(None, None, None)

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        for _ in range(3):
            engine.run(x)
        with profile(activities=[ProfilerActivity.CPU]) as p:
            for _ in range(runs):
                engine.run(x)
    finally:
        for h in handles:
            h.remove()
    kinds = {n: type(m).__name__ for n, m in leaves}
    per_run: dict[str, list[float]] = defaultdict(list)
    for ev in p.events():
        if ev.name.startswith("layer::"):
            per_run[ev.name[len("layer::"):]].append(float(ev.cpu_time_total))
    return {"source": f"torch.profiler (torch {torch.__version__})", "runs": runs, "statistic": "median per run",
            "top": _rows(per_run, kinds, layers or {}, top, own_blocks=_blocks(model))}


def profile_engine(engine, x: np.ndarray, *, runs: int = 20, layers: dict | None = None, top: int = TOP) -> dict:
    """The ``top`` most expensive layers of ``engine`` on ``x`` with their share of the profiled time."""
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.engines.torch_engine import TorchEngine

    if isinstance(engine, OrtEngine):
        return profile_ort(engine, x, runs=runs, layers=layers, top=top)
    if isinstance(engine, TorchEngine):
        return profile_torch(engine, x, runs=runs, layers=layers, top=top)
    return {"source": None, "runs": 0, "top": [], "note": f"no profiler for {type(engine).__name__}"}
