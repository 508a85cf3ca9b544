"""Measure the graph folder against the per-block fold on registry models (the numbers in the
fold report come from here; a benchmarks/ wrapper can call ``compare``).

    python -m edgerep.fold.graph_bench repvgg_cifar resnet_dbb_cifar --json
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def compare(name: str, seed: int = 0) -> dict:
    """Fold registry model ``name`` (BN statistics randomized) with ``fold_graph`` alone and with
    the per-block fold alone; report time, counts and the float32 error of the graph fold."""
    from edgerep.blocks.testing import randomize_
    from edgerep.fold.graph import fold_graph
    from edgerep.fold.graph_cost import measure_cost
    from edgerep.fold.model import fold_model
    from edgerep.models import create_model, list_models

    info = next(m for m in list_models() if m.name == name)
    torch.manual_seed(seed)
    model = randomize_(create_model(name), seed=seed)
    x = torch.randn(1, *info.input_shape)
    t0 = time.perf_counter()
    r = fold_graph(model, x)
    seconds = time.perf_counter() - t0
    per_block = measure_cost(fold_model(model, None), x)
    return {
        "model": name, "input": list(x.shape), "seconds": round(seconds, 2),
        "convs": [r.convs_before, r.convs_after], "per_block_convs": per_block.convs,
        "params": [r.params_before, r.params_after], "per_block_params": per_block.params,
        "flops": [r.flops_before, r.flops_after], "per_block_flops": per_block.flops,
        "max_rel_error": r.max_rel_error, "regions_folded": len(r.folded_regions),
        "regions_refused": len(r.refused_regions),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="registry names (edgerep zoo)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args(argv)
    for name in args.models:
        row = compare(name)
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['model']}: {row['seconds']}s convs {row['convs'][0]}->{row['convs'][1]} "
                  f"(per-block {row['per_block_convs']}) params {row['params'][0]}->{row['params'][1]} "
                  f"(per-block {row['per_block_params']}) FLOPs {row['flops'][0]}->{row['flops'][1]} "
                  f"(per-block {row['per_block_flops']}) max rel err {row['max_rel_error']:.2e} "
                  f"refused {row['regions_refused']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
