"""Short quantization-aware fine-tuning by output distillation: the FP32 model's outputs are the teacher.

The student is the FP32 ONNX file itself, run by a small torch interpreter of its graph (the ops a folded CNN
is made of), with fake quantization where the QDQ file quantizes: every activation the QDQ file puts a
``QuantizeLinear`` on is fake-quantized with that node's calibrated scale and zero point, every quantized
layer's weight per channel (symmetric int8, scale ``max |w| / 127`` recomputed each step), gradients passed
straight through inside the range. Weights and biases are trained by Adam on the mean squared error between
the student's raw outputs and the teacher's (no labels: the calibration images are enough, for any task).
A step takes ``QatOptions.batch`` samples, or fewer when their forward would cost more than
``QatOptions.step_macs`` multiply-adds (RepVGG-A0 at 224 x 224: 3 samples; the shipped models: 32).

The result is written like AdaRound's: every learned weight snapped to its grid, ``q * s`` with
``s = max |w| / 127``, so every QDQ file written from it stores exactly ``q`` (checked by read-back).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.quant.calibrate import CalibrationResult
from edgerep.quant.qdq import QdqConfig

SUPPORTED = ("Conv", "Gemm", "Relu", "Add", "GlobalAveragePool", "Flatten", "MaxPool", "AveragePool", "Reshape",
             "Clip", "PRelu", "Identity", "Shape", "Slice", "Unsqueeze", "Concat", "Tile", "DepthToSpace",
             # a detector's neck and decode tail (edgerep's detectors: nearest upsampling, box decode, sigmoid)
             "Sub", "Mul", "Div", "Sigmoid", "Gather", "Resize")


class Unsupported(EdgerepError):
    """The graph has an op the interpreter does not run: QAT is skipped (the reason is reported)."""


@dataclass(frozen=True)
class QatOptions:
    """Adam ``steps`` at learning rate ``lr`` on batches of ``batch`` of at most ``samples`` calibration inputs;
    ``per_channel``: the loss weighs each output channel by the inverse of its variance in the teacher."""

    steps: int = 300
    lr: float = 1e-4
    batch: int = 32
    samples: int = 256
    seed: int = 0
    per_channel: bool = True  # each output channel's squared error over the teacher's variance (``channel_weights``)
    # A step whose forward of ``batch`` samples costs more than ``step_macs`` multiply-adds (the Conv / Gemm
    # layers' MACs per sample, counted on one sample, x batch) takes the most samples within it instead (at
    # least 1). 2^32 keeps the shipped digits, detector (160 px, ~1.5 G at 32) and SR models at 32 samples;
    # RepVGG-A0 at 224 x 224 (1.36 G per sample) steps on 3. 0: ``batch`` always.
    step_macs: int = 1 << 32


@dataclass
class QatResult:
    """The FP32 file with the fine-tuned, grid-snapped weights, each layer's int8 weights, the loss curve."""

    path: Path
    qweights: dict[str, np.ndarray] = field(default_factory=dict)
    loss_first: float = float("nan")
    loss_last: float = float("nan")
    steps: int = 0
    seconds: float = 0.0
    activations: str = ""  # the activation grid the student fake-quantized with (``activation_grid``)
    batch: int = 0  # samples per step (``step_batch``)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "batch": self.batch, "distillation_mse_first": self.loss_first,
                "distillation_mse_last": self.loss_last, "layers": len(self.qweights),
                "seconds": round(self.seconds, 3), "activations": self.activations}


def activation_quant(qdq_path: str | Path) -> dict[str, tuple[float, int, int, int]]:
    """Tensor -> (scale, zero point, qmin, qmax) of every activation a QDQ file quantizes."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(qdq_path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        s = inits[n.input[1]]
        z = inits[n.input[2]] if len(n.input) > 2 and n.input[2] in inits else np.array(0, np.uint8)
        if s.size != 1:
            continue
        lo, hi = (-128, 127) if z.dtype == np.int8 else (0, 255)
        out[n.input[0]] = (float(s.reshape(())), int(z.reshape(())), lo, hi)
    return out


def activation_grid(act_q: dict[str, tuple[float, int, int, int]]) -> str:
    """The activation grid of ``activation_quant``'s result in words: ``u8 asymmetric``, ``s8 symmetric``..."""
    kinds = sorted({("u8" if hi == 255 else "s8") + (" symmetric" if z in (0, 128) and (lo < 0 or z == 128)
                                                     else " asymmetric") for _s, z, lo, hi in act_q.values()})
    return ", ".join(kinds) or "none"


def _fq_act(x, q):
    import torch

    s, z, lo, hi = q
    xc = torch.clamp(x, (lo - z) * s, (hi - z) * s)
    fq = (torch.clamp(torch.round(x / s) + z, lo, hi) - z) * s
    return xc + (fq - xc).detach()


def _fq_weight(w, axis: int):
    import torch

    dims = [d for d in range(w.ndim) if d != axis]
    s = (w.detach().abs().amax(dim=dims, keepdim=True) / 127.0).clamp_min(1e-12)
    return w + (torch.round(w / s) * s - w).detach()


class Student:
    """The FP32 graph as torch ops with fake quantization at the QDQ file's positions."""

    def __init__(self, model, act_q: dict, quantized: dict[str, int]):
        import torch
        from onnx import numpy_helper

        from edgerep.quant.adaround import _attrs, _layer_fn

        self.model, self.act_q, self.quantized = model, act_q, quantized
        self.macs = 0  # the Conv / Gemm multiply-adds of the last call, per sample
        self.consts = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer}
        self.params: dict[str, torch.nn.Parameter] = {}
        self.fns, self.attrs = {}, {}
        for n in model.graph.node:
            if n.op_type not in SUPPORTED:
                raise Unsupported(f"QAT runs {', '.join(SUPPORTED)}; the graph has {n.op_type} ({n.name})")
            self.attrs[n.name] = _attrs(n)
            if n.op_type in ("Conv", "Gemm"):
                fn = _layer_fn(n)
                if fn is None:
                    raise Unsupported(f"{n.name}: {n.op_type} with these attributes")
                self.fns[n.name] = fn
                for t in n.input[1:]:
                    if t in self.consts and t not in self.params:
                        self.params[t] = torch.nn.Parameter(self.consts[t].float())

    def parameters(self):
        return list(self.params.values())

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        g = self.model.graph
        env = {g.input[0].name: x}
        self.macs = 0
        if g.input[0].name in self.act_q:
            env[g.input[0].name] = _fq_act(x, self.act_q[g.input[0].name])

        def get(t):
            return env[t] if t in env else self.params.get(t, self.consts.get(t))

        for n in g.node:
            a = self.attrs[n.name]
            ins = [get(t) if t else None for t in n.input]
            op = n.op_type
            if op in ("Conv", "Gemm"):
                w = ins[1]
                if n.name in self.quantized:
                    w = _fq_weight(w, self.quantized[n.name])
                y = self.fns[n.name](ins[0], w, ins[2] if len(ins) > 2 else None)
                self.macs += (y[0].numel() // max(int(y.shape[1]), 1)) * w.numel()  # positions x weights
            elif op == "Relu":
                y = torch.relu(ins[0])
            elif op == "Add":
                y = ins[0] + ins[1]
            elif op == "Sub":
                y = ins[0] - ins[1]
            elif op == "Mul":
                y = ins[0] * ins[1]
            elif op == "Div":
                y = ins[0] / ins[1]
            elif op == "Sigmoid":
                y = torch.sigmoid(ins[0])
            elif op == "Gather":
                y = _gather(ins[0], ins[1], a.get("axis", 0))
            elif op == "Resize":
                y = _resize_nearest(ins, a)
            elif op == "GlobalAveragePool":
                y = ins[0].mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                y = torch.flatten(ins[0], a.get("axis", 1))
            elif op in ("MaxPool", "AveragePool"):
                k, st, p = a["kernel_shape"], a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0])
                xp = F.pad(ins[0], (p[1], p[3], p[0], p[2]), value=-float("inf") if op == "MaxPool" else 0.0)
                y = F.max_pool2d(xp, k, st) if op == "MaxPool" else F.avg_pool2d(xp, k, st)
            elif op == "Reshape":
                y = ins[0].reshape([int(v) if int(v) != 0 else ins[0].shape[i] for i, v in enumerate(ins[1].tolist())])
            elif op == "Clip":
                y = torch.clamp(ins[0], float(ins[1]) if len(ins) > 1 and ins[1] is not None else None,
                                float(ins[2]) if len(ins) > 2 and ins[2] is not None else None)
            elif op == "PRelu":
                y = torch.where(ins[0] >= 0, ins[0], ins[0] * ins[1])
            elif op == "Shape":
                y = torch.tensor(list(ins[0].shape), dtype=torch.int64)
            elif op == "Slice":
                y = _slice(ins)
            elif op == "Unsqueeze":
                y = ins[0]
                for ax in sorted(int(v) % (y.ndim + len(ins[1])) for v in ins[1].reshape(-1).tolist()):
                    y = y.unsqueeze(ax)
            elif op == "Concat":
                y = torch.cat(ins, dim=a["axis"])
            elif op == "Tile":
                y = ins[0].repeat(*[int(v) for v in ins[1].tolist()])
            elif op == "DepthToSpace":
                y = _depth_to_space(ins[0], a["blocksize"], a.get("mode", b"DCR"))
            else:  # Identity
                y = ins[0]
            if n.output[0] in self.act_q:
                y = _fq_act(y, self.act_q[n.output[0]])
            env[n.output[0]] = y
        return env[g.output[0].name]


def _slice(ins):
    """ONNX Slice (opset >= 10: starts, ends, axes, steps as inputs)."""
    x = ins[0]
    starts, ends = ins[1].reshape(-1).tolist(), ins[2].reshape(-1).tolist()
    axes = ins[3].reshape(-1).tolist() if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
    steps = ins[4].reshape(-1).tolist() if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    idx = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        if st <= 0:
            raise Unsupported("Slice with a non-positive step")
        n = x.shape[int(ax)]
        idx[int(ax)] = slice(max(min(int(s), n), -n), max(min(int(e), n), -n - 1), int(st))
    return x[tuple(idx)]


def _gather(x, idx, axis: int):
    """ONNX Gather: ``x``'s entries at ``idx`` along ``axis`` (negative indices count from the end)."""
    import torch

    axis = axis % x.ndim
    i = idx.long()
    i = torch.where(i < 0, i + x.shape[axis], i)
    y = torch.index_select(x, axis, i.reshape(-1))
    return y.reshape(*x.shape[:axis], *i.shape, *x.shape[axis + 1:])


def _resize_nearest(ins, a: dict):
    """ONNX Resize as exported nearest upsampling (mode nearest, asymmetric, floor, integer scales)."""
    import torch.nn.functional as F

    mode, ctm = a.get("mode", b"nearest"), a.get("coordinate_transformation_mode", b"half_pixel")
    near = a.get("nearest_mode", b"round_prefer_floor")
    scales = ins[2] if len(ins) > 2 and ins[2] is not None and ins[2].numel() else None
    if (mode not in (b"nearest", "nearest") or ctm not in (b"asymmetric", "asymmetric")
            or near not in (b"floor", "floor") or scales is None):
        raise Unsupported(f"Resize {mode!r}/{ctm!r}/{near!r} (QAT runs nearest, asymmetric, floor, with scales)")
    sc = [float(v) for v in scales.reshape(-1).tolist()]
    if sc[:2] != [1.0, 1.0] or any(v != int(v) for v in sc[2:]):
        raise Unsupported(f"Resize scales {sc} (QAT runs integer spatial scales)")
    return F.interpolate(ins[0], scale_factor=tuple(sc[2:]), mode="nearest")


def _depth_to_space(x, bs: int, mode):
    n, c, h, w = x.shape
    if mode in (b"CRD", "CRD"):
        return x.reshape(n, c // (bs * bs), bs, bs, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c // (bs * bs), h * bs,
                                                                                            w * bs)
    return x.reshape(n, bs, bs, c // (bs * bs), h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c // (bs * bs), h * bs, w * bs)


def step_batch(macs_per_sample: int, batch: int, step_macs: int) -> int:
    """The samples a QAT step takes: ``batch``, or the most whose forward costs at most ``step_macs``
    multiply-adds (at least 1) when ``batch`` of them cost more; ``step_macs`` 0: ``batch``."""
    if not step_macs or batch * macs_per_sample <= step_macs:
        return batch
    return max(1, min(batch, step_macs // max(macs_per_sample, 1)))


def channel_weights(teacher: np.ndarray) -> np.ndarray:
    """Per output channel (axis 1) the inverse of the teacher's variance over samples and positions, broadcastable
    to a batch of outputs: a detector's box pixels (0-160) and class probabilities (0-1) then weigh alike in
    the distillation loss (raw, the box coordinates' squared errors are ~1e4 times the scores')."""
    if teacher.ndim < 2:
        return np.ones((1,), np.float32)
    var = np.moveaxis(teacher.astype(np.float64), 1, 0).reshape(teacher.shape[1], -1).var(1)
    w = 1.0 / np.maximum(var, 1e-12 * max(float(var.max()), 1e-30))
    return (w / w.mean()).astype(np.float32).reshape(1, -1, *([1] * (teacher.ndim - 2)))


def qat_model(src: str | Path, out: str | Path, calibration: CalibrationResult, x: np.ndarray, teacher: np.ndarray,
              config: QdqConfig, *, options: QatOptions | None = None,
              say: Callable[[str], None] = lambda _m: None) -> QatResult:
    """Fine-tune ``src`` with fake quantization to match ``teacher`` (the FP32 outputs on ``x``) and write the
    grid-snapped result to ``out`` (verified: a QDQ file of it stores the learned int8 weights exactly)."""
    import tempfile

    import onnx
    import torch
    from onnx import numpy_helper

    from edgerep.quant.adaround import _plain, qdq_weight_grids, save_verified
    from edgerep.quant.qdq import _ensure_node_names, write_qdq

    t0 = time.perf_counter()
    opts = options or QatOptions()
    cfg = _plain(config)
    model = onnx.load(str(src))
    _ensure_node_names(model)
    res = QatResult(Path(out))
    with tempfile.TemporaryDirectory(prefix="edgerep-qat-") as tmpd:
        tmp = Path(tmpd)
        onnx.save(model, str(tmp / "src.onnx"))
        write_qdq(tmp / "src.onnx", tmp / "q.onnx", calibration, cfg)
        grids = qdq_weight_grids(tmp / "q.onnx")
        act_q = activation_quant(tmp / "q.onnx")
        res.activations = activation_grid(act_q)
        student = Student(model, act_q, {k: g.axis for k, g in grids.items()})
        xs = torch.from_numpy(np.ascontiguousarray(x[:opts.samples], dtype=np.float32))
        ts = torch.from_numpy(np.ascontiguousarray(teacher[:opts.samples], dtype=np.float32))
        wt = torch.from_numpy(channel_weights(ts.numpy()) if opts.per_channel else np.ones((1,), np.float32))
        opt = torch.optim.Adam(student.parameters(), lr=opts.lr)
        g = torch.Generator().manual_seed(opts.seed)
        with torch.no_grad():
            student(xs[:1])
        res.batch = step_batch(student.macs, min(opts.batch, len(xs)), opts.step_macs)
        losses = []
        for _ in range(opts.steps):
            idx = torch.randint(0, len(xs), (res.batch,), generator=g)
            loss = (wt * (student(xs[idx]) - ts[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        res.steps, res.loss_first, res.loss_last = opts.steps, losses[0], float(np.mean(losses[-10:]))
        say(f"qat: {opts.steps} steps of {res.batch} samples ({student.macs / 1e6:.0f} M multiply-adds per "
            "sample), "
            f"distillation MSE {res.loss_first:.3e} -> {res.loss_last:.3e}")
        inits = {i.name: i for i in model.graph.initializer}
        nodes = {n.name: n for n in model.graph.node}
        with torch.no_grad():
            for name, p in student.params.items():
                inits[name].CopyFrom(numpy_helper.from_array(p.detach().numpy().astype(np.float32), name))
            for node_name, grid in grids.items():
                w_name = nodes[node_name].input[1]
                w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
                wm = np.moveaxis(w, grid.axis, 0).reshape(w.shape[grid.axis], -1)
                s = np.maximum(np.abs(wm).max(1), 1e-12).astype(np.float32) / np.float32(127.0)
                shape = [1] * w.ndim
                shape[grid.axis] = -1
                q = np.clip(np.round(w / s.reshape(shape)), -127, 127).astype(np.int8)
                inits[w_name].CopyFrom(numpy_helper.from_array((q * s.reshape(shape)).astype(np.float32), w_name))
                res.qweights[node_name] = q
        save_verified(model, out, calibration, cfg, res.qweights, tmp)
    res.seconds = time.perf_counter() - t0
    return res


__all__ = ["QatOptions", "QatResult", "Student", "Unsupported", "activation_grid", "activation_quant",
           "channel_weights", "qat_model", "step_batch"]
