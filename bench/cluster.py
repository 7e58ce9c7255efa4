"""A Redis Cluster of a few primaries on loopback, started and stopped by PID.

Each node is a ``redis-server --cluster-enabled yes`` process (Debian's Redis, or the embedded
Valkey binary: both support cluster mode) on a free port. The slots are split evenly and the
nodes joined with ``CLUSTER ADDSLOTSRANGE`` / ``CLUSTER MEET`` from Python, so no ``redis-cli``
is needed; :meth:`LocalCluster.start` returns once every node reports ``cluster_state:ok``.

Used by the benchmark harness (``python -m bench``, the scaling section) and by
``tests/test_redis_cluster.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from mas.local.redis_server import embedded_binary, free_port

SLOTS = 16384


class ClusterError(RuntimeError):
    """No cluster-capable binary, or the cluster did not come up."""


def cluster_binary() -> str | None:
    """A server binary that supports cluster mode: the embedded Valkey (the same server the
    single-node runs use; its cluster converges in about 2 s), else ``redis-server``."""
    with contextlib.suppress(Exception):
        return embedded_binary()
    return shutil.which("redis-server")


class LocalCluster:
    """``shards`` primaries (no replicas) on ``127.0.0.1``; a context manager."""

    def __init__(self, shards: int = 3, binary: str | None = None) -> None:
        found = binary or cluster_binary()
        if found is None:
            raise ClusterError("no redis-server or valkey-server binary with cluster support")
        self.binary = found
        self.shards = shards
        self.ports = [free_port() for _ in range(shards)]
        # The bus port defaults to port + 10000, which may be taken or beyond 65535: choose it.
        self.bus_ports = [free_port() for _ in range(shards)]
        self.processes: list[subprocess.Popen[bytes]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """A URL of one node; a cluster client discovers the others."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def start(self, timeout: float = 20.0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mas-cluster-")
        for port, bus_port in zip(self.ports, self.bus_ports, strict=True):
            directory = Path(self._tmp.name) / str(port)
            directory.mkdir()
            args = [
                self.binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(directory),
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus_port),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
                "--save", "",
                "--appendonly", "no",
                "--loglevel", "warning",
            ]  # fmt: skip
            self.processes.append(
                subprocess.Popen(
                    args,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        try:
            self._join(time.monotonic() + timeout)
        except BaseException:
            self.stop()
            raise

    def _join(self, deadline: float) -> None:
        clients = [
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=2) for port in self.ports
        ]
        try:
            for client in clients:
                _until(deadline, lambda c=client: bool(c.ping()), "a node did not answer PING")
            per_shard = SLOTS // self.shards
            for index, client in enumerate(clients):
                first = index * per_shard
                last = SLOTS - 1 if index == self.shards - 1 else first + per_shard - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for port, bus_port in zip(self.ports[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus_port)

            def all_ok() -> bool:
                for client in clients:
                    info = client.execute_command("CLUSTER", "INFO")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" not in text or (
                        f"cluster_known_nodes:{self.shards}" not in text
                    ):
                        return False
                return True

            _until(deadline, all_ok, "the cluster did not reach cluster_state:ok")
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _until(deadline: float, check: object, what: str) -> None:
    assert callable(check)
    while True:
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            if check():
                return
        if time.monotonic() > deadline:
            raise ClusterError(what)
        time.sleep(0.05)
