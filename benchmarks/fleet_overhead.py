"""Wall time of a fleet deploy vs the same work done locally, and where the fleet's overhead goes.

The same bundle, the same engines, the same bench budget and the same test split, three ways:
  local       the node's job function called in this process (no Ray): build, time, score
  fleet x1    `fleet_deploy` on a loopback cluster with one `x86-cpu` node
  fleet x2    the same with two nodes and --shard (each node scores half the test split)
The cluster's start-up is reported apart (a fleet is long-lived; CI pays it once, not per deploy).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/fleet_overhead.py [BUNDLE] [--bench-seconds 1.0]
(BUNDLE defaults to /tmp/fleet-demo: `edgerep deploy examples/checkpoints/repvgg_digits.pt --out /tmp/fleet-demo`.)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def local_run(bundle_dir: Path, bench_seconds: float) -> dict:
    """Everything fleet deploy does, in this process, without Ray: the reference, the shard, the job."""
    from edgerep.data import open_dataset
    from edgerep.fleet.node import run_job
    from edgerep.fleet.payload import load_reference, make_shards, payload, read_bundle
    from edgerep.pipeline import TorchReference

    t0 = time.perf_counter()
    b = read_bundle(bundle_dir)
    ref = load_reference(b)
    ds = open_dataset((b.manifest.get("inputs") or {}).get("evaluation_data"), split="test", meta=ref.meta)
    shards = list(make_shards(ds, TorchReference(ref.model), 1))
    t_prep = time.perf_counter() - t0
    spec = {"target": b.target, "fp32": b.fp32, "int8": dict(b.int8), "session_config": b.session_config,
            "bench": {"enabled": True, "seconds": bench_seconds, "warmup": 10},
            "x_bench": shards[0]["x"][:1].copy()}
    t1 = time.perf_counter()
    res = run_job(payload(b), spec, *shards)
    return {"reference_and_shards": t_prep, "job": time.perf_counter() - t1, "node": res["timings_s"],
            "total": time.perf_counter() - t0, "rows": res["rows"]}


def fleet_run(bundle_dir: Path, nodes: int, bench_seconds: float, shard: bool) -> dict:
    from edgerep.fleet.deploy import FleetOptions, fleet_deploy
    from edgerep.fleet.local import LocalFleet

    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    t0 = time.perf_counter()
    f = LocalFleet(["x86-cpu"] * nodes, env=env)
    try:
        f.start(timeout=120)
        t_up = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as d:
            fleet_deploy(FleetOptions(bundle=bundle_dir, address=f.address, out=Path(d) / "warm", shard=shard,
                                      bench_seconds=0.01))  # first contact: Ray starts worker processes once
            t1 = time.perf_counter()
            res = fleet_deploy(FleetOptions(bundle=bundle_dir, address=f.address, out=Path(d) / "out",
                                            shard=shard, bench_seconds=bench_seconds))
            wall = time.perf_counter() - t1
        return {"cluster_start": t_up, "wall": wall, "ci": res.report["timings_s"],
                "nodes": {k: v["timings_s"] for k, v in res.report["nodes"].items()},
                "host": next(iter(res.report["nodes"].values()))["versions"], "passed": res.passed}
    finally:
        f.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default="/tmp/fleet-demo", type=Path)
    ap.add_argument("--bench-seconds", type=float, default=1.0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    local = local_run(args.bundle, args.bench_seconds)
    one = fleet_run(args.bundle, 1, args.bench_seconds, shard=False)
    two = fleet_run(args.bundle, 2, args.bench_seconds, shard=True)
    h = one["host"]
    print(f"# fleet overhead: {args.bundle.name}, bench {args.bench_seconds:g} s per engine; "
          f"{h.get('cpu')} ({h.get('arch')}, INT8 ISA {h.get('int8_isa')}), {os.cpu_count()} cores, "
          f"edgerep {h.get('edgerep')}, ray {h.get('ray')}, onnxruntime {h.get('onnxruntime')}")
    print("| phase | local (no Ray) | fleet, 1 node | fleet, 2 nodes sharded |\n|---|---|---|---|")
    n1 = next(iter(one["nodes"].values()))
    n2 = max(two["nodes"].values(), key=lambda t: t["ci_wall"])
    rows = [("reference + test shards (CI side)", local["reference_and_shards"], one["ci"]["reference_and_shards"],
             two["ci"]["reference_and_shards"]),
            ("connect to the cluster", 0.0, one["ci"]["connect"], two["ci"]["connect"]),
            ("put bundle files in the object store", 0.0, one["ci"]["ship"], two["ci"]["ship"]),
            ("node: build engines", local["node"]["build"], n1["build"], n2["build"]),
            ("node: bench", local["node"].get("bench", 0), n1.get("bench", 0), n2.get("bench", 0)),
            ("node: evaluate", local["node"].get("evaluate", 0), n1.get("evaluate", 0), n2.get("evaluate", 0)),
            ("node: whole job", local["job"], n1["total"], n2["total"]),
            ("scheduling + transfers (job wall on CI - on node)", 0.0, n1["ci_wall"] - n1["total"],
             n2["ci_wall"] - n2["total"]),
            ("wall, end to end", local["total"], one["wall"], two["wall"]),
            ("(cluster start-up, once)", 0.0, one["cluster_start"], two["cluster_start"])]
    for name, *vals in rows:
        print(f"| {name} | " + " | ".join(f"{v:.2f} s" for v in vals) + " |")
    print(json.dumps({"local": {k: v for k, v in local.items() if k != "rows"}, "fleet1": one, "fleet2": two},
                     default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
