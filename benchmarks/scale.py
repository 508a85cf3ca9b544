"""``edgerep deploy`` against the same pipeline by hand, on a real-size model, in one run (issue 23).

Builds one checkpoint (a timm model, ``--classes`` outputs, random weights with randomized BN
statistics, nothing downloaded), then runs, each as its own child process:

* by hand (``benchmarks/scale_by_hand.py``): timm ``reparameterize_model``, ``torch.onnx.export``,
  onnxruntime ``quantize_static`` (u8s8, per-channel, QDQ, the same calibration images through a
  ``CalibrationDataReader``), one onnxruntime session, 20 runs;
* ``edgerep deploy CKPT --data synthetic --no-accuracy-gate --calib-samples N`` (the CLI, run through
  ``benchmarks/stage_rss.py``, which adds each stage's peak RSS).

Wall is the child's elapsed time; peak RSS is the child's own ``ru_maxrss`` from ``os.wait4`` (Linux:
the largest resident set of that process or any descendant it waited for). Beside deploy's figures,
its stage times (report.json ``timings_s``). CPU, ISA and the load average are printed with them:
wall times on a loaded host are noise, peak RSS is not.

timm needs a torchvision that imports beside this torch; ``pip install --no-deps timm`` into its own
folder does not help: ``import timm`` fails on ``timm.layers``' ``import torchvision.ops`` (timm 1.0.31,
torch 2.13.0+cpu, no torchvision). Without timm, ``--zoo`` builds edgerep's own zoo model of that name for
both sides (by hand folds it with its blocks' own fold, as a user with a ``switch_to_deploy`` would).

    .venv/bin/python benchmarks/scale.py                           # repvgg_a0, 224, 256 images
    .venv/bin/python benchmarks/scale.py --zoo                     # edgerep's zoo repvgg_a0 (no timm)
    .venv/bin/python benchmarks/scale.py --zoo --size 640          # an A0 backbone at 640x640
    .venv/bin/python benchmarks/scale.py --calib-samples 1024 --json > a0-1024.json
    .venv/bin/python benchmarks/scale.py --zoo --again             # and a second deploy on the same cache
    .venv/bin/python benchmarks/scale.py --table *.json    # the README's table from saved --json runs
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_checkpoint(model: str, size: int, classes: int, path: Path, zoo: bool = False) -> None:
    """A timm ``model`` (``zoo``: edgerep's zoo model of that name) with randomized BN statistics saved as an
    edgerep checkpoint (arch timm:NAME, or NAME)."""
    import torch

    from edgerep.blocks.testing import randomize_
    from edgerep.checkpoint import CheckpointMeta, save_checkpoint

    torch.manual_seed(0)
    if zoo:
        from edgerep.models.registry import create_model

        net, arch = randomize_(create_model(model, num_classes=classes), seed=0), model
    else:
        from edgerep.models.libraries import import_timm

        timm = import_timm()
        net = randomize_(timm.create_model(model, pretrained=False, num_classes=classes), seed=0)
        arch = f"timm:{model}"
    meta = CheckpointMeta(arch=arch, arch_kwargs={"num_classes": classes}, input_shape=(3, size, size),
                          mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), class_names=[str(i) for i in range(classes)])
    save_checkpoint(path, net, meta)


def run_child(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; its wall seconds, peak RSS (MiB, ``os.wait4`` ru_maxrss), exit code and stdout."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=ROOT)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(ru.ru_maxrss / 1024.0, 0), "rc": p.returncode,
            "stdout": stdout, "stderr_tail": stderr[-2000:]}


def host() -> dict:
    """CPU model, the int8 dot-product ISA edgerep detects, cores and the load average now."""
    from edgerep.quant.cpu_features import detect_cpu_features

    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "isa": detect_cpu_features().int8_dot, "cores": os.cpu_count(),
            "loadavg": [round(v, 2) for v in os.getloadavg()]}


GIB_JETSON = 8.0  # an 8 GB Jetson's memory, shared by CPU and GPU


def _again_cell(r: dict) -> str:
    """The second deploy's wall and ratio to by hand (``--again``), or a dash for a run without one."""
    g = r.get("deploy_again")
    return f"{g['wall_s']:.1f} s ({g['ratio']['wall']:.1f}x)" if g else "–"


def table(results: list[dict]) -> str:
    """One Markdown row per saved ``--json`` run (model, size, images), deploy against by hand, with the
    host's load beside each: the README's table."""
    rows = ["| model | input | images | by hand: wall, peak RSS | deploy: wall (x), peak RSS (x) | deploy stages (s) "
            "| second deploy, same cache: wall (x) | load before / after |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["size"], r["model"], r["calib_samples"])):
        h, d = r["by_hand"], r["deploy"]
        stages = {k: v for k, v in d["timings_s"].items() if k != "total" and v >= 0.5}
        rows.append(f"| {r['model']} | {r['size']}x{r['size']} | {r['calib_samples']:,} | {h['wall_s']:.1f} s, "
                    f"{h['peak_rss_mib'] / 1024:.2f} GiB | {d['wall_s']:.1f} s ({r['ratio']['wall']:.1f}x), "
                    f"{d['peak_rss_mib'] / 1024:.2f} GiB ({r['ratio']['peak_rss']:.1f}x) | "
                    + ", ".join(f"{k} {v:.0f}" for k, v in sorted(stages.items(), key=lambda kv: -kv[1]))
                    + f" | {_again_cell(r)} | {r['host_before']['loadavg'][0]:g} / {r['host_after']['loadavg'][0]:g} |")
    hosts = {(r["host_before"]["cpu"], r["host_before"]["isa"], r["host_before"]["cores"]) for r in results}
    fits = [f"{r['model']} {r['size']} ({r['calib_samples']})" for r in results
            if r["deploy"]["peak_rss_mib"] / 1024 > GIB_JETSON * 0.5]
    note = ("every run's peak is under half of an 8 GB Jetson's memory" if not fits else
            "over half of an 8 GB Jetson's memory (shared with the GPU): " + ", ".join(fits))
    return "\n".join(rows) + "\n\nhost: " + "; ".join(f"{c} ({i}), {n} cores" for c, i, n in sorted(hosts)) \
        + f"; peak RSS: os.wait4 ru_maxrss of each child; {note}"


def _stage_rss(run: dict) -> dict:
    """The per-stage peak RSS ``benchmarks/stage_rss.py`` printed on the child's stderr ({} when none)."""
    for line in run["stderr_tail"].splitlines():
        if line.startswith("STAGE_RSS "):
            return json.loads(line[len("STAGE_RSS "):])
    return {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="repvgg_a0", help="timm model name (default repvgg_a0)")
    ap.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--calib-samples", type=int, default=256, help="calibration images (default 256)")
    ap.add_argument("--zoo", action="store_true",
                    help="edgerep's own zoo model of that name on both sides (by hand folds with the blocks' own "
                         "fold): for a venv without timm")
    ap.add_argument("--again", action="store_true",
                    help="then deploy the same checkpoint on the same data a second time, with the first deploy's "
                         "cache folder (what a CI that deploys every pull request pays from its second run on)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (default: a temporary one)")
    ap.add_argument("--table", nargs="+", type=Path, metavar="JSON",
                    help="print the README's table from runs saved with --json (runs nothing)")
    a = ap.parse_args()
    if a.table:
        print(table([json.loads(p.read_text()) for p in a.table]))
        return 0

    work = a.keep or Path(tempfile.mkdtemp(prefix="edgerep-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"{a.model}_{a.size}.pt"
    build_checkpoint(a.model, a.size, a.classes, ckpt, zoo=a.zoo)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["EDGEREP_CACHE"] = str(work / "cache")  # a cold calibration cache: both pipelines start from nothing
    before = host()
    hand = run_child([sys.executable, str(ROOT / "benchmarks" / "scale_by_hand.py"), str(ckpt), "--model", a.model,
                      "--classes", str(a.classes), "--size", str(a.size), "--calib-samples", str(a.calib_samples),
                      "--workdir", str(work)] + (["--zoo"] if a.zoo else []), env)
    def deploy(bundle: str) -> dict:
        return run_child([sys.executable, str(ROOT / "benchmarks" / "stage_rss.py"), "deploy", str(ckpt), "-o",
                          str(work / bundle), "--force", "--data", "synthetic", "--no-accuracy-gate", "--calib-samples",
                          str(a.calib_samples), "--cache-dir", str(work / "cache"), "--json"], env)

    dep = deploy("bundle")
    again = deploy("bundle-again") if a.again else None
    after = host()
    runs = [("by hand", hand, (0,), None), ("edgerep deploy", dep, (0, 1), "bundle")]  # deploy: 1 is a failed gate
    runs += [("edgerep deploy (again)", again, (0, 1), "bundle-again")] if again else []
    for name, r, ok, bundle in runs:
        if r["rc"] not in ok or (bundle and not (work / bundle / "report.json").is_file()):
            print(f"{name} failed (exit {r['rc']}):\n{r['stderr_tail']}", file=sys.stderr)
            return 3
    hand_steps = json.loads(hand["stdout"].strip().splitlines()[-1])
    report = json.loads((work / "bundle" / "report.json").read_text())
    stage_rss = _stage_rss(dep)
    res = {"model": a.model + (" (edgerep zoo)" if a.zoo else ""), "size": a.size, "classes": a.classes, "calib_samples": a.calib_samples,
           "host_before": before, "host_after": after,
           "by_hand": {k: hand[k] for k in ("wall_s", "peak_rss_mib")} | {"steps_s": hand_steps},
           "deploy": {k: dep[k] for k in ("wall_s", "peak_rss_mib")} | {"timings_s": report.get("timings_s", {}),
                                                                        "stage_peak_rss_mib": stage_rss},
           "peak_rss_source": "os.wait4 ru_maxrss of each child process",
           "deploy_gate_passed": (report.get("gate") or {}).get("passed")}
    res["ratio"] = {"wall": round(dep["wall_s"] / hand["wall_s"], 2),
                    "peak_rss": round(dep["peak_rss_mib"] / hand["peak_rss_mib"], 2)}
    if again:
        timings = json.loads((work / "bundle-again" / "report.json").read_text()).get("timings_s", {})
        res["deploy_again"] = {k: again[k] for k in ("wall_s", "peak_rss_mib")} | {
            "timings_s": timings, "stage_peak_rss_mib": _stage_rss(again),
            "ratio": {"wall": round(again["wall_s"] / hand["wall_s"], 2),
                      "peak_rss": round(again["peak_rss_mib"] / hand["peak_rss_mib"], 2)},
            "saved_of_first_wall": round(1.0 - again["wall_s"] / dep["wall_s"], 3)}
    if a.json:
        print(json.dumps(res, indent=2))
        return 0
    h = before
    print(f"{a.model}, {a.classes} classes, 3x{a.size}x{a.size}, {a.calib_samples} calibration images; "
          f"host: {h['cpu']} ({h['isa']}), {h['cores']} cores, load average {h['loadavg']} before, "
          f"{after['loadavg']} after")
    print("| pipeline | wall | peak RSS | stage times (s) |\n|---|---|---|---|")
    print(f"| by hand | {hand['wall_s']:.1f} s | {hand['peak_rss_mib'] / 1024:.2f} GiB | "
          + ", ".join(f"{k} {v:.1f}" for k, v in hand_steps.items()) + " |")
    ts = {k: v for k, v in res["deploy"]["timings_s"].items() if k != "total"}
    print(f"| edgerep deploy | {dep['wall_s']:.1f} s ({res['ratio']['wall']:.1f}x) | "
          f"{dep['peak_rss_mib'] / 1024:.2f} GiB ({res['ratio']['peak_rss']:.1f}x) | "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(ts.items(), key=lambda kv: -kv[1])) + " |")
    if again:
        g = res["deploy_again"]
        ts = {k: v for k, v in g["timings_s"].items() if k != "total"}
        print(f"| edgerep deploy again (same cache) | {g['wall_s']:.1f} s ({g['ratio']['wall']:.1f}x; "
              f"{100 * g['saved_of_first_wall']:.0f}% less than the first) | {g['peak_rss_mib'] / 1024:.2f} GiB "
              f"({g['ratio']['peak_rss']:.1f}x) | "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(ts.items(), key=lambda kv: -kv[1])) + " |")
    if stage_rss:
        print("deploy's peak RSS per stage (MiB, VmRSS sampled every 20 ms): "
              + ", ".join(f"{k} {v}" for k, v in stage_rss.items()))
    print(f"peak RSS: {res['peak_rss_source']}; deploy's gate passed: {res['deploy_gate_passed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
