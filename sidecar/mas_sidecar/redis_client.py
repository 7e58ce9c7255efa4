"""The sidecar's Redis connection: one server, or a Redis Cluster.

A cluster is used when ``MAS_REDIS_CLUSTER`` is true or the URL's scheme is ``redis+cluster://``
(``rediss+cluster://`` with TLS); the URL names any one node, the client discovers the others.
Every key of one agent carries its hash tag (:mod:`mas.keys`), so the sidecar's transactions
and scripts each stay in one slot; the batched writes (:mod:`mas_sidecar.writer`), which touch
several agents' keys, are non-transactional pipelines that the cluster client splits by node.

Called once per process by :mod:`mas_sidecar.components`.
"""

from __future__ import annotations

import redis.asyncio as aioredis

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def cluster_url(url: str, cluster: bool) -> tuple[str, bool]:
    """``(plain URL, whether it is a cluster)`` for a configured URL and flag."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in CLUSTER_SCHEMES:
        return f"{CLUSTER_SCHEMES[scheme.lower()]}://{rest}", True
    return url, cluster


def connect(url: str, *, cluster: bool = False) -> aioredis.Redis:
    """An asyncio client for ``url``: a ``RedisCluster`` when ``cluster`` (it offers the same
    command methods, pipelines and scripts the sidecar uses)."""
    settings = {
        "socket_connect_timeout": 2,
        "socket_timeout": 5,  # above the 1 s blocking reads
        "health_check_interval": 15,
        # No CLIENT SETINFO on connect: least-privilege ACL users are not granted it.
        "lib_name": None,
        "lib_version": None,
    }
    if cluster:
        return aioredis.RedisCluster.from_url(url, **settings)
    return aioredis.Redis.from_url(url, **settings)
