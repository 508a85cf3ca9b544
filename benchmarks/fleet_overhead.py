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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def local_run(bundle_dir: Path, bench_seconds: float) -> dict:
    """Everything fleet deploy does, in this process, without Ray: the reference, the shard, the job."""
    from edgerep.data import open_dataset
    from edgerep.fleet.deploy import prepare_shards
    from edgerep.fleet.node import run_job
    from edgerep.fleet.payload import load_reference, payload, read_bundle
    from edgerep.fleet.scoring import task_of

    t0 = time.perf_counter()
    b = read_bundle(bundle_dir)
    ref = load_reference(b)
    ds = open_dataset((b.manifest.get("inputs") or {}).get("evaluation_data"), split="test", meta=ref.meta)
    task = task_of(b)
    shards = [s for _, s, _ in prepare_shards(task, ds, ref.model, 1)]
    t_prep = time.perf_counter() - t0
    spec = {"target": b.target, "fp32": b.fp32, "int8": dict(b.int8), "session_config": b.session_config,
            "bench": {"enabled": True, "seconds": bench_seconds, "warmup": 10},
            "x_bench": shards[0]["x"][:1].copy(), "task": task}
    t1 = time.perf_counter()
    res = run_job(payload(b), spec, *shards)
    return {"reference_and_shards": t_prep, "job": time.perf_counter() - t1, "node": res["timings_s"],
            "total": time.perf_counter() - t0, "rows": res["rows"]}


def _fleet_phases(res, wall: float) -> dict:
    n = max(res.report["nodes"].values(), key=lambda v: v["timings_s"]["ci_wall"])["timings_s"]
    return {"wall": wall, "ci": res.report["timings_s"], "node": n}


def fleet_run(bundle_dir: Path, nodes: int, bench_seconds: float, shard: bool) -> dict:
    from edgerep.fleet.deploy import FleetOptions, fleet_deploy
    from edgerep.fleet.local import LocalFleet

    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    t0 = time.perf_counter()
    f = LocalFleet(["x86-cpu"] * nodes, env=env)
    try:
        f.start(timeout=120)
        t_up = time.perf_counter() - t0
        runs = {}
        with tempfile.TemporaryDirectory() as d:
            for name in ("cold", "warm"):  # cold: the first deploy after start-up, Ray starts its worker processes
                t1 = time.perf_counter()
                res = fleet_deploy(FleetOptions(bundle=bundle_dir, address=f.address, out=Path(d) / name,
                                                shard=shard, bench_seconds=bench_seconds))
                runs[name] = _fleet_phases(res, time.perf_counter() - t1)
            if nodes == 1:  # the command as CI runs it: a new process (imports, connect) on the warm cluster
                t1 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "edgerep", "fleet", "deploy", str(bundle_dir), "--address",
                                f.address, "--out", str(Path(d) / "cli"), "--bench-seconds", str(bench_seconds)],
                               env={**os.environ, **env}, check=True, capture_output=True, timeout=300)
                runs["cli"] = time.perf_counter() - t1
        return {"cluster_start": t_up, **runs, "host": next(iter(res.report["nodes"].values()))["versions"],
                "passed": res.passed}
    finally:
        f.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default="/tmp/fleet-demo", type=Path)
    ap.add_argument("--bench-seconds", type=float, default=1.0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    cold = local_run(args.bundle, args.bench_seconds)  # first call in this process: imports, first sessions
    warm = local_run(args.bundle, args.bench_seconds)
    one = fleet_run(args.bundle, 1, args.bench_seconds, shard=False)
    two = fleet_run(args.bundle, 2, args.bench_seconds, shard=True)
    h = one["host"]
    print(f"# fleet overhead: {args.bundle.name}, bench {args.bench_seconds:g} s per engine; "
          f"{h.get('cpu')} ({h.get('arch')}, INT8 ISA {h.get('int8_isa')}), {os.cpu_count()} cores, "
          f"edgerep {h.get('edgerep')}, ray {h.get('ray')}, onnxruntime {h.get('onnxruntime')}")
    cols = [("local, cold", cold, None), ("local, warm", warm, None), ("fleet 1 node, cold", None, one["cold"]),
            ("fleet 1 node, warm", None, one["warm"]), ("fleet 2 nodes sharded, warm", None, two["warm"])]
    print("| phase | " + " | ".join(c[0] for c in cols) + " |\n|---|" + "---|" * len(cols))

    def cell(loc, fl, what):
        if loc is not None:
            v = {"prep": loc["reference_and_shards"], "connect": 0.0, "ship": 0.0, "build": loc["node"]["build"],
                 "bench": loc["node"].get("bench", 0.0), "evaluate": loc["node"].get("evaluate", 0.0),
                 "job": loc["job"], "sched": 0.0, "wall": loc["total"]}[what]
        else:
            n = fl["node"]
            v = {"prep": fl["ci"]["reference_and_shards"], "connect": fl["ci"]["connect"], "ship": fl["ci"]["ship"],
                 "build": n["build"], "bench": n.get("bench", 0.0), "evaluate": n.get("evaluate", 0.0),
                 "job": n["total"], "sched": n["ci_wall"] - n["total"], "wall": fl["wall"]}[what]
        return f"{v:.2f} s"

    for label, what in (("reference + test shards (CI side)", "prep"), ("connect to the cluster", "connect"),
                        ("bundle files into the object store", "ship"), ("job: build engines", "build"),
                        ("job: bench (2 engines)", "bench"), ("job: evaluate", "evaluate"), ("job: whole", "job"),
                        ("scheduling, worker start, transfers", "sched"), ("wall, end to end", "wall")):
        print(f"| {label} | " + " | ".join(cell(c[1], c[2], what) for c in cols) + " |")
    print(f"\ncluster start-up (once, not per deploy): head + 1 node {one['cluster_start']:.1f} s, "
          f"head + 2 nodes {two['cluster_start']:.1f} s; `edgerep fleet deploy` as a new process on the warm "
          f"1-node cluster: {one['cli']:.1f} s wall")
    print(json.dumps({"local_cold": {k: v for k, v in cold.items() if k != "rows"}, "fleet1": one, "fleet2": two},
                     default=str), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
