"""The README's digits results: deploy each shipped demo checkpoint end to end (TensorRT absent)
and print its engine table as Markdown, with the wall time of the whole deploy.

    .venv/bin/python benchmarks/deploy_demo.py [--bench-seconds 1.0]

Every number is measured in this run on this machine; nothing is copied from elsewhere.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from edgerep.pipeline import DeployOptions, deploy
from edgerep.report.render import COLUMNS, engine_rows

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-seconds", type=float, default=1.0)
    ap.add_argument("checkpoints", nargs="*", type=Path,
                    default=sorted((ROOT / "examples" / "checkpoints").glob("*_digits.pt")))
    args = ap.parse_args()
    for ckpt in args.checkpoints:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            res = deploy(DeployOptions(checkpoint=ckpt, out=Path(tmp) / "bundle", max_drop=0.5,
                                       bench_seconds=args.bench_seconds, cache_dir=Path(tmp) / "cache"))
            wall = time.perf_counter() - t0
        r = res.report
        print(f"\n### {ckpt.name} (deploy wall time {wall:.1f} s, gate {'passed' if res.passed else 'FAILED'})\n")
        fold = r["fold"]
        print(f"fold: {fold['convs_before']} -> {fold['convs_after']} convs, max rel error {fold['max_rel_error']:.1e}; "
              f"CPU INT8 policy: {(r['quantization'].get('cpu_policy') or {}).get('name')}\n")
        print("| " + " | ".join(h for _, h in COLUMNS) + " |")
        print("|" + "---|" * len(COLUMNS))
        for row in engine_rows(r):
            print("| " + " | ".join(row[k] for k, _ in COLUMNS) + " |")
        print("\nsteps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items()))


if __name__ == "__main__":
    main()
