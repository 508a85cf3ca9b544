"""Fleet on a real Ray cluster on this machine, loopback only: a head and two nodes joined as `x86-cpu`.

One module-scoped cluster serves every test (started and stopped by process id; never `ray stop`).
The node-killing test runs last. Ray comes from the `edgerep[fleet]` extra (scripts/setup.sh).
The cluster has its own HOME and Ray token (token authentication on): nothing in the user's ``~/.ray``
or ``RAY_AUTH_*`` variables reaches it. node1 joins as ``localhost``, node0 as ``127.0.0.1``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgerep[fleet]')")

from edgerep.cli import main  # noqa: E402
from edgerep.fleet import cluster  # noqa: E402
from edgerep.fleet.deploy import FleetOptions, fleet_deploy  # noqa: E402
from edgerep.fleet.local import LocalFleet  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "checkpoints" / "repvgg_digits.pt"
ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
       "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A real (quick) deploy of the demo checkpoint: FP32 ONNX, the CPU QDQ file, the calibration cache."""
    from edgerep.pipeline import DeployOptions, deploy

    out = tmp_path_factory.mktemp("fleet") / "bundle"
    deploy(DeployOptions(checkpoint=DEMO, out=out, run_check=False, calib_samples=64, calib_method="minmax",
                         bench_seconds=0.02, max_drop=None, threads=1,
                         cache_dir=out.parent / "cache"))
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Head + two `x86-cpu` nodes on 127.0.0.1, stopped by process group at the end whatever happens."""
    cache = tmp_path_factory.mktemp("node-cache")  # the nodes' plan folders, not the user's ~/.cache
    f = LocalFleet(["x86-cpu", "x86-cpu"], env={**ENV, "EDGEREP_CACHE_DIR": str(cache)},
                   log_dir=tmp_path_factory.mktemp("ray-logs"), node_ips=["127.0.0.1", "localhost"])
    f.cache = cache
    try:
        f.start(timeout=120)
        yield f
    finally:
        f.stop()


def _cli(*args: str, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgerep", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ENV, **(env or {})})


def _local(bundle: Path, onnx_file: str, precision: str) -> tuple[float, int]:
    """(top-1, samples) of one ONNX file of the bundle on the deploy's test set, here, in one process."""
    from edgerep.bench.accuracy import collect_outputs, score
    from edgerep.engines.onnxruntime_engine import OrtEngine
    from edgerep.fleet.payload import load_reference, read_bundle, test_set

    b = read_bundle(bundle)
    ds, _, cap, same = test_set(b, load_reference(b).meta)
    assert same  # the very test set `edgerep deploy` scored (same fingerprint as the manifest's)
    eng = OrtEngine(bundle / onnx_file, precision=precision, session_config=b.session_config)
    out, labels = collect_outputs(eng, ds.batches(64, limit=cap))
    return score(out, labels, None).top1, len(out)


def test_payload_is_onnx_and_json_never_the_checkpoint(bundle):
    from edgerep.fleet.payload import payload, read_bundle

    files = payload(read_bundle(bundle))
    assert set(files) == {"model.fp32.onnx", "model.int8.onnx"} | {n for n in files if n.startswith("calibration/")}
    assert any(n.startswith("calibration/") and n.endswith(".json") for n in files)
    assert (bundle / "model.folded.pt").is_file() and all(not n.endswith((".pt", ".pth", ".pt2")) for n in files)
    assert all(isinstance(v, bytes) for v in files.values())


def test_nodes_listen_on_loopback_only(fleet):
    ray_mod = cluster.connect(fleet.address)
    addrs = {n["NodeManagerAddress"] for n in ray_mod.nodes() if n["Alive"]}
    assert addrs == {"127.0.0.1"}


def _tree(pids: list[int]) -> set[int]:
    """``pids`` and every process descended from them (read from /proc)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = set(), list(pids)
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += [c for c, pp in parent.items() if pp == p]
    return out


def _listening(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state that one of ``pids`` holds (/proc/net/tcp{,6})."""
    import ipaddress

    inode_pid = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inode_pid[link[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] != "0A" or f[9] not in inode_pid:  # 0A: LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))  # each 32-bit word is host order
            out.append((str(ipaddress.ip_address(raw)), int(hexport, 16), inode_pid[f[9]]))
    return out


def test_nothing_listens_beyond_loopback(fleet):
    """Every listening TCP socket of the head, both nodes (node1 joined as `localhost`) and their workers."""
    import ipaddress

    socks = _listening(_tree([p.pid for p in fleet.procs.values()]))
    assert any(port == fleet.port for _, port, _ in socks), socks  # the GCS is among them: the reading is real
    assert len({pid for *_, pid in socks}) >= 3, socks
    def loopback(a: str) -> bool:
        ip = ipaddress.ip_address(a)
        return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)

    outward = [s for s in socks if not loopback(s[0])]
    assert outward == [], f"listening beyond loopback: {outward}"


def test_cluster_needs_its_token_and_ignores_a_stale_home_token(fleet, tmp_path):
    """Token authentication is on; a `~/.ray/auth_token` left in the user's home by other Ray use is not read
    by the fleet's nodes (their own HOME) and does not stop a client that is given the cluster's token."""
    stale = tmp_path / "home"
    (stale / ".ray").mkdir(parents=True)
    (stale / ".ray" / "auth_token").write_text("0" * 64)
    ok = _cli("fleet", "status", "--address", fleet.address, "--json", "--token-file", str(fleet.token_file),
              env={"HOME": str(stale), "RAY_AUTH_TOKEN_PATH": ""})
    assert ok.returncode == 0, ok.stderr
    assert len([n for n in json.loads(ok.stdout) if n["targets"]]) == 2
    wrong = _cli("fleet", "status", "--address", fleet.address, "--json", timeout=90,
                 env={"HOME": str(stale), "RAY_AUTH_TOKEN_PATH": ""})  # the stale token only
    assert wrong.returncode == 2 and "x86-cpu" not in wrong.stdout, wrong.stderr[-2000:]
    line = wrong.stderr.strip().splitlines()[-1]
    assert f"--address {fleet.address}: the Ray head answers but refused this client" in line, line
    assert "InvalidAuthToken" in wrong.stderr and "--token-file" in line, wrong.stderr[-2000:]


def _crafted_result(path: str):
    """What a compromised node could return: an object whose unpickling runs code (here: makes a folder)."""

    class Crafted:
        def __reduce__(self):
            return (os.mkdir, (path,))

    return Crafted()


def test_a_pickled_result_from_a_node_is_refused_not_run(fleet, tmp_path):
    from edgerep.fleet import resource_name, wire

    ray_mod = cluster.connect(fleet.address)
    marker = tmp_path / "ran-on-the-ci-side"
    ray_mod.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes cannot import this module
    try:
        ref = ray_mod.remote(_crafted_result).options(num_cpus=0, max_retries=0,
                                                      resources={resource_name("x86-cpu"): 1}).remote(str(marker))
        ready, _ = ray_mod.wait([ref], timeout=60)
        assert ready
        with pytest.raises(wire.RemoteFailure, match="returned no data"):
            wire.read(ray_mod, ref)
    finally:
        ray_mod.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert not marker.exists(), "the node's pickle ran on the CI side"


def test_join_refuses_a_tensorrt_profile_this_host_cannot_run(fleet):
    r = _cli("fleet", "join", "--address", fleet.address, "--target", "dgpu", "--temp-dir", fleet.temp_dir)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "--target dgpu" in line and "tensorrt-int8-cuda0, tensorrt-fp16-cuda0: only TensorRT type stubs" in line
    assert "stands in" not in line  # a fallback is no use to a fleet node
    alive = [n for n in cluster.list_nodes(cluster.connect(fleet.address)) if n.alive and n.targets]
    assert len(alive) == 2 and all(n.targets == ["x86-cpu"] for n in alive)  # nothing joined


def test_status_lists_nodes_targets_versions_busy(fleet):
    r = _cli("fleet", "status", "--address", fleet.address, "--json")
    assert r.returncode == 0, r.stderr
    nodes = json.loads(r.stdout)
    import importlib.metadata

    import edgerep
    import onnxruntime

    devices = [n for n in nodes if n["targets"]]
    assert len(devices) == 2 and len(nodes) == 3  # the head advertises no target
    for n in devices:
        assert n["alive"] and n["targets"] == ["x86-cpu"] and n["busy"] == []
        v = n["versions"]
        # the distribution's version, as pip pins it (torch.__version__ may add a local label: 2.13.0+cu130)
        assert v["edgerep"] == edgerep.__version__ and v["torch"] == importlib.metadata.version("torch")
        assert v["onnxruntime"] == onnxruntime.__version__ and v["tensorrt"] is None and v["int8_isa"]
    assert len({n["node_id"] for n in devices}) == 2


def test_deploy_rows_per_node_and_no_node_target(fleet, bundle, tmp_path):
    out = tmp_path / "out"
    rc = main(["fleet", "deploy", str(bundle), "--address", fleet.address, "--targets", "x86-cpu,jetson-orin-nano",
               "--out", str(out), "--bench-seconds", "0.05", "--junit", str(tmp_path / "gate.xml")])
    assert rc == 1  # jetson-orin-nano has no node: the gate fails, but everything else is there
    report = json.loads((out / "report.json").read_text())
    from schema_check import validate

    validate(report, "edgerep.fleet-report/2")  # the published schema, on a real multi-node fleet report
    rows = report["rows"]
    x86 = [r for r in rows if r["target"] == "x86-cpu"]
    node_ids = {n.node_id for n in cluster.list_nodes(cluster.connect(fleet.address)) if n.targets}
    assert {r["node_id"] for r in x86} == node_ids
    built = [r for r in x86 if r["status"] == "built"]
    assert sorted((r["name"], r["precision"]) for r in built) == sorted(
        [("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8")] * 2)  # a row per node x engine
    fp32_local, n_test = _local(bundle, "model.fp32.onnx", "fp32")
    assert report["data"]["same_as_bundle"] is True and n_test > 100
    for r in built:
        assert r["latency"]["p50_ms"] > 0 and r["accuracy"]["samples"] == n_test
        assert r["hostname"] and r["node"].endswith(r["node_id"][:8])
        if r["precision"] == "fp32":
            assert r["accuracy"]["value"] == fp32_local  # the node scores what this machine scores
    assert report["reference"]["accuracy"]["samples"] == n_test and report["warnings"] == []  # same edgerep everywhere
    torch_rows = [r for r in x86 if r["name"] == "torch-cpu"]
    assert len(torch_rows) == 2 and all(r["status"] == "skipped" for r in torch_rows)
    nano = [r for r in rows if r["target"] == "jetson-orin-nano"]
    assert nano and all(r["status"] == "no node" and "no node for target" in r["reason"] for r in nano)
    assert (fleet.cache / "fleet" / "x86-cpu" / ".lock").is_file()  # the nodes' plan folder, under their cache
    for r in built:  # what each node built came back into OUT/engines/<target>/<node>/
        side = json.loads((out / "engines" / "x86-cpu" / r["node"] / "engines.json").read_text())
        assert side["node_id"] == r["node_id"]
    xml = (tmp_path / "gate.xml").read_text()
    assert xml == (out / "gate.xml").read_text()
    import xml.etree.ElementTree as ET

    cases = {(c.get("classname"), c.get("name")): c.find("failure") is not None for c in ET.fromstring(xml)}
    per_engine = {k: v for k, v in cases.items() if k[0] in ("edgerep.fleet.x86-cpu", "edgerep.fleet.jetson-orin-nano")}
    assert per_engine == {("edgerep.fleet.x86-cpu", "onnxruntime-cpu/fp32"): False,  # one case per target x engine
                          ("edgerep.fleet.x86-cpu", "onnxruntime-cpu/int8"): False,
                          ("edgerep.fleet.jetson-orin-nano", "tensorrt-cuda/int8"): True,
                          ("edgerep.fleet.jetson-orin-nano", "tensorrt-cuda/fp16"): True,
                          ("edgerep.fleet.jetson-orin-nano", "onnxruntime-cpu/fp32"): True}
    assert set(cases) - set(per_engine) == {("edgerep.fleet.fold", "fold"), ("edgerep.fleet.baseline", "baseline"),
                                            ("edgerep.fleet.inputs", "inputs")}  # the bundle's set-up checks, once
    assert cases[("edgerep.fleet.inputs", "inputs")] is False  # the demo's inputs match its BN statistics
    assert "no node for target" in xml and report["gate"]["passed"] is False


def test_sharded_top1_equals_single_node_to_the_last_image(fleet, bundle, tmp_path):
    single = fleet_deploy(FleetOptions(bundle=bundle, address=fleet.address, out=tmp_path / "one",
                                       bench_seconds=0.02))
    sharded = fleet_deploy(FleetOptions(bundle=bundle, address=fleet.address, out=tmp_path / "sharded",
                                        shard=True, bench_seconds=0.02))
    assert single.passed and sharded.passed
    top1_local, n_test = _local(bundle, "model.fp32.onnx", "fp32")
    merged = {(r["name"], r["precision"]): r for r in sharded.report["rows"] if r["scope"] == "merged"}
    shard_rows = [r for r in sharded.report["rows"] if r["scope"] == "shard" and r["status"] == "built"]
    assert set(merged) == {("onnxruntime-cpu", "fp32"), ("onnxruntime-cpu", "int8")}
    for key, m in merged.items():
        parts = [r for r in shard_rows if (r["name"], r["precision"]) == key]
        assert len(parts) == 2 and sorted(len(r["shards"]) for r in parts) == [1, 1]
        assert sum(r["accuracy"]["samples"] for r in parts) == m["accuracy"]["samples"] == n_test
        assert all(r["accuracy"]["samples"] < n_test for r in parts)
        one = [r for r in single.report["rows"] if (r["name"], r["precision"]) == key]
        assert len(one) == 2 and all(r["accuracy"]["value"] == m["accuracy"]["value"] for r in one)
    assert merged[("onnxruntime-cpu", "fp32")]["accuracy"]["value"] == top1_local


def test_a_target_timeout_gives_lost_rows_not_a_hang(fleet, bundle, tmp_path):
    t0 = time.monotonic()
    res = fleet_deploy(FleetOptions(bundle=bundle, address=fleet.address, out=tmp_path / "out", timeout_s=2.0,
                                    bench_seconds=5.0))
    assert time.monotonic() - t0 < 40
    assert not res.passed
    rows = res.report["rows"]
    assert rows and all(r["status"] == "lost" and "within --timeout 2 s" in r["reason"] for r in rows)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["gate"]["passed"] is False
    _wait_idle(fleet)


def _wait_idle(fleet, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(n.busy for n in cluster.list_nodes(cluster.connect(fleet.address)) if n.alive):
        assert time.monotonic() < deadline, "fleet nodes stayed busy"
        time.sleep(0.2)


def _run_in_thread(fleet, **kw):
    result: dict = {}

    def run() -> None:
        result["res"] = fleet_deploy(FleetOptions(address=fleet.address, **kw))

    th = threading.Thread(target=run)
    th.start()
    ray_mod = cluster.connect(fleet.address)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both nodes hold their fleet slot: the jobs are running
        if len([n for n in cluster.list_nodes(ray_mod) if n.alive and n.busy]) == 2:
            return th, result
        time.sleep(0.1)
    raise AssertionError("the fleet jobs never started")


def test_retry_reruns_a_lost_shard_on_another_node(fleet, bundle, tmp_path):
    """--retries 1 --shard: node1's job dies (its worker killed); node0 re-runs node1's shard; top-1 complete."""
    th, result = _run_in_thread(fleet, bundle=bundle, out=tmp_path / "out", shard=True, retries=1,
                                bench_seconds=1.0, timeout_s=120)
    deadline = time.monotonic() + 30
    while not (pids := fleet.worker_pids("node1")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids, "no ray::run_job worker on node1"
    for pid in pids:
        os.kill(pid, 9)
    th.join(timeout=120)
    assert not th.is_alive()
    res = result["res"]
    rows = res.report["rows"]
    lost = [r for r in rows if r["status"] == "lost"]
    assert lost and all(r["scope"] == "node" and r.get("recovered_by") for r in lost)
    survivor = lost[0]["recovered_by"]
    assert survivor != lost[0]["node"] and any(r["node"] == survivor and r["status"] == "built" for r in rows)
    merged = [r for r in rows if r["scope"] == "merged"]
    top1_local, n_test = _local(bundle, "model.fp32.onnx", "fp32")
    assert len(merged) == 2 and all(r["status"] == "built" and r["accuracy"]["samples"] == n_test for r in merged)
    fp32 = next(r for r in merged if r["precision"] == "fp32")
    assert fp32["accuracy"]["value"] == top1_local
    assert res.passed  # the retry recovered the lost work
    _wait_idle(fleet)


def test_a_job_that_raises_on_a_node_fails_and_is_not_retried(fleet, bundle, tmp_path):
    """A third node whose cache folder is a file: its job raises there (NotADirectoryError at the plan
    folder). That is the device failing, not a lost connection: with --retries 1 --shard its rows are
    `failed` with the error, nothing re-runs its shard elsewhere, and the gate fails naming it (issue 20.16)."""
    broken = tmp_path / "cache-is-a-file"
    broken.write_text("not a folder")
    ray_mod = cluster.connect(fleet.address)
    healthy = {n.node_id for n in cluster.list_nodes(ray_mod) if n.alive and n.targets}
    env = fleet.env
    fleet.env = {**env, "EDGEREP_CACHE": str(broken), "EDGEREP_CACHE_DIR": str(broken)}
    try:
        fleet.join("node2", "x86-cpu")
        fleet.wait_nodes(3, 120)
    finally:
        fleet.env = env
    try:
        (bad_id,) = {n.node_id for n in cluster.list_nodes(ray_mod) if n.alive and n.targets} - healthy
        res = fleet_deploy(FleetOptions(bundle=bundle, address=fleet.address, out=tmp_path / "out", shard=True,
                                        retries=1, bench_seconds=0.05, timeout_s=120))
        rows = res.report["rows"]
        bad = [r for r in rows if r.get("node_id") == bad_id]
        assert bad and all(r["status"] == "failed" and "NotADirectoryError" in r["reason"] for r in bad), [(r["status"], r.get("reason")) for r in bad]
        assert not any(r.get("recovered_by") or r.get("note") == "answered on a retry" for r in rows)
        assert not any(r["status"] == "lost" for r in rows)  # nothing was lost: every node answered
        merged = [r for r in rows if r["scope"] == "merged"]
        assert merged and all(r["status"] == "failed" and r["shards_missing"] for r in merged)
        good = [r for r in rows if r["scope"] == "shard" and r["status"] == "built"]
        assert len(good) == 4 and bad_id not in {r["node_id"] for r in good}  # 2 healthy nodes x 2 engines
        assert not res.passed
        failures = [c for c in res.report["gate"]["checks"] if not c["passed"]]
        assert any(c["name"] == "engine_built" and "NotADirectoryError" in c["message"] for c in failures)
    finally:
        fleet.kill("node2")
        deadline = time.monotonic() + 90
        while any(n.alive and n.node_id == bad_id for n in cluster.list_nodes(ray_mod)):
            assert time.monotonic() < deadline, "Ray never noticed node2 stopped"
            time.sleep(0.5)
    _wait_idle(fleet)


def test_killed_node_rows_lost_the_rest_intact(fleet, bundle, tmp_path):
    """Runs last: kills node1's whole process group while both nodes are measuring."""
    ray_mod = cluster.connect(fleet.address)
    t0 = time.monotonic()
    before = {n.node_id for n in cluster.list_nodes(ray_mod) if n.alive and n.targets}
    th, result = _run_in_thread(fleet, bundle=bundle, out=tmp_path / "out", bench_seconds=1.0, timeout_s=120)
    fleet.kill("node1")
    th.join(timeout=120)
    assert not th.is_alive(), "fleet deploy hung after a node died"
    after = {n.node_id for n in cluster.list_nodes(ray_mod) if n.alive and n.targets}
    res = result["res"]
    rows = res.report["rows"]
    lost = [r for r in rows if r["status"] == "lost"]
    kept = [r for r in rows if r["status"] == "built"]
    assert lost and all(r["reason"].startswith("lost: ") and not r.get("recovered_by") for r in lost)
    if before - after:  # Ray has noticed the death by now (it usually has)
        assert {r["node_id"] for r in lost} == before - after
    assert len({r["node_id"] for r in lost}) == 1 and len(lost) == 2  # every engine a node runs (not torch)
    assert len(kept) == 2 and {r["node_id"] for r in kept} == before - {r["node_id"] for r in lost}
    n_test = res.report["reference"]["accuracy"]["samples"]
    assert n_test > 100 and all(r["accuracy"]["samples"] == n_test and r["latency"]["p50_ms"] > 0 for r in kept)
    assert not res.passed and any(c["name"] == "node_lost" and not c["passed"] for c in res.report["gate"]["checks"])
    assert (tmp_path / "out" / "report.json").is_file() and time.monotonic() - t0 < 120
