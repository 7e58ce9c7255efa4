"""A Redis Cluster of a few primaries on loopback, started and stopped by PID.

A context manager like one server (:class:`~mas_cli.local.redis_server.ServerProcesses`):
each node is a :class:`~mas_cli.local.redis_server.RedisServer` started with ``--cluster-enabled
yes`` (Debian's Redis, or the embedded Valkey binary: both support cluster mode) on a free
port. The slots are split evenly and the nodes joined with ``CLUSTER ADDSLOTSRANGE`` /
``CLUSTER MEET`` from Python, so no ``redis-cli`` is needed; :meth:`LocalCluster.start` returns
once every node reports ``cluster_state:ok``.

Used by the benchmark harness (``python -m bench``, the scaling section) and by
``tests/test_redis_cluster.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import time

import redis

from mas_cli.local.redis_server import RedisServer, ServerProcesses, embedded_binary, free_port
from mas_core.acl import generate_password

SLOTS = 16384


class ClusterError(RuntimeError):
    """No cluster-capable binary, or the cluster did not come up."""


def cluster_binary() -> str | None:
    """A server binary that supports cluster mode: the embedded Valkey (the same server the
    single-node runs use; its cluster converges in about 2 s), else ``redis-server``."""
    with contextlib.suppress(Exception):
        return embedded_binary()
    return shutil.which("redis-server")


class LocalCluster(ServerProcesses):
    """``shards`` primaries (no replicas) on ``127.0.0.1``; a context manager."""

    def __init__(self, shards: int = 3, binary: str | None = None) -> None:
        found = binary or cluster_binary()
        if found is None:
            raise ClusterError("no redis-server or valkey-server binary with cluster support")
        self.shards = shards
        # The bus port defaults to port + 10000, which may be taken or beyond 65535: choose it.
        self.bus_ports = [free_port() for _ in range(shards)]
        password = generate_password()  # one for all: a cluster client uses one
        self.nodes = [
            RedisServer(found, password=password, extra_args=_node_args(bus))
            for bus in self.bus_ports
        ]

    @property
    def url(self) -> str:
        """A URL of one node; a cluster client discovers the others."""
        return self.nodes[0].url

    def start(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start(timeout=max(deadline - time.monotonic(), 1.0))
            self._join(deadline)
        except BaseException:
            self.stop()
            raise

    def _join(self, deadline: float) -> None:
        clients = [redis.Redis.from_url(node.url, socket_timeout=2) for node in self.nodes]
        try:
            per_shard = SLOTS // self.shards
            for index, client in enumerate(clients):
                first = index * per_shard
                last = SLOTS - 1 if index == self.shards - 1 else first + per_shard - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)

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
        for node in self.nodes:
            node.stop()


def _node_args(bus_port: int) -> list[str]:
    """The server options that make a node part of a cluster."""
    return [
        "--cluster-enabled", "yes",
        "--cluster-port", str(bus_port),
        "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "5000",
    ]  # fmt: skip


def _until(deadline: float, check: object, what: str) -> None:
    assert callable(check)
    while True:
        with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
            if check():
                return
        if time.monotonic() > deadline:
            raise ClusterError(what)
        time.sleep(0.05)
