"""edgerep's graph folder against timm's own ``reparameterize_model`` on the models users hold.

For each model (random weights, randomized BN statistics, nothing downloaded; 224x224, batch 1):
convs and batch norms executed before / after ``edgerep.fold_model`` / after timm's fold, the
max relative error of each fold against the unfolded model (float32; beside it the floor float32
allows: the unfolded model in float32 against itself in float64), edgerep's fold time,
FLOPs, and eager torch latency of the three models timed in alternation (ABCABC..., so a
neighbour's load on a shared machine hits all alike: quote the ratios of medians). torchvision
models have no timm fold; their "timm" columns are the unfolded model. One run of this script
gives every number of the table in the README and docs.

    .venv/bin/python benchmarks/timm_fold.py                       # the default model list
    .venv/bin/python benchmarks/timm_fold.py repvgg_a0 tv:resnet18 --size 64 --iters 5 --json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import torch
from torch import nn

from edgerep.blocks.testing import randomize_, rel_err
from edgerep.fold.graph_cost import measure_cost
from edgerep.fold.model import fold_model_with_report
from edgerep.models.libraries import import_timm, import_torchvision

TIMM = ["repvgg_a0", "repvgg_b1g4", "mobileone_s0", "mobileone_s1", "fastvit_t8", "fastvit_mci0",
        "repvit_m1_0", "repghostnet_100", "efficientvit_m0", "levit_128s", "gernet_s", "resnet18",
        "mobilenetv3_large_100"]
TORCHVISION = ["tv:resnet18", "tv:mobilenet_v2", "tv:mobilenet_v3_large", "tv:efficientnet_b0"]


def build(name: str) -> tuple[nn.Module, nn.Module | None]:
    """(model with randomized BN statistics, timm's fold of it or None for torchvision)."""
    torch.manual_seed(0)  # the libraries' own weight init reads the global generator
    if name.startswith("tv:"):
        model = getattr(import_torchvision().models, name[3:])(weights=None)
        return randomize_(model, seed=0), None
    timm = import_timm()
    from timm.utils.model import reparameterize_model

    model = randomize_(timm.create_model(name, pretrained=False), seed=0)
    return model, reparameterize_model(copy.deepcopy(model))


def latency_ms(models: dict[str, nn.Module], x: torch.Tensor, warmup: int, iters: int) -> dict[str, float]:
    """Median eager latency of each model, timed in alternation."""
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for m in models.values():
                m(x)
        for _ in range(iters):
            for k, m in models.items():
                t = time.perf_counter()
                m(x)
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def measure(name: str, size: int, warmup: int, iters: int) -> dict:
    """One row of the table."""
    model, theirs = build(name)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    folded, report = fold_model_with_report(model, x)
    fold_s = time.perf_counter() - t0
    theirs = theirs if theirs is not None else model
    before, ours, timm_cost = measure_cost(model, x), measure_cost(folded, x), measure_cost(theirs, x)
    with torch.no_grad():
        ref = model(x)
        err, timm_err = rel_err(ref, folded(x)), rel_err(ref, theirs(x))
        # the floor float32 allows: the unfolded model in float32 against itself in float64
        own = rel_err(copy.deepcopy(model).double()(x.double()), ref)
    lat = latency_ms({"unfolded": model, "edgerep": folded, "timm": theirs}, x, warmup, iters)
    return {
        "model": name, "input": [1, 3, size, size],
        "convs": {"before": before.convs, "edgerep": ours.convs, "timm": timm_cost.convs},
        "norms": {"before": before.norms, "edgerep": ours.norms, "timm": timm_cost.norms},
        "max_rel_error": {"edgerep": err, "timm": timm_err, "unfolded_f32_vs_f64": own,
                          "edgerep_f64": (report or {}).get("max_rel_error_f64")},
        "fold_seconds": round(fold_s, 2),
        "gflops": {"before": before.flops / 1e9, "edgerep": ours.flops / 1e9, "timm": timm_cost.flops / 1e9},
        "params": {"before": before.params, "edgerep": ours.params, "timm": timm_cost.params},
        "latency_ms": {k: round(v, 2) for k, v in lat.items()},
        "speedup": {"edgerep": round(lat["unfolded"] / lat["edgerep"], 2),
                    "timm": round(lat["unfolded"] / lat["timm"], 2)},
        "norms_left": (report or {}).get("norms_left", []),
    }


def host() -> str:
    from edgerep.quant.cpu_features import detect_cpu_features

    f = detect_cpu_features()
    isa = "AVX-512 VNNI" if f.avx512_vnni else "AVX2" if f.avx2 else f.arch
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{f.model_name or f.arch} ({isa}), {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load average {load:.1f} at start")


def markdown(rows: list[dict]) -> str:
    """The README's table; torchvision rows have no timm column ("-")."""
    head = ("| model | convs before / after edgerep / after timm | BNs after edgerep / after timm (of) | "
            "max rel error edgerep (timm) [float32 floor] | fold s | GFLOPs before -> edgerep (timm) | "
            "eager ms unfolded / edgerep / timm | speed-up edgerep (timm) |\n|" + "---|" * 8)
    lines = [head]
    for r in rows:
        c, n, e, g, lat, s = r["convs"], r["norms"], r["max_rel_error"], r["gflops"], r["latency_ms"], r["speedup"]
        tv = r["model"].startswith("tv:")

        def timm(v: float, fmt: str) -> str:
            return "-" if tv else format(v, fmt)

        lines.append(
            f"| {r['model']} | {c['before']} / {c['edgerep']} / {timm(c['timm'], 'd')} | "
            f"{n['edgerep']} / {timm(n['timm'], 'd')} ({n['before']}) | "
            f"{e['edgerep']:.1e} ({timm(e['timm'], '.1e')}) [{e['unfolded_f32_vs_f64']:.1e}] | "
            f"{r['fold_seconds']:.1f} | "
            f"{g['before']:.3f} -> {g['edgerep']:.3f} ({timm(g['timm'], '.3f')}) | "
            f"{lat['unfolded']:.1f} / {lat['edgerep']:.1f} / {timm(lat['timm'], '.1f')} | "
            f"{s['edgerep']:.2f}x ({timm(s['timm'], '.2f') + ('' if tv else 'x')}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", help="timm names, tv:NAME for torchvision (default: the README's list)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=15, help="timed runs of each model")
    p.add_argument("--json", action="store_true", help="one JSON object per model, then the host line")
    p.add_argument("--table", metavar="JSONL", help="print the Markdown table of an earlier --json run and exit")
    args = p.parse_args(argv)
    if args.table:
        with open(args.table) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        print(f"{lines[-1].get('host', '')}\n\n{markdown([r for r in lines if 'model' in r])}")
        return 0
    torch.set_num_threads(args.threads)
    where = host()
    rows = []
    for name in args.models or TIMM + TORCHVISION:
        row = measure(name, args.size, args.warmup, args.iters)
        rows.append(row)
        print(json.dumps(row) if args.json else f"{name}: done ({row['fold_seconds']} s fold)", flush=True)
    if args.json:
        print(json.dumps({"host": where}))
        return 0
    print(f"\n{where}; input 1x3x{args.size}x{args.size}, {args.iters} alternating runs each\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
