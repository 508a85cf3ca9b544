"""360p -> 720p latency of an SR bundle on onnxruntime CPU: FP32 vs INT8, and where the time goes.

    PYTHONPATH=. .venv/bin/python benchmarks/sr_latency.py BUNDLE [BUNDLE ...] [--rounds 15] [--threads 2]

For each bundle written by ``edgerep deploy`` (an SR checkpoint): one 640 x 360 LR frame in, 1280 x 720 out,
onnxruntime CPU (all graph optimizations, the bundle's session config for INT8), ``--threads`` intra-op
threads; the files are run in interleaved rounds (``edgerep.bench.ranking.interleaved_rounds``: ``--per-round``
runs of a file per switch, each switch settled until the previous session's spinning pool has parked, so host
load hits all alike and no file is timed against another's spin-wait); per file the median of the rounds' fastest
runs is printed with the INT8 / FP32 ratios and their paired 95% CIs. Files timed:

- ``fp32``: ``model.fp32.onnx`` as exported (what the bundle's FP32 onnxruntime engine runs);
- ``fp32+max``: the same file with every PReLU rewritten as ``Max(x, a x)`` (``edgerep.quant.prelu``), so
  the INT8 file is also compared with an FP32 file that got the same exact rewrite;
- ``int8``: ``model.int8.onnx`` as shipped (its PReLUs rewritten: the CPU policies' ``prelu_as_max``);
- ``int8+prelu``: the INT8 file with its PReLUs put back (how it was before the rewrite); absent for a file whose
  PReLUs run on the integers (a ``-prelu8`` policy: nothing to put back).

Then, per file, onnxruntime's profiler (``--profile-runs`` runs): the median time per node summed by op type,
which says what bounds the ratio. The CPU model, its INT8 instruction set and the load average are printed.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np

FRAME_IN = (360, 640)


def _session(path: Path, cfg: dict, threads: int, profile: str | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    for k, v in cfg.items():
        so.add_session_config_entry(k, v)
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def prelu_back(src: Path, dst: Path) -> int:
    """The INT8 file with each ``Mul`` -> ``Max``/``Min`` pair that ``prelu_as_max`` wrote turned back into PRelu."""
    import onnx
    from onnx import helper

    m = onnx.load(str(src))
    g = m.graph
    muls = {n.output[0]: n for n in g.node if n.op_type == "Mul" and n.name.endswith("/slope_mul")}
    nodes, n_back = [], 0
    for n in g.node:
        if n.name in {x.name for x in muls.values()}:
            continue
        if n.op_type in ("Max", "Min") and len(n.input) == 2 and n.input[1] in muls:
            mul = muls[n.input[1]]
            nodes.append(helper.make_node("PRelu", [mul.input[0], mul.input[1]], [n.output[0]], name=n.name + "_prelu"))
            n_back += 1
            continue
        nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, str(dst))
    return n_back


def by_op(path: Path, cfg: dict, threads: int, x: np.ndarray, runs: int, tmp: Path) -> dict[str, float]:
    """onnxruntime's profiler: median kernel time per node over ``runs``, summed by op type (ms)."""
    s = _session(path, cfg, threads, str(tmp / path.stem))
    for _ in range(runs):
        s.run(None, {"input": x})
    events = json.loads(Path(s.end_profiling()).read_text())
    per: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[(e["args"].get("op_name", "?"), e["name"])].append(e["dur"] / 1000.0)
    out: dict[str, float] = collections.defaultdict(float)
    for (op, _), d in per.items():
        out[op] += float(np.median(d[1:] if len(d) > 1 else d))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


class _Run:
    """An onnxruntime session as ``interleaved_rounds`` times it: ``run(x)``."""

    def __init__(self, sess):
        self.sess = sess

    def run(self, x: np.ndarray):
        return self.sess.run(None, {"input": x})


def main(argv: list[str] | None = None) -> int:
    import onnxruntime

    from edgerep.bench.ranking import interleaved_rounds, paired_ratio
    from edgerep.quant.cpu_features import detect_cpu_features
    from edgerep.quant.prelu import prelu_as_max

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-round", type=int, default=5, help="runs of one file per switch (the round's fastest counts)")
    ap.add_argument("--profile-runs", type=int, default=6)
    args = ap.parse_args(argv)
    cpu = detect_cpu_features()
    print(f"host: {cpu.model_name}, {cpu.cores} cores, INT8 path {cpu.int8_dot}; onnxruntime "
          f"{onnxruntime.__version__}; {args.threads} threads; load average before {os.getloadavg()}")
    x = np.random.default_rng(0).random((1, 3, *FRAME_IN), dtype=np.float32)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for b in args.bundles:
            import onnx

            rep = json.loads((b / "report.json").read_text())
            cfg = (rep["quantization"].get("cpu_policy") or {}).get("session_config") or {}
            m = onnx.load(str(b / "model.fp32.onnx"))
            rewritten = prelu_as_max(m)
            onnx.save(m, str(tmp / "fp32max.onnx"))
            back = prelu_back(b / "model.int8.onnx", tmp / "int8prelu.onnx")
            files = {"fp32": (b / "model.fp32.onnx", {}), "fp32+max": (tmp / "fp32max.onnx", {}),
                     "int8": (b / "model.int8.onnx", cfg)}
            if back:  # a -prelu8 file's PReLUs run on the integers: nothing to put back, no such row
                files["int8+prelu"] = (tmp / "int8prelu.onnx", cfg)
            sess = {k: _Run(_session(p, c, args.threads)) for k, (p, c) in files.items()}
            # interleaved_rounds: every switch of file waits for the previous session's spinning pool to park
            # (one run per file per round without that timed each file against its predecessor's spin-wait)
            rounds = interleaved_rounds(sess, x, rounds=args.rounds, per_round=args.per_round, budget_s=1e9,
                                        settle_s=2.0)
            med = {k: float(np.median([min(r) for r in v])) for k, v in rounds.items()}
            paired = {(k, stat): paired_ratio(rounds["int8"], rounds[k], statistic=stat)
                      for k in ("fp32", "fp32+max") for stat in ("min", "median")}  # INT8 / FP32, per round
            print(f"\n{b} (policy {rep['quantization']['cpu_policy'].get('name')}; PReLUs rewritten in fp32+max: "
                  f"{rewritten}, put back in int8+prelu: {back}); 640x360 -> 1280x720, {args.rounds} interleaved "
                  f"rounds of {args.per_round} runs each, settled between files; the median of each round's fastest:")
            for k, v in med.items():
                print(f"  {k:11s} {v:8.1f} ms")
            print(f"  INT8 / FP32 as exported: {med['int8'] / med['fp32']:.3f} (paired per round "
                  f"{paired['fp32', 'min']}); INT8 / FP32+max: {med['int8'] / med['fp32+max']:.3f} (paired "
                  f"{paired['fp32+max', 'min']}); with each round's median run instead of its fastest: "
                  f"{paired['fp32', 'median']} / {paired['fp32+max', 'median']}"
                  + (f"; INT8 with PRelu / FP32: {med['int8+prelu'] / med['fp32']:.3f}" if "int8+prelu" in med else
                     " (its PReLUs run on the integers: no int8+prelu row)"))
            for k in ("fp32", "fp32+max", "int8"):
                p, c = files[k]
                ops = by_op(p, c, args.threads, x, args.profile_runs, tmp)
                print(f"  profile {k} (ms by op type, sum {sum(ops.values()):.1f}): "
                      + ", ".join(f"{op} {v:.1f}" for op, v in ops.items() if v >= 0.05))
    print(f"\nload average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
