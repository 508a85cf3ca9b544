"""`edgerep fleet deploy` as a library call: ship a bundle to every node of each target, build, time and
score there, and merge one report (a row per node x engine) and one gate on the CI side.

Faults never hang it: each target has a deadline, a node that dies or does not answer in time leaves
rows saying ``lost: <reason>`` (its work optionally retried elsewhere), a job that raised on its node
leaves rows ``failed`` with the error (never retried: the device itself failed, and the gate says so), a
target no node advertises gets a ``no node for target`` row, and the partial report is written either way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgerep.errors import EdgerepError
from edgerep.fleet import resource_name

Progress = Callable[[str], None]


@dataclass
class FleetOptions:
    """Everything `edgerep fleet deploy` can be told."""

    bundle: Path
    address: str
    targets: list[str] | None = None  # default: the bundle's own target
    data: str | None = None  # default: the bundle's evaluation data
    out: Path | None = None
    force: bool = False
    shard: bool = False  # split the test split across the nodes of each target instead of every node scoring all
    retries: int = 0
    timeout_s: float = 600.0  # per target
    eval_samples: int | None = None
    batch: int = 1
    bench_seconds: float = 1.0
    warmup: int = 10
    thresholds: Any = None  # edgerep.bench.gate.GateThresholds; default max_drop 0.5


@dataclass
class FleetResult:
    out: Path
    report: dict
    passed: bool
    junit: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class _Job:
    target: str
    node: Any  # NodeInfo
    shards: list[int]
    bench: bool
    ref: Any = None
    submitted: float = 0.0  # perf_counter at submission: the CI side's wall time of the job
    attempt: int = 0
    retry_of: str | None = None  # label of the node whose work this job redoes


def default_out(bundle: Path) -> Path:
    """``<bundle>.fleet`` beside the bundle."""
    return bundle.parent / f"{bundle.name}.fleet"


def fleet_deploy(opts: FleetOptions, progress: Progress | None = None) -> FleetResult:
    """Run the fleet deploy; the output folder appears whole (atomically), partial results included."""
    from edgerep.bundle import atomic_bundle, check_output_path
    from edgerep.fleet import cluster, wire
    from edgerep.fleet.payload import load_reference, payload, read_bundle, test_set
    from edgerep.fleet.scoring import Scorer, lead_scorer, task_of

    say = progress or (lambda _m: None)
    marks: dict[str, float] = {}
    t_all = time.perf_counter()
    if opts.retries < 0 or opts.timeout_s <= 0 or opts.batch < 1:
        raise EdgerepError("--retries must be >= 0, --timeout > 0 and --batch >= 1")
    bundle = read_bundle(opts.bundle)
    task = task_of(bundle, opts.data)
    out = Path(opts.out) if opts.out else default_out(bundle.path)
    check_output_path(out, opts.force)
    targets = list(opts.targets or ([bundle.target] if bundle.target else []))
    if not targets:
        raise EdgerepError(f"{bundle.path}: the manifest names no target; pass --targets")

    t = time.perf_counter()
    say(f"connecting to {opts.address}")
    ray = cluster.connect(opts.address)
    nodes = [n for n in cluster.list_nodes(ray) if n.alive]
    by_target = {tg: [n for n in nodes if tg in n.targets] for tg in targets}
    marks["connect"] = time.perf_counter() - t

    # ---- reference (once, here) and the shards ------------------------------------------------
    t = time.perf_counter()
    ref = load_reference(bundle)
    dataset, spec, cap, same = test_set(bundle, ref.meta, opts.data)
    if dataset.name == "synthetic":  # no test data: latency only
        dataset = None
    n_shards = max([len(v) for v in by_target.values()] + [1]) if opts.shard else 1
    shards_meta: list[dict] = []
    shard_refs: list[Any] = []
    x_bench = None
    scorer, gt_source = Scorer(task), None
    if dataset is not None:
        say(f"reading the test set ({spec}, {len(dataset)} samples"
            + (", the bundle's own" if same else "") + f") and running the reference ({ref.source.split(' ')[0]}) once")
        labels: list = []  # every row's target (detect: boxes; the ground truth of data without a COCO file)
        for meta, s, ys in prepare_shards(task, dataset, ref.model, n_shards, limit=opts.eval_samples or cap):
            if x_bench is None and len(s["x"]) >= opts.batch:
                x_bench = np.ascontiguousarray(s["x"][:opts.batch])
            shards_meta.append(meta)
            labels += ys
            shard_refs.append(ray.put(wire.encode(s)))  # data only, to the node too
        scorer, gt_source = lead_scorer(task, bundle, dataset, shards_meta, labels or None, same)
    if x_bench is None:
        x_bench = np.random.default_rng(0).standard_normal((opts.batch, *ref.meta.input_shape)).astype(np.float32)
    marks["reference_and_shards"] = time.perf_counter() - t

    t = time.perf_counter()
    files_ref = ray.put(wire.encode(payload(bundle)))
    job_spec = {"fp32": bundle.fp32, "int8": dict(bundle.int8), "session_config": bundle.session_config,
                "bench": {"enabled": True, "seconds": opts.bench_seconds, "warmup": opts.warmup}, "x_bench": x_bench,
                "input_shape": list(x_bench.shape[1:]), "task": task}
    marks["ship"] = time.perf_counter() - t

    # ---- submit, wait with a deadline per target, retry lost work once if asked ------------------
    from edgerep.fleet.node import run_job_data

    remote = ray.remote(run_job_data)

    def submit(job: _Job) -> _Job:
        spec_j = {**job_spec, "target": job.target, "bench": {**job_spec["bench"], "enabled": job.bench}}
        job.ref = remote.options(num_cpus=0, max_retries=0, resources={resource_name(job.target): 1},
                                 scheduling_strategy=cluster.on_node(job.node.node_id)).remote(
            files_ref, wire.encode(spec_j), *[shard_refs[i] for i in job.shards])
        job.submitted = time.perf_counter()
        return job

    jobs: list[_Job] = []
    for tg in targets:
        for k, node in enumerate(by_target[tg]):
            mine = list(range(len(shard_refs)))[k::len(by_target[tg])] if opts.shard else list(range(len(shard_refs)))
            jobs.append(submit(_Job(tg, node, mine, bench=True)))
        say(f"{tg}: {len(by_target[tg])} node(s)" + (", sharded" if opts.shard else ""))
    t = time.perf_counter()
    deadline = {tg: time.monotonic() + opts.timeout_s for tg in targets}
    done: list[tuple[_Job, dict]] = []
    lost: list[tuple[_Job, str]] = []
    failed: list[tuple[_Job, str]] = []  # the job raised on its node: an answer, and a failing one
    pending = list(jobs)
    while pending:
        now = time.monotonic()
        for j in [j for j in pending if now >= deadline[j.target]]:
            try:
                ray.cancel(j.ref, force=True)
            except Exception:  # the node may be gone already; the row says lost either way
                pass
            pending.remove(j)
            lost.append((j, f"no result within --timeout {opts.timeout_s:g} s"))
            say(f"{j.target} on {j.node.label}: lost (timeout)")
        if not pending:
            break
        wait_s = max(0.05, min(deadline[j.target] for j in pending) - time.monotonic())
        ready, _ = ray.wait([j.ref for j in pending], num_returns=1, timeout=wait_s)
        for r in ready:
            j = next(j for j in pending if j.ref == r)
            pending.remove(j)
            try:
                res = wire.read(ray, r)  # data only: a node's result is never unpickled here
                res["timings_s"]["ci_wall"] = round(time.perf_counter() - j.submitted, 3)
                done.append((j, res))
                say(f"{j.target} on {j.node.label}: done")
            except Exception as e:  # node died or worker crashed (lost), or the job raised there (failed)
                why = _why_lost(e)
                if is_task_error(e):  # the device ran the job and it failed: not a lost connection, no retry
                    say(f"{j.target} on {j.node.label}: failed ({why})")
                    failed.append((j, why))
                    continue
                say(f"{j.target} on {j.node.label}: lost ({why})")
                retry = _retry_job(j, opts, ray, cluster) if j.attempt < opts.retries else None
                if retry is not None:
                    pending.append(submit(retry))
                    say(f"{j.target}: retrying {j.node.label}'s work on {retry.node.label}")
                lost.append((j, why))
    marks["remote"] = time.perf_counter() - t

    # ---- merge, gate, write ------------------------------------------------------------------
    from edgerep.fleet.gate import gate_fleet, junit_xml
    from edgerep.fleet.report import FleetOutcome, FleetSetup, build_report, markdown, serialized

    setup = FleetSetup(bundle=bundle, ref=ref, data=spec, same_test_set=same, targets=targets, by_target=by_target,
                       shards=shards_meta, sharded=opts.shard, batch=opts.batch, scorer=scorer, ground_truth=gt_source)
    report = build_report(setup, FleetOutcome(done, lost, failed))
    from edgerep.bench.gate import GateThresholds, default_max_drop

    th = opts.thresholds or GateThresholds(max_drop=default_max_drop(task["name"]))  # SR: 0.1 dB, else 0.5 points
    result = gate_fleet(report, th)
    report["gate"] = result.to_dict()
    xml = junit_xml(report, result)
    marks["total"] = time.perf_counter() - t_all
    report["timings_s"] = {k: round(v, 3) for k, v in marks.items()}
    import json

    with atomic_bundle(out, force=opts.force) as tmp:
        for tg, label, files in report.pop("_artifacts"):
            d = tmp / "engines" / tg / label
            for rel, data in files.items():
                p = d / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
        for rel, content in report.pop("_files").items():  # detect: predictions/*.json; sr: sr/*.json
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(content, separators=(",", ":")) + "\n")
        report = serialized(report)
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "report.md").write_text(markdown(report))
        (tmp / "gate.xml").write_text(xml)
    return FleetResult(out=out.resolve(), report=report, passed=result.passed, junit=xml, timings=marks)


def prepare_shards(task: dict, dataset: Any, model: Any, shards: int, limit: int | None = None
                   ) -> Iterator[tuple[dict, dict, list]]:
    """The test split in ``shards`` shards, one at a time: (its meta for the report, with the unfolded reference's
    part scored here; what travels to a node: inputs, the reference's outputs and the task's extras; the rows'
    targets as the data set gives them)."""
    from edgerep.fleet.payload import make_shards
    from edgerep.fleet.scoring import shard_extras, shard_part
    from edgerep.pipeline import TorchReference

    for s in make_shards(dataset, TorchReference(model), shards, limit=limit):
        targets = s["y"] or []
        s = {**s, **shard_extras(task, dataset, s)}
        meta = {"index": s["index"], "start": s["start"], "stop": s["stop"],
                "classes": int(s["ref"].shape[1]) if s["ref"].ndim == 2 else None,
                "reference": shard_part(task, s["ref"], {**s, "ref": None})}
        yield meta, s, targets


def is_task_error(e: BaseException) -> bool:
    """True when the job itself failed on its node (the node's own error, sent as data: ``wire.TaskFailed``;
    or Ray's ``RayTaskError`` around the job's exception), as opposed to a lost node, worker or object,
    which Ray reports with its own errors (and a retry may mend)."""
    from edgerep.fleet.wire import TaskFailed

    if isinstance(e, TaskFailed):
        return True
    try:
        from ray.exceptions import RayError, RayTaskError
    except ImportError:  # no Ray, no Ray errors: whatever it is, the job raised
        return True
    return isinstance(e, RayTaskError) and not isinstance(getattr(e, "cause", None), RayError)


def _why_lost(e: BaseException) -> str:
    """One line for the ``lost:`` row: the Ray error's kind and its first sentence."""
    name = type(e).__name__
    first = (str(e).strip().splitlines() or [""])[0]
    first = first.split(". ")[0][:160]
    if "NodeDied" in name or "node it was running on is dead" in first:
        return "node died or disconnected (NodeDiedError)"
    if "WorkerCrashed" in name:
        return "worker process crashed or was killed (WorkerCrashedError)"
    if "TaskCancelled" in name:
        return "cancelled"
    cause = getattr(e, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {str(cause).splitlines()[0][:160] if str(cause) else ''}"
    return f"{name}: {first}"


def _retry_job(job: _Job, opts: FleetOptions, ray: Any, cluster: Any) -> _Job | None:
    """The retry of a lost job: its shards on another live node of the target (sharded), or the same node
    again when it is still alive; None when no node can take it."""
    alive = [n for n in cluster.list_nodes(ray) if n.alive and job.target in n.targets]
    others = [n for n in alive if n.node_id != job.node.node_id]
    same = [n for n in alive if n.node_id == job.node.node_id]
    if opts.shard and others:
        return _Job(job.target, others[0], job.shards, bench=False, attempt=job.attempt + 1,
                    retry_of=job.retry_of or job.node.label)
    if same:
        return _Job(job.target, same[0], job.shards, bench=job.bench, attempt=job.attempt + 1,
                    retry_of=job.retry_of or job.node.label)
    return None
