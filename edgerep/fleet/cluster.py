"""The Ray side of the fleet: connect to a cluster, the `ray start` command lines for a head or a
device node, and which nodes advertise which targets (with their versions and whether they are busy).

Token authentication is on unless ``RAY_AUTH_MODE`` says otherwise (``edgerep.fleet.auth``); the
cluster still belongs on a private network (docs/fleet.md, "Trust model").
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from edgerep.errors import EdgerepError
from edgerep.fleet import resource_name, targets_of

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_ray() -> Any:
    """The ``ray`` module, or ``EdgerepError`` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EdgerepError("Ray is not installed", hint="pip install 'edgerep[fleet]'") from None
    return ray


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ``EdgerepError`` naming ``--address`` when it is not one."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgerepError(f"--address {address!r} is not HOST:PORT", hint="e.g. --address 10.0.0.5:6379")
    return host.strip("[]"), int(port)


def keep_loopback() -> None:
    """Make Ray keep a loopback address it was given instead of swapping in the machine's outward address.

    Patches Ray's private ``ray._private.services.resolve_ip_for_localhost``; ``EdgerepError`` when this
    Ray has no such function (its loopback handling changed): a node asked to stay on loopback is then
    not started at all, rather than risk listening on the network.
    """
    import ray._private.services as services

    original = getattr(services, "resolve_ip_for_localhost", None)
    if original is None:
        raise EdgerepError("this Ray has no ray._private.services.resolve_ip_for_localhost: edgerep cannot keep a "
                           "loopback node on loopback, so it does not start one",
                           hint="use the Ray release edgerep was tested with (pip install 'edgerep[fleet]'), "
                                "or a private-network address instead of a loopback one")
    if getattr(original, "_edgerep_keeps_loopback", False):
        return

    def resolve(host: str) -> str:
        if host == "localhost":
            return "127.0.0.1"
        return host if host in ("127.0.0.1", "::1") else original(host)

    resolve._edgerep_keeps_loopback = True  # type: ignore[attr-defined]
    services.resolve_ip_for_localhost = resolve


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    """True when something accepts a TCP connection at host:port within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def connect(address: str, timeout: float = 5.0) -> Any:
    """Connect this process to the Ray cluster whose head is at ``address`` (idempotent); returns ``ray``."""
    ray = require_ray()
    host, port = parse_address(address)
    from edgerep.fleet.auth import use_token

    if ray.is_initialized():
        gcs = getattr(ray.get_runtime_context(), "gcs_address", None)
        if gcs and gcs.rsplit(":", 1)[-1] != str(port):
            raise EdgerepError(f"--address {address}: this process is already connected to the Ray cluster at {gcs}",
                               hint="one cluster per process; call ray.shutdown() first")
        return ray
    if not reachable(host, port, timeout):
        raise EdgerepError(f"--address {address}: no Ray head answers there",
                           hint="start one with `edgerep fleet up` or `ray start --head`, and check the port")
    # before ray.init (and after the address is known good, so a typo is named as one): this process
    # speaks to the cluster with its token
    use_token(create=False)
    if host in LOOPBACK:
        keep_loopback()
    try:
        ray.init(address=f"{host}:{port}", logging_level="ERROR", log_to_driver=False, namespace="edgerep",
                 configure_logging=True)
    except ConnectionError as e:  # the port answered (checked above): Ray's GCS refused this client
        raise EdgerepError(f"--address {address}: the Ray head answers but refused this client ({e}); a missing "
                           "or wrong token is the usual cause (Ray logs 'InvalidAuthToken' above)",
                           hint="pass the head's token with --token-file (or RAY_AUTH_TOKEN); "
                                "RAY_AUTH_MODE=disabled only for a cluster without authentication") from None
    return ray


def ray_start_argv(*, head: bool, address: str | None = None, port: int | None = None,
                   target: str | None = None, node_ip: str | None = None, num_cpus: int | None = None,
                   object_store_mb: int | None = None, temp_dir: str | None = None, block: bool = False) -> list[str]:
    """The `ray start` command line of a head (no jobs run there) or of a device node advertising ``target``."""
    argv = [sys.executable, "-m", "edgerep.fleet.raynode", "start", "--disable-usage-stats"]
    if head:
        argv += ["--head", "--port", str(port or 6379), "--include-dashboard=false"]
        argv += ["--num-cpus", "0"]  # the head is the CI side: fleet work goes to the devices only
    else:
        assert address and target
        argv += ["--address", address, "--resources", json.dumps({resource_name(target): 1})]
        if num_cpus is not None:
            argv += ["--num-cpus", str(num_cpus)]
    if node_ip:
        argv += ["--node-ip-address", node_ip]
    if object_store_mb:
        argv += ["--object-store-memory", str(int(object_store_mb) << 20)]
    if temp_dir:
        argv += ["--temp-dir", str(temp_dir)]
    if block:
        argv.append("--block")
    return argv


def node_env() -> dict[str, str]:
    """The environment a node starts with: this one (so its workers import the same edgerep), with Ray's
    token authentication settings (``edgerep.fleet.auth.use_token`` sets them here first)."""
    return dict(os.environ)


@dataclass
class NodeInfo:
    """One Ray node as the fleet sees it."""

    node_id: str
    hostname: str
    address: str
    alive: bool
    targets: list[str]
    busy: list[str] = field(default_factory=list)  # targets whose slot is taken by a fleet job now
    versions: dict[str, Any] = field(default_factory=dict)
    death_reason: str = ""

    @property
    def label(self) -> str:
        """``hostname-<first 8 of the node id>``: a folder name and a table cell."""
        return f"{self.hostname}-{self.node_id[:8]}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "label": self.label}


def list_nodes(ray: Any) -> list[NodeInfo]:
    """Every node the cluster knows (alive or dead), with its advertised targets and busy slots."""
    try:
        from ray._private.state import available_resources_per_node
        avail = available_resources_per_node()
    except Exception:  # private API moved: busy is then unknown, the rest still holds
        avail = {}
    out = []
    for n in ray.nodes():
        res = n.get("Resources") or {}
        targets = targets_of(res)
        free = avail.get(n["NodeID"], {})
        busy = [t for t in targets if n.get("Alive") and free and free.get(resource_name(t), 0) < res[resource_name(t)]]
        out.append(NodeInfo(node_id=n["NodeID"], hostname=n.get("NodeManagerHostname", "?"),
                            address=str(n.get("NodeManagerAddress", "?")), alive=bool(n.get("Alive")),
                            targets=targets, busy=busy, death_reason=str(n.get("DeathReasonMessage") or "")))
    return out


def on_node(node_id: str) -> Any:
    """A scheduling strategy that runs a task on exactly this node (fails, never waits, if it is gone)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def status(address: str, timeout: float = 30.0) -> list[NodeInfo]:
    """Alive and dead nodes, with each alive node's versions (asked on the node itself, within ``timeout``)."""
    ray = connect(address)
    from edgerep.fleet import wire
    from edgerep.fleet.node import probe_data

    nodes = list_nodes(ray)
    remote = ray.remote(probe_data)
    refs = {n.node_id: remote.options(num_cpus=0, max_retries=0, scheduling_strategy=on_node(n.node_id)).remote()
            for n in nodes if n.alive}
    deadline = time.monotonic() + timeout
    for n in nodes:
        ref = refs.get(n.node_id)
        if ref is None:
            continue
        try:
            n.versions = wire.read(ray, ref, timeout=max(0.1, deadline - time.monotonic()))  # data, never a pickle
        except Exception as e:  # a node that does not answer is reported, not waited for
            ray.cancel(ref, force=True)
            n.versions = {"error": f"no answer ({type(e).__name__})"}
    return nodes
