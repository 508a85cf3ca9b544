"""INT8 at the CPU's limit: the ratio table of issue 15, measured in one run of this script.

    .venv/bin/python benchmarks/int8_latency.py                     # RepVGG-A0, 224x224, batch 1
    .venv/bin/python benchmarks/int8_latency.py --rounds 12 --json  # more rounds, machine-readable
    .venv/bin/python benchmarks/int8_latency.py --skip-deploy       # without the demo deploy timing

Engines, all on the same folded FP32 ONNX and the same synthetic calibration samples:
  torch-unfolded   the train-time model in eager torch (the baseline users start from)
  ort-fp32         onnxruntime FP32 (NCHWc layout; graph optimizations all)
  ort-fp32-static  the same model exported with a static batch of 1
  ort-int8-plain   onnxruntime's own quantize_static: QDQ, u8 activations, s8 per-channel weights
  ort-int8-qop     the same, QOperator format (QLinearConv) instead of QDQ
  edgerep-int8     the CPU file `quantize_model` ships (policy chosen on this CPU)
  edgerep-int8-spin / -park   the same file with intra-op spinning forced on / off

Every onnxruntime session gets the same settings (threads, spinning policy), so ratios compare
files, except the spin/park pair, which compares that one setting. All engines are timed in
interleaved rounds, each switch waiting until the previous engine's worker pools have parked
(``edgerep.bench.ranking``); each ratio is the geometric mean over rounds of the per-round ratio of
the fastest runs (``--statistic min``, the least disturbed run on a loaded host; or ``median``),
with its 95% CI. A target is met when the whole CI is under it, missed when the whole CI is over
it, and "inside the noise" otherwise. The
demo row times `edgerep deploy` of the digits checkpoint as a user runs it (a fresh process), after
one deploy that warmed the calibration cache. The CPU model, ISA and load are printed with the table.
Weights are seeded with randomised BN statistics (latency does not depend on trained values).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import edgerep  # noqa: F401  (first: thread settings before torch loads OpenMP)

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"vnni": 0.32, "avx2": 0.55}


def _randomize_bn(model, seed: int = 0) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)


def _ort_quantize_static(fp32: Path, out: Path, x: np.ndarray, fmt: str) -> None:
    """Plain onnxruntime quantization, the way its documentation shows it (no edgerep in the loop)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": x[i:i + 1]} for i in range(len(x))])

        def get_next(self):
            return next(self.it, None)

    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(str(fp32), str(out), Reader(), quant_format=getattr(QuantFormat, fmt), per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _deploy_wall(tmp: Path) -> float:
    """Wall time of the README's demo deploy in a fresh process, calibration cache warm."""
    env = dict(os.environ, EDGEREP_CACHE=str(tmp / "cache"), PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "edgerep", "deploy", str(ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"),
           "--out", str(tmp / "demo"), "--force"]
    subprocess.run(cmd, env=env, check=True, capture_output=True)  # warms the cache
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="repvgg_a0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=12, help="interleaved rounds (7 timed runs per engine each)")
    ap.add_argument("--statistic", choices=("min", "median"), default="min", help="per-round statistic (default min)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--calib", type=int, default=32, help="synthetic calibration samples")
    ap.add_argument("--skip-deploy", action="store_true", help="do not time the demo deploy")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from edgerep import fold_model
    from edgerep.bench.noise import host_load
    from edgerep.bench.ranking import interleaved_rounds, paired_ratio
    from edgerep.engines.onnxruntime_engine import OrtEngine, default_threads, spinning_policy
    from edgerep.engines.torch_engine import TorchEngine
    from edgerep.models import create_model
    from edgerep.quant.calibrate import ArrayDataset
    from edgerep.quant.cpu_features import detect_cpu_features
    from edgerep.quant.export import export_onnx
    from edgerep.quant.pipeline import JudgeOptions, QuantizeOptions, TargetOptions, quantize_model

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=args.classes).eval()
    _randomize_bn(model)
    in_ch = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    shape = (in_ch, args.size, args.size)
    rng = np.random.default_rng(0)
    x_cal = rng.standard_normal((args.calib, *shape)).astype(np.float32)
    x_eval = rng.standard_normal((32, *shape)).astype(np.float32)
    x1 = rng.standard_normal((1, *shape)).astype(np.float32)
    log = (lambda m: None) if args.json else (lambda m: print(f"  {m}", file=sys.stderr))
    cpu = detect_cpu_features()
    load_before = host_load()
    spin, spin_why = spinning_policy("auto", threads)
    with tempfile.TemporaryDirectory(prefix="edgerep-int8-") as tmpd:
        tmp = Path(tmpd)
        fp32 = tmp / "fp32.onnx"
        folded = fold_model(model)
        export_onnx(folded, fp32, shape)
        export_onnx(folded, tmp / "fp32_static.onnx", shape, dynamic_batch=False)
        log("quantizing: onnxruntime quantize_static (QDQ, QOperator)")
        _ort_quantize_static(fp32, tmp / "plain_qdq.onnx", x_cal, "QDQ")
        _ort_quantize_static(fp32, tmp / "plain_qop.onnx", x_cal, "QOperator")

        def ref(x):
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        log("quantizing: edgerep quantize_model (CPU policy chosen on this CPU)")
        res = quantize_model(fp32, ArrayDataset(x_cal, None, "synthetic-calib"),
                             ArrayDataset(x_eval, None, "synthetic-eval"), tmp / "q",
                             QuantizeOptions(TargetOptions(("cpu",)), judge=JudgeOptions(max_drop=None, threads=threads)),
                             reference=ref, progress=log)
        pol = res.cpu_policy
        mode = "on" if spin else "off"
        engines = {
            "torch-unfolded": TorchEngine(model),
            "ort-fp32": OrtEngine(fp32, threads=threads, spinning=mode),
            "ort-fp32-static": OrtEngine(tmp / "fp32_static.onnx", threads=threads, spinning=mode),
            "ort-int8-plain": OrtEngine(tmp / "plain_qdq.onnx", precision="int8", threads=threads, spinning=mode),
            "ort-int8-qop": OrtEngine(tmp / "plain_qop.onnx", precision="int8", threads=threads, spinning=mode),
            "edgerep-int8": OrtEngine(res.files["cpu"], precision="int8", threads=threads, spinning=mode,
                                      session_config=pol.session_config),
            "edgerep-int8-spin": OrtEngine(res.files["cpu"], precision="int8", threads=threads, spinning="on",
                                           session_config=pol.session_config),
            "edgerep-int8-park": OrtEngine(res.files["cpu"], precision="int8", threads=threads, spinning="off",
                                           session_config=pol.session_config),
        }
        log(f"timing {len(engines)} engines in {args.rounds} interleaved rounds")
        with torch.inference_mode():
            times = interleaved_rounds(engines, x1, rounds=args.rounds, per_round=7, budget_s=1e9, settle_s=2.0)
        deploy_s = None if args.skip_deploy else _deploy_wall(tmp)
    med = {k: float(np.median(np.concatenate(v))) for k, v in times.items()}
    fastest = {k: float(np.min(np.concatenate(v))) for k, v in times.items()}

    def ratio(a: str, b: str) -> dict:
        r = paired_ratio(times[a], times[b], statistic=args.statistic)
        return {"estimate": r.estimate, "low": r.low, "high": r.high, "rounds": r.rounds}

    vnni = cpu.int8_dot in ("amx", "avx512_vnni", "avx_vnni")
    int8_fp32_target = TARGETS["vnni"] if vnni else TARGETS["avx2"] if cpu.int8_dot == "avx2" else None
    rows = [
        ("edgerep INT8 / onnxruntime quantize_static INT8", ratio("edgerep-int8", "ort-int8-plain"), 1.05),
        (f"{args.model} INT8 / FP32 (onnxruntime)", ratio("edgerep-int8", "ort-fp32"), int8_fp32_target),
        ("INT8 / unfolded eager torch", ratio("edgerep-int8", "torch-unfolded"), 0.15),
        ("finding: QOperator / QDQ (quantize_static)", ratio("ort-int8-qop", "ort-int8-plain"), None),
        ("finding: static batch-1 / dynamic batch (FP32)", ratio("ort-fp32-static", "ort-fp32"), None),
        ("finding: spinning / parked workers (edgerep INT8)", ratio("edgerep-int8-spin", "edgerep-int8-park"), None),
    ]
    out = {
        "model": args.model, "input": [1, *shape], "threads": threads, "cpu": cpu.to_dict(),
        "spinning": {"intra_op": spin, "why": spin_why}, "cpu_policy": pol.to_dict(),
        "median_ms": med, "min_ms": fastest, "statistic": args.statistic, "ratios": [{"what": w, **r, "target": t} for w, r, t in rows],
        "demo_deploy_warm_s": deploy_s, "load_before": load_before, "load_after": host_load(),
        "versions": {"onnxruntime": engines["ort-fp32"].describe()["onnxruntime"], "torch": torch.__version__},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.model} {out['input']} batch 1, {threads} threads, on {cpu.model_name} ({cpu.int8_dot}), "
          f"onnxruntime {out['versions']['onnxruntime']}, torch {torch.__version__}")
    print(f"load (1 min) {load_before['loadavg_1m']} before, {out['load_after']['loadavg_1m']} after, "
          f"{load_before['cores']} cores; spinning: {spin_why}")
    print(f"edgerep CPU policy: {pol.name} - {pol.reason}")
    for k, v in med.items():
        print(f"  {k:20s} median {v:9.3f} ms   fastest {fastest[k]:9.3f} ms")
    print(f"\n| ratio ({args.statistic} per round, {args.rounds} rounds) | measured (95% CI) | target | |\n|---|---|---|---|")
    for w, r, t in rows:
        ok = "" if t is None else ("ok" if r["high"] <= t else "MISSED" if r["low"] > t else "inside the noise")
        print(f"| {w} | {r['estimate']:.3f} ({r['low']:.3f}-{r['high']:.3f}) | {'' if t is None else f'<= {t}'} | {ok} |")
    if deploy_s is not None:
        print(f"| demo deploy, warm cache (wall, fresh process) | {deploy_s:.1f} s | <= 10 s | "
              f"{'ok' if deploy_s <= 10 else 'MISSED'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
