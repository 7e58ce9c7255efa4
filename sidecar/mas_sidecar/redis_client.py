"""The sidecar's Redis connection: one server, or a Redis Cluster.

A cluster is used when ``MAS_REDIS_CLUSTER`` is true or the URL's scheme is ``redis+cluster://``
(``rediss+cluster://`` with TLS); the URL names any one node, the client discovers the others.
Every key of one agent carries its hash tag (:mod:`mas.keys`), so the sidecar's transactions
and scripts each stay in one slot; the batched writes (:mod:`mas_sidecar.writer`), which touch
several agents' keys, are non-transactional pipelines that the cluster client splits by node.

Commands to one server are packed by hiredis (C), as redis-py's synchronous client does when
hiredis is installed; its asyncio connection packs in Python, which cost the send path a few
microseconds per message (two commands each). TLS and Unix-socket URLs choose their own
connection classes and keep redis-py's packing, as does the cluster client.

Called once per process by :mod:`mas_sidecar.components`.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import redis.asyncio as aioredis
from redis.connection import HiredisRespSerializer

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# No CLIENT SETINFO on connect: least-privilege ACL users are not granted it. redis-py 8 says
# so with ``driver_info=None`` (and deprecates the older ``lib_name``/``lib_version``).
NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if importlib.util.find_spec("redis.driver_info")
    else {"lib_name": None, "lib_version": None}
)


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


def connect(url: str, *, cluster: bool = False) -> aioredis.Redis:
    """An asyncio client for ``url``: a ``RedisCluster`` when ``cluster`` (it offers the same
    command methods, pipelines and scripts the sidecar uses)."""
    settings: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,  # above the 1 s blocking reads
        "health_check_interval": 15,
        **NO_CLIENT_SETINFO,
    }
    if cluster:
        return aioredis.RedisCluster.from_url(url, **settings)
    if url.partition("://")[0].lower() == "redis":
        # Only plain TCP: a rediss:// or unix:// URL needs its own connection class, and
        # redis-py 8 lets an explicit class win over the URL's.
        settings["connection_class"] = HiredisConnection
    return aioredis.Redis.from_url(url, **settings)
