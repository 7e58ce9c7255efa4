"""A replicated Redis under Sentinel on loopback: a primary, its replicas and three sentinels.

Every process is a real server binary (the embedded Valkey, or ``MAS_TEST_REDIS_SERVER``,
e.g. Debian's ``redis-server``; a sentinel is the same binary with ``--sentinel``), started on
free ports and stopped by PID. The data nodes share one administrator password; a replica is
pointed at the primary with ``CONFIG SET masterauth`` and ``REPLICAOF`` over the administrator
connection, so the password is never on a command line. A sentinel needs a configuration file
it can rewrite: the chart's (:func:`mas_cli.sentinel_command.sentinel_config`), written to a
private temporary directory (mode 0600); it holds the administrator password (for the data
nodes and the other sentinels), and the sentinels' ``default`` user may only discover the
primary.

:meth:`LocalSentinels.kill` SIGKILLs a data node, :meth:`LocalSentinels.pause` stops one
(a lagging replica); :meth:`LocalSentinels.rejoin` starts an empty server on a killed node's
port and makes it a replica of the primary the sentinels name, as a restarted pod does (a node
that came back as a primary would only be demoted by the sentinels after their failover
timeout).

Used by ``tests/test_failover.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import redis

from mas_cli.local.processes import ChildProcess
from mas_cli.local.redis_server import RedisServer, embedded_binary, free_port
from mas_cli.sentinel_command import SentinelSettings, sentinel_config
from mas_core.acl import generate_password

SERVICE = "mas"
DOWN_AFTER_MS = 1000  # how long a silent primary takes to be judged down
FAILOVER_TIMEOUT_MS = 5000


class LocalSentinels:
    """A primary, ``replicas`` replicas and three sentinels (quorum 2) on 127.0.0.1:
    :meth:`start`, then :meth:`stop` (which a failed start has done itself)."""

    def __init__(self, binary: str | None = None, replicas: int = 1) -> None:
        self.binary = binary or embedded_binary()
        self.password = generate_password()
        self.nodes = [RedisServer(self.binary, password=self.password) for _ in range(1 + replicas)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._dir = tempfile.TemporaryDirectory(prefix="mas-sentinel-")
        self._sentinels: list[ChildProcess] = []

    def url(self, username: str = "", password: str = "") -> str:
        """The Sentinel URL of the primary, with the data nodes' user and password."""
        userinfo = f"{quote(username, safe='')}:{quote(password, safe='')}@" if password else ""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{userinfo}{hosts}/{SERVICE}"

    @property
    def admin_url(self) -> str:
        return self.url("default", self.password)

    def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            for node in self.nodes:
                node.start()
            primary = self.nodes[0]
            for node in self.nodes[1:]:
                self._follow(node, primary.port)
            self._until(deadline, lambda: self._replicas_online(primary), "replicas in sync")
            for index, port in enumerate(self.sentinel_ports):
                self._sentinels.append(self._start_sentinel(index, port, primary.port))
            self._until(deadline, self._sentinels_agree, "sentinels that see each other")
        except BaseException:
            self.stop()
            raise

    def _follow(self, node: RedisServer, primary_port: int) -> None:
        with redis.Redis.from_url(node.url) as client:
            client.config_set("masterauth", self.password)
            client.replicaof("127.0.0.1", primary_port)

    def _replicas_online(self, primary: RedisServer) -> bool:
        with redis.Redis.from_url(primary.url) as client:
            info = client.info("replication")
        online = [key for key, value in info.items() if key.startswith("slave") and isinstance(
            value, dict) and value.get("state") == "online"]  # fmt: skip
        return len(online) == len(self.nodes) - 1

    def _start_sentinel(self, index: int, port: int, primary_port: int) -> ChildProcess:
        directory = Path(self._dir.name) / f"sentinel-{index}"
        directory.mkdir(mode=0o700)
        config = directory / "sentinel.conf"
        text = sentinel_config(
            SentinelSettings(
                port=port,
                bind="127.0.0.1",
                data_dir=directory,
                primary_name=SERVICE,
                primary=("127.0.0.1", primary_port),
                password=self.password,
                down_after_ms=DOWN_AFTER_MS,
                failover_timeout_ms=FAILOVER_TIMEOUT_MS,
            )
        )
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
        process = ChildProcess([self.binary, str(config), "--sentinel"], log_path=directory / "log")
        process.start()
        return process

    def sentinel(self, index: int = 0) -> redis.Redis:
        """A discovery-only client of one sentinel."""
        return redis.Redis(host="127.0.0.1", port=self.sentinel_ports[index], socket_timeout=2)

    def _sentinels_agree(self) -> bool:
        for index in range(len(self.sentinel_ports)):
            with self.sentinel(index) as client:
                state = client.sentinel_masters().get(SERVICE)
            if not state or state["num-other-sentinels"] < len(self.sentinel_ports) - 1:
                return False
            if state["num-slaves"] < len(self.nodes) - 1:
                return False
        return True

    def primary_port(self) -> int:
        """The port of the primary, as the first sentinel names it."""
        with self.sentinel() as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def kill(self, port: int) -> None:
        """SIGKILL the data node on ``port``, as a crash would."""
        process = self.node(port).process
        assert process is not None
        process.kill()
        process.wait()

    def pause(self, port: int) -> None:
        """SIGSTOP the data node on ``port``: it stops reading (a lagging replica)."""
        process = self.node(port).process
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def resume(self, port: int) -> None:
        process = self.node(port).process
        assert process is not None
        process.send_signal(signal.SIGCONT)

    def rejoin(self, port: int) -> RedisServer:
        """A new, empty server on the killed node's ``port``, a replica of the primary the
        sentinels name; returns once it is in sync."""
        old = self.node(port)
        old.stop()
        new = RedisServer(self.binary, port=port, password=self.password)
        self.nodes[self.nodes.index(old)] = new
        new.start()
        self._until(time.monotonic() + 60, lambda: self._in_sync(new), "the node to rejoin")
        return new

    def _in_sync(self, node: RedisServer) -> bool:
        """Whether ``node`` replicates the primary the sentinels name now; if it follows
        another node (the sentinels were still switching), it is pointed at that one."""
        primary = self.primary_port()
        with redis.Redis.from_url(node.url) as client:
            info = client.info("replication")
        if info.get("master_port") != primary:
            self._follow(node, primary)
            return False
        return info.get("master_link_status") == "up" and self._replicas_online(self.node(primary))

    def stop(self) -> None:
        for process in self._sentinels:
            process.stop()
        self._sentinels = []
        for node in self.nodes:
            node.stop()
        self._dir.cleanup()

    @staticmethod
    def _until(deadline: float, check: Callable[[], bool], what: str) -> None:
        while True:
            with contextlib.suppress(redis.RedisError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinel setup did not come up: {what}")
            time.sleep(0.05)
