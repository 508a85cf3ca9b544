"""Soak test (not in CI): many consecutive library-level deploys of the digits demo in ONE process.

Checks what a long-running service or a CI runner reusing one interpreter needs: resident memory
stops growing after warm-up (less than 10% growth from deploy 10 to the last), no temporary
directories are left behind (neither edgerep's hidden bundle temps beside the output nor anything
under the process's temp dir), and open file descriptors do not pile up.

Each deploy is the full pipeline (load, fold + verify, export, calibrate, quantize, build
onnxruntime engines, bench, evaluate, write the bundle) with light settings so 100 fit in about
10-15 minutes on 2 cores: no INT8-friendliness check, 32 calibration samples (cached after the
first deploy, as a CI runner would), 64 evaluation samples, 0.02 s of latency timing per engine, minmax calibration (auto's method search skipped), 1 thread.
Every deploy replaces the same bundle (--force), which exercises the replace path too.

    .venv/bin/python benchmarks/soak_deploy.py            # 100 deploys
    .venv/bin/python benchmarks/soak_deploy.py --n 12     # a quick look

Exit code 0 when every check passes, 1 otherwise.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="number of deploys (default 100)")
    ap.add_argument("--warmup", type=int, default=10, help="memory baseline is taken after this many (default 10)")
    ap.add_argument("--max-growth", type=float, default=10.0, help="allowed RSS growth after warm-up, %% (default 10)")
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--eval-samples", type=int, default=64)
    ap.add_argument("--bench-seconds", type=float, default=0.02)
    ap.add_argument("--calib-method", default="minmax", help="minmax (default here) skips auto's method search")
    ap.add_argument("--threads", type=int, default=1, help="torch/onnxruntime threads (default 1)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    if args.n <= args.warmup:
        ap.error("--n must be larger than --warmup")

    work = Path(tempfile.mkdtemp(prefix="edgerep-soak-"))
    private_tmp = work / "tmp"  # everything that uses tempfile in this process lands here
    private_tmp.mkdir()
    os.environ["TMPDIR"] = str(private_tmp)
    tempfile.tempdir = str(private_tmp)

    from edgerep.bundle import TMP_MARK
    from edgerep.pipeline import DeployOptions, deploy

    out = work / "out" / "bundle"
    opts = DeployOptions(checkpoint=DEMO, out=out, force=True, run_check=False, calib_samples=args.calib_samples,
                         eval_samples=args.eval_samples, bench_seconds=args.bench_seconds, bench_warmup=2,
                         threads=args.threads, cache_dir=work / "cache", calib_method=args.calib_method)
    print(f"soak: {args.n} deploys of {DEMO.name} in one process (pid {os.getpid()}), python {sys.version.split()[0]}")
    print(f"settings: check off, calib {args.calib_samples} {args.calib_method} (cached after the first), "
          f"eval {args.eval_samples}, bench {args.bench_seconds}s per engine, threads {args.threads}, "
          f"--force into {out}")
    rss: list[float] = []
    fds: list[int] = []
    secs: list[float] = []
    leftovers_seen = 0
    t_all = time.perf_counter()
    for i in range(1, args.n + 1):
        t0 = time.perf_counter()
        res = deploy(opts)
        secs.append(time.perf_counter() - t0)
        gc.collect()
        rss.append(rss_mib())
        fds.append(open_fds())
        temps = [p for p in out.parent.iterdir() if TMP_MARK in p.name]
        leftovers_seen += len(temps)
        assert (out / "report.json").is_file(), "bundle missing after a successful deploy"
        if i == 1 or i % 10 == 0 or i == args.n:
            top = {e["name"] + "/" + e["precision"]: e.get("accuracy", {}).get("top1")
                   for e in res.report["engines"] if e.get("status") == "built"}
            print(f"deploy {i:4d}: {secs[-1]:5.2f} s  rss {rss[-1]:7.1f} MiB  fds {fds[-1]:3d}  "
                  f"bundle temps {len(temps)}  top1 {top}", flush=True)
    total = time.perf_counter() - t_all

    base = rss[args.warmup - 1]
    growth = 100.0 * (rss[-1] - base) / base
    peak_growth = 100.0 * (max(rss[args.warmup - 1:]) - base) / base
    # onnxruntime's native library keeps one fixed session-id file, $TMPDIR/.ses, per machine: not ours, not a dir
    tmp_left = sorted(p.name for p in private_tmp.iterdir() if not (p.name == ".ses" and p.is_file()))
    ort_ses = (private_tmp / ".ses").is_file()
    bundle_temps = [p.name for p in out.parent.iterdir() if p.name not in (out.name, f".{out.name}.lock")]
    secs_sorted = sorted(secs)
    print("-" * 78)
    print(f"deploys: {args.n} in {total:.0f} s (median {secs_sorted[len(secs) // 2]:.2f} s, first {secs[0]:.2f} s, "
          f"max {secs_sorted[-1]:.2f} s)")
    print(f"rss: after 1 {rss[0]:.1f} MiB, after {args.warmup} {base:.1f} MiB, after {args.n} {rss[-1]:.1f} MiB, "
          f"peak after warm-up {max(rss[args.warmup - 1:]):.1f} MiB")
    print(f"rss growth after deploy {args.warmup}: {growth:+.2f}% (peak {peak_growth:+.2f}%, limit {args.max_growth}%)")
    print(f"open fds: after 1 {fds[0]}, after {args.warmup} {fds[args.warmup - 1]}, after {args.n} {fds[-1]}")
    print(f"bundle temp dirs seen after any deploy: {leftovers_seen}; left beside the output now: {bundle_temps}")
    print(f"files/dirs left in the process temp dir: {len(tmp_left)} {tmp_left[:5]}"
          f"{' (plus onnxruntime native .ses session-id file)' if ort_ses else ''}")
    ok = (growth < args.max_growth and peak_growth < args.max_growth and leftovers_seen == 0 and not bundle_temps
          and not tmp_left and fds[-1] <= fds[args.warmup - 1] + 2)
    print("SOAK PASS" if ok else "SOAK FAIL")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
