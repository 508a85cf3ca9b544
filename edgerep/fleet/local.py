"""A one-machine trial fleet on loopback: a head and N device nodes started with `edgerep fleet up|join
--block`, each in its own process group, stopped by process id (never `ray stop`, which would stop
every Ray node of the machine). Used by the tests and benchmarks/fleet_overhead.py.

Its Ray configuration is its own: a private HOME and a private token (Ray's token authentication on),
so neither the user's ``~/.ray`` nor their ``RAY_AUTH_*`` variables reach it."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOPBACK_IP = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind((LOOPBACK_IP, 0))
        return int(s.getsockname()[1])


class LocalFleet:
    """Head + one node per entry of ``targets``, all on 127.0.0.1, with a private Ray temp folder."""

    def __init__(self, targets: list[str], *, num_cpus: int = 1, object_store_mb: int = 100,
                 env: dict[str, str] | None = None, log_dir: str | os.PathLike[str] | None = None,
                 node_ips: list[str] | None = None):
        self.targets = list(targets)
        self.node_ips = list(node_ips or [LOOPBACK_IP] * len(self.targets))  # each a loopback name
        self.num_cpus = num_cpus
        self.object_store_mb = object_store_mb
        # Ray's socket paths must stay short (AF_UNIX limit): a short private folder under /tmp
        self.temp_dir = tempfile.mkdtemp(prefix="erf-", dir="/tmp")
        self.home = Path(self.temp_dir) / "home"
        self.home.mkdir()
        self.token_file = Path(self.temp_dir) / "auth_token"
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        self.auth = {"HOME": str(self.home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}
        self.env = {k: v for k, v in {**os.environ, **(env or {}), **self.auth}.items() if k != "RAY_AUTH_TOKEN"}
        self._saved_env: dict[str, str | None] = {}
        self.log_dir = Path(log_dir or self.temp_dir)
        self.port = free_port()
        self.address = f"{LOOPBACK_IP}:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        p = subprocess.Popen([sys.executable, "-m", "edgerep", *argv], env=self.env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        return p

    def common(self, node_ip: str = LOOPBACK_IP) -> list[str]:
        """The `fleet up` / `fleet join` flags every node of this trial shares: loopback, small store, --block."""
        return ["--node-ip-address", node_ip, "--object-store-mb", str(self.object_store_mb),
                "--temp-dir", self.temp_dir, "--block"]

    def start_head(self, timeout: float = 60.0) -> None:
        """Start the head and wait until its port answers."""
        from edgerep.fleet.cluster import reachable

        self._spawn("head", ["fleet", "up", "--port", str(self.port), *self.common()])
        deadline = time.monotonic() + timeout
        while not reachable(LOOPBACK_IP, self.port, 0.5):
            if self.procs["head"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ray head did not start: see {self.log_dir / 'head.log'}")
            time.sleep(0.3)

    def join(self, name: str, target: str, node_ip: str = LOOPBACK_IP) -> subprocess.Popen:
        """Start a node for ``target`` via `edgerep fleet join --block` (returns at once)."""
        return self._spawn(name, ["fleet", "join", "--address", self.address, "--target", target,
                                  "--num-cpus", str(self.num_cpus), *self.common(node_ip)])

    def use_here(self) -> None:
        """Make this process (the CI side) speak to this fleet: its token, Ray's token mode; undone by stop()."""
        for k in (*self.auth, "RAY_AUTH_TOKEN"):
            self._saved_env.setdefault(k, os.environ.get(k))
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ.update({k: v for k, v in self.auth.items() if k != "HOME"})

    def start(self, timeout: float = 90.0) -> "LocalFleet":
        """Head and every node; returns when the cluster lists them all alive."""
        self.use_here()
        self.start_head()
        for i, t in enumerate(self.targets):  # one at a time: Ray gives a node 30 s to register, a busy machine
            self.join(f"node{i}", t, self.node_ips[i])  # starting several at once can miss that
            self.wait_nodes(i + 1, timeout)
        return self

    def wait_nodes(self, n: int, timeout: float) -> list:
        """Wait until ``n`` device nodes are alive (connects this process as the driver)."""
        from edgerep.fleet import cluster

        ray = cluster.connect(self.address)
        deadline = time.monotonic() + timeout
        while True:
            alive = [x for x in cluster.list_nodes(ray) if x.alive and x.targets]
            if len(alive) >= n:
                return alive
            dead = [k for k, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"{len(alive)} of {n} nodes joined (exited: {dead}); logs in {self.log_dir}")
            time.sleep(0.5)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a node's whole process group (its raylet and workers)."""
        p = self.procs[name]
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)

    def stop(self) -> None:
        """Disconnect, then stop every node and the head by process group: SIGTERM, then SIGKILL."""
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass
        order = [k for k in self.procs if k != "head"] + (["head"] if "head" in self.procs else [])
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):  # nodes drain on SIGTERM; then no mercy
            for name in order:
                try:
                    os.killpg(self.procs[name].pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            for name in order:
                try:
                    self.procs[name].wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def worker_pids(self, name: str, task: str = "run_job") -> list[int]:
        """Process ids of node ``name``'s Ray workers running ``task`` now (named ``ray::<task>``; each worker
        has its own process group, its parent is the node's raylet)."""
        pgid = self.procs[name].pid
        out = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if not (d / "cmdline").read_bytes().startswith(f"ray::{task}".encode()):
                    continue
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if os.getpgid(ppid) == pgid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
        return out

    def __enter__(self) -> "LocalFleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
