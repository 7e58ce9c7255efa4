"""The sidecar's Redis connection: one server, a Redis Cluster, or a primary under Sentinel.

A cluster is used when ``MAS_REDIS_CLUSTER`` is true or the URL's scheme is ``redis+cluster://``
(``rediss+cluster://`` with TLS); the URL names any one node, the client discovers the others.
A ``redis+sentinel://`` URL (:mod:`mas_core.sentinel`) names sentinels and a primary: every new
connection asks the sentinels where the primary is, and a connection that finds its server
demoted (``READONLY``, or a blocking read unblocked by the role change) is dropped, so after a
failover the sidecar's retries reach the new primary.
Every key of one agent carries its hash tag (:mod:`mas_core.keys`), so the sidecar's transactions
and scripts each stay in one slot; the batched writes (:mod:`mas_sidecar.streams.writer`), which
touch several agents' keys, are non-transactional pipelines that the cluster client splits by node.

Commands to one server over plain TCP are packed by hiredis (C) straight from their arguments
(:class:`HiredisConnection`, with redis-py's ``HiredisRespSerializer``). redis-py's own asyncio
connection packs with hiredis too (from 8.2 on), but passes every argument through its Python
encoder first, which doubles the cost of packing (about 5 µs instead of 2.5 µs a command; a send
is two commands). ``HiredisRespSerializer`` is not part of redis-py's documented API, so the
``sidecar`` extra keeps redis below its next major version (pyproject.toml), and
tests/test_redis_client.py checks that every type of value the sidecar sends reads back as
redis-py's encoder would store it. TLS and Unix-socket URLs choose their own connection classes
and keep redis-py's packing, as does the cluster client.

The same connection sends without a task of its own: redis-py bounds each write by the socket
timeout with ``asyncio.wait_for``, which on Python 3.11 runs the write as a separate task, so
every command (a lone message's pipelines, the blocking reads) waited one more turn of the event
loop before it left and another before its sender went on. :class:`HiredisConnection` bounds the
write with ``asyncio.timeout`` instead, in the sender's own task (Python 3.12's ``wait_for`` does
the same by itself); a write that does not finish in time still drops the connection and raises
redis-py's ``TimeoutError``.

Blocking reads (the inbox, the replies, the policy notices) wait up to ``BLOCK_MS`` on a client
of their own (``blocking=True``), whose socket timeout is longer than that wait; every other
command keeps the short one, so a server that stops answering is noticed as soon.

Called twice per process by :mod:`mas_sidecar.components`.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.sentinel import Sentinel
from redis.connection import HiredisRespSerializer

from mas_core import sentinel
from mas_core.redis_clients import NO_CLIENT_SETINFO, sentinel_settings

BLOCK_MS = 20_000  # the longest a blocking read waits: an idle sidecar's few commands a second
SOCKET_TIMEOUT = 5.0  # a server silent this long is taken for lost
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_url(url: str, cluster: bool) -> tuple[str, bool]:
    """``(plain URL, whether it is a cluster)`` for a configured URL and flag."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in CLUSTER_SCHEMES:
        return f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}", True
    return url, cluster


class HiredisConnection(aioredis.Connection):  # type: ignore[misc]  # redis-py is untyped here
    """redis-py's asyncio TCP connection with hiredis packing commands."""

    _packer = HiredisRespSerializer()

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """redis-py's send, its write bounded by the socket timeout in this task (see the
        module docstring)."""
        timeout: float | None = self.socket_timeout  # type: ignore[has-type]
        if not timeout or sys.version_info >= (3, 12):
            await super().send_packed_command(command, check_health)
            return
        self.socket_timeout = None  # redis-py's own bound would run the write as a task
        try:
            async with asyncio.timeout(timeout):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            await self.disconnect(nowait=True)
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # cancelled as the deadline came
                raise asyncio.CancelledError from None
            raise redis.exceptions.TimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


def connect(url: str, *, cluster: bool = False, blocking: bool = False) -> aioredis.Redis:
    """An asyncio client for ``url``: a ``RedisCluster`` when ``cluster`` (it offers the same
    command methods, pipelines and scripts the sidecar uses), the primary's client for a
    Sentinel URL; ``blocking``: for reads that block up to ``BLOCK_MS``."""
    settings: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": SOCKET_TIMEOUT + (BLOCK_MS / 1000 if blocking else 0),
        "health_check_interval": 15,
        **NO_CLIENT_SETINFO,
    }
    if cluster:
        return aioredis.RedisCluster.from_url(url, **settings)
    if sentinel.is_sentinel_url(url):
        target = sentinel.parse(url)
        sentinels = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_settings(settings))
        primary: aioredis.Redis = sentinels.master_for(
            target.service, **settings, **target.data_node_settings()
        )
        return primary
    if url.partition("://")[0].lower() == "redis":
        # Only plain TCP: a rediss:// or unix:// URL needs its own connection class, and
        # redis-py 8 lets an explicit class win over the URL's.
        settings["connection_class"] = HiredisConnection
    return aioredis.Redis.from_url(url, **settings)
