"""`edgerep fleet up|join|status|deploy`: build, benchmark and gate on the target devices, through Ray."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HELP = "build, benchmark and gate on the target devices themselves, through a Ray cluster"
DESCRIPTION = """\
Run edgerep on the devices themselves. Each device (a Jetson, a GPU box, a CPU server) joins a Ray
cluster as a node that advertises its target profile; `fleet deploy` ships a bundle's ONNX files
(never the checkpoint) to every node of each target, builds the engines there (TensorRT plans on
the device that runs them), times them, scores them on the test split, and merges one report and
one gate on the CI side: a row per node x engine, a JUnit test case per target x engine.

Ray's token authentication is on: `up` makes a token (~/.ray/auth_token, mode 0600) and says where;
copy it to each device and pass --token-file (or set RAY_AUTH_TOKEN). RAY_AUTH_MODE=disabled turns it
off. Results come back as data only, never unpickled; still keep the cluster on a private network,
with TLS where it crosses one you do not own (docs/fleet.md, "Trust model").

  up       start the head (plain `ray start --head`; no jobs run on it). Run it where CI runs.
  join     check with `doctor` that this device fits the profile, then join as a node for it
  status   nodes, their targets, versions (edgerep, torch, onnxruntime, TensorRT, JetPack), busy
  deploy   the bundle on every node of each target; one merged report and gate

examples:
  edgerep fleet up --port 6379                                   # on the CI runner
  edgerep fleet join --address ci-runner:6379 --target jetson-orin-nano --token-file auth_token --block
  edgerep fleet status --address ci-runner:6379
  edgerep fleet deploy engines/out/model --address ci-runner:6379 --targets jetson-orin-nano,x86-cpu
  edgerep fleet deploy bundle/ --address ci-runner:6379 --shard --retries 1 --timeout 900 --junit gate.xml

  # a one-machine trial on loopback only
  edgerep fleet up --port 6380 --node-ip-address 127.0.0.1
  edgerep fleet join --address 127.0.0.1:6380 --node-ip-address 127.0.0.1 --target x86-cpu --num-cpus 1

exit codes: 0 ok (deploy: the gate passed), 1 the gate failed (an engine missed a threshold, a node
was lost, or a target has no node), 2 bad input (the device does not fit the profile, no Ray head at
--address, not a bundle), 3 internal error.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="fleet_command", metavar="{up,join,status,deploy}", required=True)

    up = sub.add_parser("up", help="start a Ray head for the fleet (no jobs run on it)",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Start the Ray head: `ray start --head` with no CPUs for jobs and no dashboard.\n\n"
                                    "examples:\n  edgerep fleet up --port 6379\n"
                                    "  edgerep fleet up --port 6380 --node-ip-address 127.0.0.1 --block")
    up.add_argument("--port", type=int, default=6379, help="GCS port devices join at (default 6379)")
    _node_args(up)

    join = sub.add_parser("join", help="check that this device fits PROFILE, then join the cluster as its node",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          description="Check with `edgerep doctor` that this device runs every engine of the "
                                      "profile itself (TensorRT for a TensorRT profile, the CPU architecture and "
                                      "INT8 ISA for a CPU one), then start a Ray node advertising the resource "
                                      "edgerep-target:PROFILE = 1. A mismatch is exit 2 naming what is missing.\n\n"
                                      "examples:\n  edgerep fleet join --address 10.0.0.5:6379 --target jetson-orin-nano"
                                      " --block\n  edgerep fleet join --address 10.0.0.5:6379 --target x86-cpu "
                                      "--check-only")
    join.add_argument("--address", required=True, help="the head's HOST:PORT")
    join.add_argument("--target", required=True, help="the profile this device is (engines/*.toml name)")
    join.add_argument("--num-cpus", type=int, help="CPUs Ray may use here (default: all)")
    join.add_argument("--check-only", action="store_true", help="only check that the device fits; do not join")
    _node_args(join)

    st = sub.add_parser("status", help="nodes, targets, versions and whether they are busy",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="List the cluster's nodes: targets, versions (asked on each node), busy.\n\n"
                                    "examples:\n  edgerep fleet status --address 10.0.0.5:6379\n"
                                    "  edgerep fleet status --address 10.0.0.5:6379 --json")
    st.add_argument("--address", required=True, help="the head's HOST:PORT")
    st.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each node's versions")
    st.add_argument("--json", action="store_true", help="print JSON")
    _token_arg(st)

    dp = sub.add_parser("deploy", help="build, time, score and gate a bundle on every node of each target",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Ship BUNDLE's ONNX / QDQ files and calibration cache to every node of each "
                                    "target, build the engines there, time them, score them on the test split "
                                    "and merge one report (OUT/report.json, report.md, gate.xml; plans and "
                                    "sidecars in OUT/engines/<target>/<node>/). The unfolded reference runs "
                                    "once, here.\n\n"
                                    "examples:\n  edgerep fleet deploy engines/out/model --address 10.0.0.5:6379\n"
                                    "  edgerep fleet deploy bundle --address 10.0.0.5:6379 --targets dgpu,x86-cpu "
                                    "--shard --retries 1 --out fleet-out --force --junit gate.xml")
    dp.add_argument("bundle", type=Path, help="a bundle written by `edgerep deploy`")
    dp.add_argument("--address", required=True, help="the head's HOST:PORT")
    dp.add_argument("--targets", help="comma-separated target profiles (default: the bundle's target)")
    dp.add_argument("--data", help="test data (default: the bundle's evaluation data); read here, shipped as arrays")
    dp.add_argument("--out", type=Path, help="output folder (default BUNDLE.fleet beside the bundle)")
    dp.add_argument("--force", action="store_true", help="replace an existing output folder")
    dp.add_argument("--shard", action="store_true",
                    help="split the test split across the nodes of each target (merged into one top-1, mAP or PSNR)")
    dp.add_argument("--retries", type=int, default=0, help="re-run a lost node's work this many times (default 0)")
    dp.add_argument("--timeout", type=float, default=600.0, help="seconds per target before its rows are lost")
    dp.add_argument("--eval-samples", type=int, help="score at most this many test samples")
    dp.add_argument("--batch", type=int, default=1, help="batch size for latency (default 1)")
    dp.add_argument("--bench-seconds", type=float, default=1.0, help="time budget per engine for latency (s)")
    dp.add_argument("--max-drop", type=float,
                    help="gate: max drop vs unfolded in the task's unit: top-1 / mAP points (0.5), SR PSNR dB (0.1)")
    dp.add_argument("--max-latency-ms", type=float, help="gate: max p50 latency on every node (ms)")
    dp.add_argument("--no-accuracy-gate", action="store_true",
                    help="a latency-only run: no labelled test data needed, no accuracy verdict")
    dp.add_argument("--config", type=Path, help="gate.toml with a [gate] table (flags win)")
    dp.add_argument("--junit", type=Path, help="also write the JUnit XML here")
    dp.add_argument("--json", action="store_true", help="print report.json instead of the table")
    _token_arg(dp)


def _token_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token-file", help="file holding the cluster's Ray token (default: RAY_AUTH_TOKEN, "
                                        "RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token; RAY_AUTH_MODE=disabled: none)")


def _node_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-ip-address", help="address this node listens and advertises at (e.g. 127.0.0.1)")
    p.add_argument("--object-store-mb", type=int, help="Ray object store size in MiB (default: Ray's)")
    p.add_argument("--temp-dir", help="Ray's temporary folder (default: Ray's)")
    p.add_argument("--block", action="store_true", help="stay in the foreground; Ctrl-C stops the node")
    _token_arg(p)


def run(args: argparse.Namespace) -> int:
    return {"up": _up, "join": _join, "status": _status, "deploy": _deploy}[args.fleet_command](args)


def _start(argv: list[str], block: bool) -> int:
    from edgerep.fleet.cluster import node_env, require_ray

    require_ray()
    if block:  # become the node: its processes share our process group, a kill of the group stops them all
        sys.stdout.flush()
        os.execve(argv[0], argv, node_env())
    return subprocess.run(argv, env=node_env()).returncode


def _up(args: argparse.Namespace) -> int:
    from edgerep.fleet.auth import use_token
    from edgerep.fleet.cluster import ray_start_argv

    print(f"edgerep fleet up: {use_token(create=True, token_file=args.token_file)}; devices join with that "
          "token (--token-file)", file=sys.stderr, flush=True)

    return _start(ray_start_argv(head=True, port=args.port, node_ip=args.node_ip_address,
                                 object_store_mb=args.object_store_mb, temp_dir=args.temp_dir, block=args.block),
                  args.block)


def _join(args: argparse.Namespace) -> int:
    from edgerep.engines.profiles import load_profile
    from edgerep.errors import EdgerepError
    from edgerep.fleet.cluster import parse_address, ray_start_argv
    from edgerep.fleet.fit import fit_problems

    parse_address(args.address)
    profile = load_profile(args.target)
    problems = fit_problems(profile)
    if problems:
        raise EdgerepError(f"--target {profile.name}: this device cannot be that target; it needs "
                           + "; ".join(problems), hint="`edgerep doctor` shows what is here")
    print(f"edgerep fleet join: this device fits {profile.name}", file=sys.stderr)
    if args.check_only:
        return 0
    from edgerep.fleet.auth import use_token

    print(f"edgerep fleet join: {use_token(create=False, token_file=args.token_file)}", file=sys.stderr, flush=True)
    return _start(ray_start_argv(head=False, address=args.address, target=profile.name, node_ip=args.node_ip_address,
                                 num_cpus=args.num_cpus, object_store_mb=args.object_store_mb,
                                 temp_dir=args.temp_dir, block=args.block), args.block)


def _status(args: argparse.Namespace) -> int:
    from edgerep.fleet.auth import use_token
    from edgerep.fleet.cluster import status

    if args.token_file:  # points Ray at it; without one, connecting names what is missing (after the address)
        use_token(create=False, token_file=args.token_file)

    nodes = status(args.address, timeout=args.timeout)
    if args.json:
        print(json.dumps([n.to_dict() for n in nodes], indent=2))
        return 0
    from rich.table import Table

    from edgerep.report.console import make_console

    t = Table(title=f"edgerep fleet status: {args.address}")
    for col in ("node", "address", "alive", "targets", "busy", "edgerep", "torch", "onnxruntime", "TensorRT",
                "JetPack", "CPU (INT8 ISA)"):
        t.add_column(col, overflow="fold")
    for n in nodes:
        v = n.versions
        t.add_row(n.label, n.address, "yes" if n.alive else f"no {n.death_reason}".strip(),
                  ", ".join(n.targets) or "(head)", ", ".join(n.busy) or "no", str(v.get("edgerep", v.get("error", ""))),
                  str(v.get("torch") or ""), str(v.get("onnxruntime") or ""), str(v.get("tensorrt") or "none"),
                  str(v.get("jetpack") or "n/a"), f"{v.get('cpu') or ''} ({v.get('int8_isa') or '?'})")
    make_console().print(t)
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from edgerep.outputs import check_output_dir, check_output_file

    if args.junit is not None:  # before any work: a missing folder is exit 2 naming the flag
        check_output_file(args.junit, "--junit")
    if args.out is not None:
        check_output_dir(args.out, "--out")
    from edgerep.bench.gate import GateThresholds
    from edgerep.fleet.auth import use_token
    from edgerep.fleet.deploy import FleetOptions, fleet_deploy

    if args.token_file:  # points Ray at it; without one, connecting names what is missing (after bundle and address)
        use_token(create=False, token_file=args.token_file)

    th = GateThresholds.from_toml(args.config) if args.config else GateThresholds()
    th = th.merged(max_drop=args.max_drop, max_latency_ms=args.max_latency_ms)
    if args.max_drop is None and not args.config:  # deploy's default for the bundle's task (SR: 0.1 dB)
        from dataclasses import replace

        from edgerep.bench.gate import default_max_drop
        from edgerep.fleet.payload import read_bundle

        th = replace(th, max_drop=default_max_drop((read_bundle(args.bundle).report.get("task") or {}).get("name")))
    if args.no_accuracy_gate:
        from dataclasses import replace

        th = replace(th, max_drop=None, require_accuracy=False)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    opts = FleetOptions(bundle=args.bundle, address=args.address, targets=targets, data=args.data, out=args.out,
                        force=args.force, shard=args.shard, retries=args.retries, timeout_s=args.timeout,
                        eval_samples=args.eval_samples, batch=args.batch, bench_seconds=args.bench_seconds,
                        thresholds=th)
    say = (lambda m: None) if args.json else (lambda m: print(f"fleet: {m}", file=sys.stderr, flush=True))
    result = fleet_deploy(opts, progress=say)
    if args.junit:
        args.junit.write_text(result.junit)
    if args.json:
        print(json.dumps(result.report, indent=2, default=str))
    else:
        _print_table(result.report, result.out)
    return 0 if result.passed else 1


def _print_table(report: dict, out: Path) -> None:
    from rich.table import Table

    from edgerep.fleet.report import COLUMNS, metric_name, node_lines, table_rows
    from edgerep.report.fmt import metric_value as fmt_value
    from edgerep.report.console import make_console

    c = make_console()
    t = Table(title=f"edgerep fleet deploy -> {out}")
    for col in COLUMNS:
        t.add_column(col, overflow="fold")
    for r in table_rows(report):
        t.add_row(*r)
    c.print(t)
    ref = report.get("reference") or {}
    acc = ref.get("accuracy") or {}
    if acc:
        c.print(f"reference (unfolded FP32, measured once here): {metric_name(acc)} {fmt_value(acc)} on "
                f"{acc.get('samples')} samples; {ref.get('source')}")
    for line in node_lines(report):
        c.print(f"node {line}")
    gate = report.get("gate") or {}
    for w in report.get("warnings", []):
        c.print(f"[yellow]warning[/]: {w}")
    c.print("gate: " + ("[green]PASSED[/]" if gate.get("passed") else "[red]FAILED[/]"))
    for ch in gate.get("checks", []):
        if not ch["passed"]:
            c.print(f"  [red]FAIL[/] {ch['message']}")
