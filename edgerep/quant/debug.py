"""``edgerep debug``: which layer breaks INT8, measured layer by layer, and the smallest float set that fixes it.

Two per-layer measures, both against the FP32 file the INT8 file was quantized from (the bundle's FP32
file, cross-layer equalized when the quantizer equalized it: equalization rescales channels, so
unequalized intermediates are not comparable), both where the next layer reads the layer's output:

* **own** (isolated) error, which names the culprit: the layer's region of the INT8 file (its weight and
  bias Q/DQ, the Q/DQ pairs its input passes through since the previous layers, the layer) fed with the
  FP32 reference's tensors, so nothing upstream is quantized (``edgerep.quant.debug_isolated``: one
  reference pass plus one pass per layer over at most ``isolated_samples`` selection images). Per layer:
  ``isolated_sqnr_db`` / ``isolated_cosine`` / ``isolated_nsr``.
* **accumulated** error, the curve as the INT8 file runs: both files run on every selection image with
  every layer's output exposed; per layer ``sqnr_db`` / ``cosine`` of INT8 vs FP32, the input's SQNR (the
  worst of the layers it reads), ``drop_db`` = input SQNR - output SQNR and ``added_nsr`` = output
  noise-to-signal ratio - input noise-to-signal ratio. It mixes every upstream layer's error into each
  layer's number, so it is shown, not used to name the culprit.

A layer is **broken** when its own SQNR is below ``broken_db`` (default 20 dB: its quantizers alone leave
noise at 1% of its output's power); the culprit is the first broken layer in graph order (where the
error jumps: later layers read its error), or, when none is broken, the layer with the lowest own SQNR.
It is mapped through the fold's provenance to the train-time block and through the check's attribution
to a branch. Exposing outputs changes onnxruntime's fusions, so per-layer numbers come from *unfused*
copies (graph optimizations off: the QDQ graph simulated in float) and the end-to-end output fidelity
from the *optimized* session as shipped; the output says which is which.

The search (as Polygraphy's ``debug precision``) ranks layers by their own error (``isolated_nsr``) on the
all-INT8 file of the bundle's recipe, bisects the number of top-ranked layers kept in float, then drops
every layer whose return to INT8 still meets the budget until none can go: the result meets the budget
and putting any one of its layers back in INT8 misses it (each of those files is written and scored).
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.quant.debug_isolated import SAMPLES as ISOLATED_SAMPLES
from edgerep.quant.onnx_graph import consumers
from edgerep.quant.debug_isolated import isolated_sums
from edgerep.quant.onnx_outputs import with_outputs

SCHEMA = "edgerep.debug/2"
#: ops a layer's output passes through before the next layer reads it
HANDED_THROUGH = ("Relu", "Clip", "LeakyRelu", "QuantizeLinear", "DequantizeLinear", "Identity")
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
PER_LAYER_NOTE = "per-layer: QDQ simulated with fusions off; end-to-end: the optimized session"
#: a layer whose own (isolated) SQNR is below this is broken: its quantizers alone leave noise at 1% of its power
BROKEN_DB = 20.0
#: which number is which, for the JSON and the page
MEASURES = {
    "isolated_sqnr_db": "own error: only this layer's quantizers (weights, bias, the Q/DQ its input passes "
                        "through since the previous layers) on the FP32 reference's input; names the culprit",
    "sqnr_db": "accumulated error: the INT8 file as it runs (every upstream layer's error included)",
    "added_nsr": "accumulated output noise-to-signal ratio minus its input's",
}
CULPRIT_RULES = {"first-broken": "the first layer (graph order) whose own SQNR is below the threshold",
                 "worst-own": "no layer's own SQNR is below the threshold: the layer with the lowest own SQNR",
                 "none": "no layer has a measured own error"}
BATCH = 64


# ---- the bundle ---------------------------------------------------------------------------------
@dataclass
class DebugBundle:
    """What ``debug`` reads from a bundle directory."""

    path: Path
    fp32: Path
    int8: Path
    report: dict
    manifest: dict
    splits: dict
    int8_given: bool = False  # --int8: not the bundle's own file (no recipe to search with)

    @property
    def quantization(self) -> dict:
        return self.report.get("quantization") or {}

    @property
    def session_config(self) -> dict:
        return dict((self.quantization.get("cpu_policy") or {}).get("session_config") or {})


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise EdgerepError(f"{path}: no {what} in the bundle", hint="name a bundle written by edgerep deploy")
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise EdgerepError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(d, dict):
        raise EdgerepError(f"{path}: not a JSON object")
    return d


def open_bundle(bundle: str | Path, int8: str | Path | None = None) -> DebugBundle:
    """The bundle's FP32 / INT8 files, report, manifest and splits; a missing piece is one ``EdgerepError``."""
    b = Path(bundle)
    if not b.exists():
        raise EdgerepError(f"{b}: no such bundle directory")
    if not b.is_dir():
        raise EdgerepError(f"{b}: not a bundle directory", hint="name the directory edgerep deploy wrote")
    manifest = _read_json(b / "manifest.json", "manifest.json")
    report = _read_json(b / "report.json", "report.json")
    splits = _read_json(b / "splits.json", "splits.json")
    files = manifest.get("files") or {}
    fp32 = b / str(files.get("fp32_onnx") or "model.fp32.onnx")
    own = b / str((report.get("quantization") or {}).get("files", {}).get("cpu") or "model.int8.onnx")
    q = Path(int8) if int8 is not None else own
    for p, flag in ((fp32, "the FP32 file"), (q, "--int8" if int8 is not None else "the INT8 file")):
        if not p.is_file():
            raise EdgerepError(f"{p}: {flag} is missing", hint="name a complete bundle (edgerep deploy writes both)")
    return DebugBundle(b, fp32, q, report, manifest, splits, int8_given=int8 is not None and q.resolve() != own.resolve())


# ---- the data -----------------------------------------------------------------------------------
def _meta(bundle: DebugBundle):
    from types import SimpleNamespace

    pre = bundle.manifest.get("preprocessing") or bundle.report.get("preprocessing") or {}
    model = bundle.report.get("model") or {}
    return SimpleNamespace(input_shape=tuple(pre.get("input_shape") or model.get("input_shape") or ()),
                           mean=tuple(pre.get("mean") or ()), std=tuple(pre.get("std") or ()),
                           scale=pre.get("scale"), resize=pre.get("resize"), channel_order=pre.get("channel_order"),
                           class_names=None, dataset=model.get("dataset"),
                           extra={"preprocessing_source": pre.get("source", "checkpoint")})


@dataclass
class DebugData:
    x: np.ndarray
    y: np.ndarray | None
    role: str  # selection | test
    source: str  # in words, for the output


def load_data(bundle: DebugBundle, data: str | None = None, use_test: bool = False,
              limit: int | None = None) -> DebugData:
    """The bundle's selection images re-opened as deploy split them (their ids must equal splits.json's),
    or the selection role of ``data`` under the same role rules; the test split only with ``use_test``."""
    from edgerep.data.splits import resolve_splits

    meta = _meta(bundle)
    settings = bundle.manifest.get("settings") or {}
    inputs = bundle.manifest.get("inputs") or {}
    role = "test" if use_test else "selection"
    if data is not None:
        sp = resolve_splits(data=data, meta=meta)
        how = f"--data {data}: its {role} set ({sp.sources[role].how})"
    else:
        calib_split = "calib"
        if settings.get("calib_recipe"):
            from edgerep.recipes import load_recipe

            rec = load_recipe(settings["calib_recipe"])
            calib_split = rec.split if (settings.get("calib_data") or settings.get("data") or meta.dataset) == rec.data \
                else calib_split
        spec = settings.get("data") or meta.dataset or inputs.get("selection_data")
        sp = resolve_splits(data=spec, calib=settings.get("calib_data"), val=settings.get("val_data"),
                            test=settings.get("eval_data"), calib_split=calib_split, meta=meta,
                            allow_overlap=bool(settings.get("allow_overlap")))
        want = bundle.splits.get(role) or []
        got = sp.sets[role].sample_ids()
        if list(got) != list(want):
            raise EdgerepError(f"{bundle.path / 'splits.json'}: the {role} set re-opened from "
                               f"{sp.sources[role].spec} ({sp.sources[role].how}) is not the one splits.json names "
                               f"({len(got)} vs {len(want)} samples)",
                               hint="name the images with --data (its selection role is used)")
        how = f"the bundle's {role} set ({sp.sources[role].spec}, {sp.sources[role].how}; ids as in splits.json)"
    ds = sp.sets[role]
    xs, ys = [], []
    for xb, yb in ds.batches(BATCH, limit=limit):
        xs.append(np.asarray(xb, dtype=np.float32))
        if yb is not None:
            ys.append(np.asarray(yb))
    if not xs:
        raise EdgerepError(f"the {role} set ({how}) is empty")
    y = np.concatenate(ys) if ys and len(ys) == len(xs) else None
    if use_test:
        how = f"TEST split (--use-test; the numbers are not held out from what is reported): {how}"
    return DebugData(np.concatenate(xs), y, role, how)


# ---- graphs -------------------------------------------------------------------------------------
def _load(path: Path):
    import onnx

    from edgerep.quant.conv_pad import unpad
    from edgerep.quant.qdq import _ensure_node_names

    m = onnx.load(str(path))
    unpad(m)  # narrow convs padded for onnxruntime's fast kernel: layer for layer as the FP32 file (same function)
    _ensure_node_names(m)
    return m


def handed_tensor(model, node) -> str:
    """The float tensor the next layer reads from ``node``: its output walked through ReLU / Q / DQ while one
    consumer reads it (a graph output stops the walk). A walk that stops on a quantized tensor (a CPU file's PReLU
    on the integers reads it twice; a pixel shuffle moved onto the integers reads it) ends at its dequantization
    when one reads it, else at the float tensor the QuantizeLinear quantized: never an integer tensor, which
    compared with the FP32 file's float one gave SQNRs of -60 dB."""
    cons = consumers(model)
    outs = {o.name for o in model.graph.output}
    q, t = node, node.output[0]  # q: the node that wrote t
    while t not in outs and len(cons.get(t, [])) == 1:
        c = cons[t][0]
        if c.op_type not in HANDED_THROUGH or c.input[0] != t:
            break
        q, t = c, c.output[0]
    if q.op_type == "QuantizeLinear" and t not in outs:
        dq = next((c for c in cons.get(t, []) if c.op_type == "DequantizeLinear" and c.input[0] == t), None)
        return dq.output[0] if dq is not None else q.input[0]
    return t


def _weight_source(model, node) -> str | None:
    """The name of ``node``'s float weight (through its DequantizeLinear in a QDQ file), or None."""
    inits = {i.name for i in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    if len(node.input) < 2:
        return None
    w = node.input[1]
    if w in inits:
        return w
    p = prod.get(w)
    if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in inits:
        q = p.input[0]
        return q[: -len("_quantized")] if q.endswith("_quantized") else q
    return None


def weighted_nodes(model) -> list:
    """The layers: Conv / Gemm / MatMul nodes with a constant (or dequantized constant) weight, in graph order."""
    return [n for n in model.graph.node if n.op_type in WEIGHTED and _weight_source(model, n) is not None]


def _dequantized(model, dq_node) -> np.ndarray:
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    q = numpy_helper.to_array(inits[dq_node.input[0]]).astype(np.float64)
    s = numpy_helper.to_array(inits[dq_node.input[1]]).astype(np.float64)
    z = (numpy_helper.to_array(inits[dq_node.input[2]]).astype(np.float64)
         if len(dq_node.input) > 2 and dq_node.input[2] in inits else np.zeros_like(s))
    axis = next((a.i for a in dq_node.attribute if a.name == "axis"), 1)
    if s.ndim == 1 and s.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    return (q - z) * s, s


def weights_match(int8_model, fp32_model) -> tuple[bool, str]:
    """Whether every quantized weight of ``int8_model`` is ``fp32_model``'s rounded (within half a step)."""
    from onnx import numpy_helper

    f_inits = {i.name: i for i in fp32_model.graph.initializer}
    f_nodes = {n.name for n in fp32_model.graph.node}
    prod = {o: n for n in int8_model.graph.node for o in n.output}
    checked = 0
    for n in weighted_nodes(int8_model):
        if n.name not in f_nodes:  # a layer the CPU file's rewrites added (a -prelu8 file's slope convs)
            continue
        p = prod.get(n.input[1])
        if p is None or p.op_type != "DequantizeLinear":
            continue
        name = _weight_source(int8_model, n)
        if name not in f_inits:
            return False, f"weight {name} of {n.name} is not in the FP32 file"
        w = numpy_helper.to_array(f_inits[name]).astype(np.float64)
        deq, s = _dequantized(int8_model, p)
        if deq.shape != w.shape:
            return False, f"weight {name} has shape {deq.shape} in the INT8 file, {w.shape} in the FP32 file"
        tol = 0.5 * np.broadcast_to(s, deq.shape) * (1 + 1e-3) + 1e-7 * np.abs(w).max()
        worst = float(np.max(np.abs(deq - w) - tol))
        if worst > 0:
            return False, f"{n.name}: weights differ from the FP32 file's by more than half a quantization step"
        checked += 1
    return checked > 0, f"{checked} quantized weights within half a step of the FP32 file's"


def reference_file(bundle: DebugBundle, tmp: Path) -> tuple[Path, str]:
    """The FP32 file the INT8 file was quantized from: the bundle's, or its cross-layer equalized form
    (rebuilt as the quantizer built it). Which one is proven by the weights; else ``EdgerepError``."""
    import onnx

    from edgerep.quant.equalize import equalize_model

    q = _load(bundle.int8)
    base = _load(bundle.fp32)
    eq_info = bundle.quantization.get("equalization") or {}
    cands: list[tuple[str, Any]] = []
    eq = _load(bundle.fp32)
    rep = equalize_model(eq, iterations=int(eq_info.get("iterations") or 4))
    if rep.pairs:
        cands.append(("the bundle's FP32 file, cross-layer equalized as the quantizer did", eq))
    cands.append(("the bundle's FP32 file", base))
    if not eq_info.get("applied"):
        cands.reverse()
    why = []
    for words, m in cands:
        ok, note = weights_match(q, m)
        if ok:
            path = tmp / "reference.fp32.onnx"
            onnx.save(m, str(path))
            return path, f"{words} ({note})"
        why.append(f"{words}: {note}")
    raise EdgerepError(f"{bundle.int8}: not quantized from {bundle.fp32} ({'; '.join(why)})",
                       hint="debug an INT8 file written from the bundle's FP32 file")


# ---- running ------------------------------------------------------------------------------------
def _session(model_or_path, optimization: str, session_config: dict | None = None, threads: int | None = None):
    import onnxruntime as ort

    from edgerep.engines.onnxruntime_engine import OPT_LEVELS

    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPT_LEVELS[optimization])
    if threads:
        so.intra_op_num_threads = threads
    for k, v in (session_config or {}).items():
        so.add_session_config_entry(str(k), str(v))
    src = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _batches(sess, x: np.ndarray, names: list[str]):
    """``{name: output}`` of ``sess`` per batch of ``x`` (a static batch is zero-padded, then cut)."""
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    batch = fixed or BATCH
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        n = len(xb)
        if fixed and n < fixed:
            xb = np.concatenate([xb, np.zeros((fixed - n, *xb.shape[1:]), dtype=xb.dtype)])
        yield {name: np.asarray(v)[:n] for name, v in zip(names, sess.run(names, {inp.name: xb}))}


def _run(sess, x: np.ndarray, names: list[str] | None = None) -> dict[str, list[np.ndarray]]:
    """Outputs ``names`` (default: all) of ``sess`` on ``x``, batch by batch."""
    names = names or [o.name for o in sess.get_outputs()]
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for got in _batches(sess, x, names):
        for k, v in got.items():
            out[k].append(v)
    return out


class _Sums:
    """Running sums of one tensor pair (reference, INT8) over batches: memory stays one batch."""

    def __init__(self) -> None:
        self.s = self.g = self.d = self.n = 0.0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise EdgerepError(f"a layer's output has shape {b.shape} in the INT8 file, {a.shape} in the FP32 file")
        self.s += float(np.sum(a * a))
        self.g += float(np.sum(b * b))
        self.d += float(np.sum(a * b))
        self.n += float(np.sum((a - b) ** 2))


@dataclass
class Fidelity:
    """INT8 vs FP32 on one tensor (or all outputs together) over all images."""

    sqnr_db: float
    cosine: float
    nsr: float  # noise power / signal power

    @classmethod
    def of(cls, ref: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> "Fidelity":
        acc = _Sums()
        for a, b in zip(ref, got):
            acc.add(a, b)
        return cls.from_sums(acc)

    @classmethod
    def from_sums(cls, acc: "_Sums") -> "Fidelity":
        s, n, d, g = acc.s, acc.n, acc.d, acc.g
        nsr = n / s if s > 0 else (0.0 if n == 0 else math.inf)
        sqnr = math.inf if nsr == 0 else (-10.0 * math.log10(nsr) if math.isfinite(nsr) else -math.inf)
        cos = d / math.sqrt(s * g) if s > 0 and g > 0 else (1.0 if s == g == 0 else 0.0)
        return cls(sqnr, cos, nsr)


@dataclass
class LayerRow:
    """One layer's error, where the next layer reads it: accumulated (``sqnr_db`` ... ``added_nsr``: the INT8
    file as it runs) and its own (``isolated_*``: only its quantizers, the FP32 reference's input)."""

    index: int
    node: str
    layer: str | None  # folded layer (module path) or None when the provenance does not name it
    block: str | None  # the train-time name (provenance "name")
    kind: str | None
    precision: str  # int8 | float (no Q/DQ on its weight)
    tensor_int8: str
    tensor_fp32: str
    sqnr_db: float
    cosine: float
    input_sqnr_db: float
    drop_db: float | None  # input SQNR - output SQNR (None where the input is exact)
    added_nsr: float  # output NSR - input NSR
    branch: str | None = None  # the check's dominant branch (its words), where the check named one
    branch_note: str | None = None
    check_channels: list[int] = field(default_factory=list)  # the check's outlier (range-setting) channels
    isolated_sqnr_db: float | None = None  # own error: only this layer's quantizers (None: not measured)
    isolated_cosine: float | None = None
    isolated_nsr: float | None = None


def _input_rows(model, node, row_of: dict[str, int]) -> list[int | None]:
    """The layers ``node`` reads (walking back through any op); None for a graph input."""
    prod = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = {i.name for i in model.graph.input} - inits
    found: list[int | None] = []
    seen: set[str] = set()
    stack = [node.input[0]] if node.input else []
    while stack:
        t = stack.pop()
        if t in seen or t in inits or not t:
            continue
        seen.add(t)
        if t in graph_inputs:
            found.append(None)
            continue
        p = prod.get(t)
        if p is None:
            continue
        if p.name in row_of:
            found.append(row_of[p.name])
            continue
        stack.extend(i for i in p.input if i not in inits)
    return found


def _names(bundle: DebugBundle, int8_model_path: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Node -> provenance row; train-time name -> the check's layer row."""
    from edgerep.fold.onnx_names import provenance_names

    rows = ((bundle.report.get("fold") or {}).get("provenance")) or []
    by_node = provenance_names(int8_model_path, rows) if rows else {}
    checks = {r.get("name"): r for r in ((bundle.report.get("check") or {}).get("layers") or []) if isinstance(r, dict)}
    return by_node, checks


def layer_table(bundle: DebugBundle, reference: Path, int8: Path, x: np.ndarray,
                threads: int | None = None, isolated_samples: int = 0) -> list[LayerRow]:
    """Per-layer fidelity of ``int8`` vs ``reference``: accumulated on ``x`` (both unfused, every layer's
    output exposed) and, with ``isolated_samples``, each layer's own on the first that many images."""
    q = _load(int8)
    f = _load(reference)
    f_nodes = {n.name: n for n in f.graph.node}
    layers = [n for n in weighted_nodes(q) if n.name in f_nodes]
    if not layers:
        raise EdgerepError(f"{int8}: no layer shares a name with {reference}")
    prod = {o: n for n in q.graph.node for o in n.output}
    q_t = [handed_tensor(q, n) for n in layers]
    f_t = [handed_tensor(f, f_nodes[n.name]) for n in layers]
    fs = _session(with_outputs(f, f_t), "disable", threads=threads)
    qs = _session(with_outputs(q, q_t), "disable", threads=threads)
    sums = [_Sums() for _ in layers]
    for fb, qb in zip(_batches(fs, x, list(dict.fromkeys(f_t))), _batches(qs, x, list(dict.fromkeys(q_t)))):
        for i in range(len(layers)):
            sums[i].add(fb[f_t[i]], qb[q_t[i]])
    own = (isolated_sums(q, f, [n.name for n in layers], f_t, x[:isolated_samples], _session, _Sums, threads)
           if isolated_samples > 0 else [None] * len(layers))
    by_node, checks = _names(bundle, int8)
    row_of = {n.name: i for i, n in enumerate(layers)}
    out: list[LayerRow] = []
    for i, n in enumerate(layers):
        fid = Fidelity.from_sums(sums[i])
        iso = Fidelity.from_sums(own[i]) if own[i] is not None else None
        ins = _input_rows(q, n, row_of)
        in_nsr = max([0.0 if j is None else _nsr(out[j].sqnr_db) for j in ins] or [0.0])
        in_sqnr = math.inf if in_nsr == 0 else -10.0 * math.log10(in_nsr)
        prov = by_node.get(n.name) or {}
        name = prov.get("name")
        chk = checks.get(name) or {}
        attr = chk.get("attribution") or {}
        dom = attr.get("dominant_branch")
        w = prod.get(n.input[1])
        out.append(LayerRow(i, n.name, prov.get("layer"), name, prov.get("kind"),
                            "int8" if w is not None and w.op_type == "DequantizeLinear" else "float",
                            q_t[i], f_t[i], fid.sqnr_db, fid.cosine, in_sqnr,
                            None if not math.isfinite(in_sqnr) else in_sqnr - fid.sqnr_db,
                            fid.nsr - in_nsr,
                            (attr.get("branches") or {}).get(dom, dom) if dom else None,
                            attr.get("summary") if attr else None,
                            [int(c["channel"]) for c in (attr.get("channels") or [])[:int(attr.get("outlier_channels")
                                                                                          or 0)]],
                            iso.sqnr_db if iso else None, iso.cosine if iso else None, iso.nsr if iso else None))
    return out


def _nsr(sqnr_db: float) -> float:
    return 0.0 if sqnr_db == math.inf else 10.0 ** (-sqnr_db / 10.0)


@dataclass
class Culprit:
    """The layer ``debug`` names, and by which rule."""

    row: LayerRow | None
    rule: str  # first-broken | worst-own | none
    broken: list[str]  # nodes whose own SQNR is below the threshold, in graph order
    threshold_db: float


def find_culprit(rows: Sequence[LayerRow], broken_db: float = BROKEN_DB) -> Culprit:
    """The first layer (graph order) whose own SQNR is below ``broken_db``; when none is, the layer with the
    lowest own SQNR (the first on a tie); none when every layer is exact or own errors were not measured."""
    measured = [r for r in rows if r.isolated_sqnr_db is not None]
    broken = [r for r in measured if r.isolated_sqnr_db < broken_db]
    if broken:
        return Culprit(broken[0], "first-broken", [r.node for r in broken], broken_db)
    best = None
    for r in measured:
        if math.isfinite(r.isolated_sqnr_db) and (best is None or r.isolated_sqnr_db < best.isolated_sqnr_db):
            best = r
    return Culprit(best, "worst-own" if best else "none", [], broken_db)


# ---- scoring a file ------------------------------------------------------------------------------
@dataclass
class Score:
    """One file's end-to-end fidelity on the optimized session."""

    sqnr_db: float
    cosine: float
    top1: float | None = None
    top1_drop: float | None = None  # points vs the FP32 file on the same images


class Scorer:
    """Scores a file against the FP32 file's outputs (optimized sessions, the bundle's session config)."""

    def __init__(self, fp32: Path, x: np.ndarray, y: np.ndarray | None, session_config: dict,
                 threads: int | None = None):
        self.x, self.y, self.cfg, self.threads = x, y, session_config, threads
        s = _session(fp32, "all", threads=threads)
        self.names = [o.name for o in s.get_outputs()]  # every output counts (a detector's heads, ...)
        self.ref = _run(s, x)
        ref = np.concatenate(self.ref[self.names[0]])
        self.classify = y is not None and len(self.names) == 1 and ref.ndim == 2 and ref.shape[1] > 1
        self.ref_top1 = float(100.0 * np.mean(ref.argmax(1) == y)) if self.classify else None

    def __call__(self, path: Path) -> Score:
        s = _session(path, "all", self.cfg, self.threads)
        names = [o.name for o in s.get_outputs()]
        if len(names) != len(self.names):
            raise EdgerepError(f"{path}: {len(names)} outputs, the FP32 file has {len(self.names)}")
        got = _run(s, self.x, names)
        acc = _Sums()
        for mine, theirs in zip(self.names, names):  # outputs in graph order
            for a, b in zip(self.ref[mine], got[theirs]):
                acc.add(a, b)
        fid = Fidelity.from_sums(acc)
        if not self.classify:
            return Score(fid.sqnr_db, fid.cosine)
        top1 = float(100.0 * np.mean(np.concatenate(got[names[0]]).argmax(1) == self.y))
        return Score(fid.sqnr_db, fid.cosine, top1, self.ref_top1 - top1)


@dataclass
class Budget:
    """``max_drop`` top-1 points (labelled classifiers) or ``min_sqnr_db`` of the output."""

    max_drop: float | None = None
    min_sqnr_db: float | None = None

    def met(self, s: Score) -> bool:
        if self.max_drop is not None:
            return s.top1_drop is not None and s.top1_drop <= self.max_drop + 1e-9
        return s.sqnr_db >= (self.min_sqnr_db or 0.0)

    def words(self) -> str:
        if self.max_drop is not None:
            return f"top-1 drop <= {self.max_drop:g} points vs the FP32 file"
        return f"output SQNR >= {self.min_sqnr_db:g} dB vs the FP32 file"


# ---- the search ---------------------------------------------------------------------------------
@dataclass
class Step:
    step: int
    phase: str  # start | all-float | bisect | prune
    float_layers: list[str]
    sqnr_db: float
    cosine: float
    top1_drop: float | None
    met: bool


@dataclass
class SearchResult:
    budget: str
    ranking: list[str]  # nodes, most added error first (all-INT8 file of the bundle's recipe)
    steps: list[Step] = field(default_factory=list)
    float_layers: list[str] | None = None  # None: the budget is not met even with every layer in float
    met: bool = False
    files_written: int = 0
    files_scored: int = 0
    guarantee: str = ""


def search_float_set(ranking: Sequence[str], score: Callable[[list[str]], Score], budget: Budget,
                     say: Callable[[str], None] = lambda m: None, names: dict[str, str] | None = None) -> SearchResult:
    """Bisect the number of top-ranked layers kept in float, then prune to a set from which no single
    layer can return to INT8 within ``budget``. ``score(float_layers)`` writes and scores one file."""
    names = names or {}
    res = SearchResult(budget.words(), list(ranking))
    cache: dict[frozenset, Score] = {}

    def measure(layers: list[str], phase: str) -> bool:
        key = frozenset(layers)
        again = key in cache
        if not again:
            cache[key] = (score(list(layers)), len(res.steps) + 1)
            res.files_written += 1
            res.files_scored += 1
        s, first = cache[key]
        ok = budget.met(s)
        st = Step(len(res.steps) + 1, phase, list(layers), s.sqnr_db, s.cosine, s.top1_drop, ok)
        res.steps.append(st)
        shown = ", ".join(names.get(n, n) for n in layers) or "none"
        drop = f"top-1 drop {s.top1_drop:+.2f} points, " if s.top1_drop is not None else ""
        say(f"step {st.step} ({phase}): {len(layers)} in float [{shown}]: {drop}output SQNR {s.sqnr_db:.1f} dB, "
            f"cosine {s.cosine:.5f} -> {'meets' if ok else 'misses'} the budget"
            + (f" (as measured at step {first})" if again else ""))
        return ok

    ranked = list(ranking)
    if measure([], "start"):
        res.float_layers, res.met = [], True
        res.guarantee = "the all-INT8 file meets the budget: no layer needs float"
        return res
    if not measure(ranked, "all-float"):
        res.guarantee = "even with every layer in float the budget is missed (the float set cannot fix it)"
        return res
    lo, hi = 0, len(ranked)  # lo misses, hi meets
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if measure(ranked[:mid], "bisect"):
            hi = mid
        else:
            lo = mid
    kept = ranked[:hi]
    changed = True
    while changed and len(kept) > 1:
        changed = False
        for n in reversed(list(kept)):  # least-ranked first
            trial = [k for k in kept if k != n]
            if measure(trial, "prune"):
                kept, changed = trial, True
    res.float_layers, res.met = kept, True
    res.guarantee = ("meets the budget; each of its layers put back in INT8 alone misses it (measured); among the "
                     f"top-k prefixes of the ranking, {hi} is the smallest that meets it ({hi - 1} measured missing)")
    return res


# ---- the bundle's recipe --------------------------------------------------------------------------
@dataclass
class Recipe:
    """What the bundle's INT8 file was written from, to write it again with other layers in float."""

    source: Path
    calibration: Any
    config: Any
    excluded: list[str]
    reproduced: bool
    note: str

    def write(self, out: Path, float_layers: Sequence[str]) -> None:
        from edgerep.quant.qdq import write_qdq

        write_qdq(self.source, out, self.calibration, self.config, exclude_nodes=list(float_layers))


def bundle_recipe(bundle: DebugBundle, source: Path, tmp: Path) -> Recipe | None:
    """The bundle's calibration (calibration/*.json with the report's key) and CPU QDQ settings; the INT8
    file written again from them must equal the bundle's initializer for initializer. None (with why in
    ``Recipe.note``) where that cannot be done."""
    from edgerep.quant.calibrate import CalibrationResult
    from edgerep.quant.qdq import QdqConfig

    q = bundle.quantization
    key = (q.get("calibration") or {}).get("key")
    pol = q.get("cpu_policy") or {}
    cal = None
    for p in sorted((bundle.path / "calibration").glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if d.get("key") == key:
            cal = CalibrationResult.from_json(d, str(p))
            break
    if cal is None or not pol.get("qdq"):
        why = "no calibration file with the report's key in calibration/" if cal is None else "no CPU policy"
        return Recipe(source, None, None, [], False, why)
    cfg = QdqConfig(**pol["qdq"])
    excluded = [e["node"] for e in q.get("excluded_nodes") or [] if e.get("target", "cpu") == "cpu"]
    rec = Recipe(source, cal, cfg, excluded, False, "")
    probe = tmp / "reproduce.int8.onnx"
    rec.write(probe, excluded)
    same = _same_initializers(probe, bundle.int8)
    rec.reproduced = same
    rec.note = ("the bundle's INT8 file is reproduced exactly from its calibration and QDQ settings" if same else
                "the INT8 file written from the bundle's calibration and QDQ settings differs from the bundle's")
    return rec


def _same_initializers(a: Path, b: Path) -> bool:
    from onnx import numpy_helper

    ma, mb = _load(a), _load(b)
    ia = {i.name: numpy_helper.to_array(i) for i in ma.graph.initializer}
    ib = {i.name: numpy_helper.to_array(i) for i in mb.graph.initializer}
    return ia.keys() == ib.keys() and all(np.array_equal(ia[k], ib[k]) for k in ia)


# ---- the whole command ----------------------------------------------------------------------------
@dataclass
class DebugResult:
    bundle: str
    int8: str
    reference: str
    data: dict
    note: str
    end_to_end: dict
    layers: list[LayerRow]
    culprit: Culprit
    isolated: dict  # how the own errors were measured (images, passes)
    search: SearchResult | None
    search_note: str
    excluded_in_bundle: list[str]

    def to_dict(self) -> dict:
        """The ``--json`` document (schema ``edgerep.debug/2``): infinite SQNRs are null."""
        def clean(v):
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {k: clean(w) for k, w in v.items()}
            if isinstance(v, list):
                return [clean(w) for w in v]
            return v

        c = self.culprit
        return clean({"schema": SCHEMA, "bundle": self.bundle, "int8": self.int8, "reference": self.reference,
                      "data": self.data, "note": self.note, "end_to_end": self.end_to_end,
                      "measures": MEASURES, "isolated": self.isolated,
                      "layers": [asdict(r) for r in self.layers],
                      "culprit": asdict(c.row) if c.row else None, "culprit_rule": CULPRIT_RULES[c.rule],
                      "broken": c.broken, "broken_below_db": c.threshold_db,
                      "search": asdict(self.search) if self.search else None, "search_note": self.search_note,
                      "excluded_in_bundle": self.excluded_in_bundle,
                      "result": {"culprit_node": c.row.node if c.row else None,
                                 "culprit_block": c.row.block if c.row else None,
                                 "culprit_branch": c.row.branch if c.row else None,
                                 "float_layers": self.search.float_layers if self.search else None,
                                 "budget_met": self.search.met if self.search else None}})


def debug_bundle(bundle: str | Path, *, int8: str | Path | None = None, data: str | None = None,
                 use_test: bool = False, limit: int | None = None, search: bool = True,
                 max_drop: float | None = None, min_sqnr_db: float | None = None, threads: int | None = None,
                 isolated_samples: int = ISOLATED_SAMPLES, broken_db: float = BROKEN_DB,
                 say: Callable[[str], None] = lambda m: None) -> DebugResult:
    """Per-layer INT8 error of a bundle (accumulated, and each layer's own on the first ``isolated_samples``
    images), the culprit, and (``search``) the smallest float set within budget."""
    if isolated_samples < 1:
        raise EdgerepError(f"--isolated-samples must be positive, got {isolated_samples}")
    b = open_bundle(bundle, int8)
    d = load_data(b, data, use_test, limit)
    say(f"data: {len(d.x)} images, {d.source}")
    with tempfile.TemporaryDirectory(prefix="edgerep-debug-") as tmpd:
        tmp = Path(tmpd)
        ref, ref_note = reference_file(b, tmp)
        say(f"reference: {ref_note}")
        rows = layer_table(b, ref, b.int8, d.x, threads, isolated_samples)
        n_iso = min(isolated_samples, len(d.x))
        isolated = {"images": n_iso, "passes": 1 + len(rows),
                    "how": f"1 reference pass + 1 pass per layer ({len(rows)}) over the first {n_iso} images"}
        say(f"own errors: {isolated['how']}")
        culprit = find_culprit(rows, broken_db)
        scorer = Scorer(b.fp32, d.x, d.y, b.session_config, threads)
        e2e = scorer(b.int8)
        end_to_end = {"sqnr_db": e2e.sqnr_db, "cosine": e2e.cosine, "top1": e2e.top1, "top1_drop": e2e.top1_drop,
                      "fp32_top1": scorer.ref_top1, "session": "optimized (graph optimizations all)",
                      "session_config": b.session_config}
        result = DebugResult(str(b.path), str(b.int8), ref_note,
                             {"role": d.role, "images": int(len(d.x)), "labelled": d.y is not None, "source": d.source},
                             PER_LAYER_NOTE, end_to_end, rows, culprit, isolated, None, "", [])
        budget = _budget(b, scorer, max_drop, min_sqnr_db)
        rec = None if b.int8_given else bundle_recipe(b, ref, tmp)
        if rec is not None:
            result.excluded_in_bundle = rec.excluded
        if not search:
            result.search_note = "not asked (--no-search)"
        elif b.int8_given:
            result.search_note = "--int8 names a file the bundle's recipe did not write: no search"
        elif rec is None or rec.calibration is None:
            result.search_note = f"no search: {rec.note if rec else 'no recipe'}"
        elif not rec.reproduced:
            result.search_note = f"no search: {rec.note}"
        else:
            result.search_note = rec.note
            all_int8 = tmp / "all-int8.onnx"
            if rec.excluded:
                rec.write(all_int8, [])
                ranked_rows = layer_table(b, ref, all_int8, d.x, threads, isolated_samples)
            else:
                ranked_rows = rows
            ranking = [r.node for r in sorted(ranked_rows, key=lambda r: (-r.isolated_nsr, r.index))]
            names = {r.node: r.block or r.node for r in ranked_rows}
            probe = tmp / "probe.int8.onnx"

            def score(layers: list[str]) -> Score:
                rec.write(probe, layers)
                return scorer(probe)

            say(f"search: budget {budget.words()}; {len(ranking)} layers ranked by their own error")
            result.search = search_float_set(ranking, score, budget, say, names)
    return result


def _budget(b: DebugBundle, scorer: Scorer, max_drop: float | None, min_sqnr_db: float | None) -> Budget:
    if max_drop is not None and min_sqnr_db is not None:
        raise EdgerepError("--max-drop and --min-sqnr: give one budget")
    if min_sqnr_db is not None:
        return Budget(min_sqnr_db=min_sqnr_db)
    if not scorer.classify:
        if max_drop is not None:
            raise EdgerepError("--max-drop: needs labelled images and a classifier's (N, classes) output",
                               hint="use --min-sqnr DB (output fidelity) instead")
        return Budget(min_sqnr_db=30.0)
    return Budget(max_drop=max_drop if max_drop is not None else float(b.quantization.get("max_drop", 0.5)))


__all__ = ["SCHEMA", "PER_LAYER_NOTE", "DebugBundle", "open_bundle", "load_data", "reference_file", "layer_table",
           "find_culprit", "Culprit", "BROKEN_DB", "ISOLATED_SAMPLES", "MEASURES", "LayerRow", "Fidelity", "Scorer",
           "Score", "Budget", "search_float_set", "SearchResult",
           "bundle_recipe", "debug_bundle", "DebugResult", "handed_tensor", "weights_match"]
