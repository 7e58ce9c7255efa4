"""Synchronous Redis clients of a ``redis://`` or Sentinel URL (:mod:`mas_core.sentinel`).

A client made here follows failovers: each new connection asks the sentinels for the primary,
and a connection to a demoted primary (``READONLY``) is dropped and made again, so callers see
a connection error, retry, and reach the new primary.

ACL users are not replicated (``ACL SETUSER`` stays on the node it ran on), so the control
plane applies them to every data node: :func:`data_nodes` lists the primary and its replicas.

Used by the operator's administrative connection, ``mas audit``, and (for
:data:`NO_CLIENT_SETINFO` and :func:`sentinel_settings`) the sidecar's asynchronous client
factory and ``mas redis-server``'s Sentinel mode.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import redis
from redis.sentinel import Sentinel

from mas_core.sentinel import is_sentinel_url, parse

# No CLIENT SETINFO on connect: least-privilege users (an agent's, a sentinel's discovery user)
# are not granted it. redis-py 8 says so with ``driver_info=None`` (and deprecates the older
# ``lib_name``/``lib_version``).
NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if importlib.util.find_spec("redis.driver_info")
    else {"lib_name": None, "lib_version": None}
)


def sentinel_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings for the connections to the sentinels: the socket timeouts of ``settings``, no
    credentials, and no ``CLIENT SETINFO`` (their ``default`` user may only discover)."""
    chosen = {name: value for name, value in settings.items() if name.startswith("socket_")}
    return {**chosen, **NO_CLIENT_SETINFO}


def client(url: str, **settings: Any) -> redis.Redis:
    """A synchronous client of ``url``'s primary (a Sentinel URL) or server (any other URL)."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **settings)
    target = parse(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_settings(settings))
    primary: redis.Redis = sentinel.master_for(
        target.service, **settings, **target.data_node_settings()
    )
    return primary


def data_nodes(url: str, **settings: Any) -> list[redis.Redis]:
    """Clients of every data node of ``url``: the primary and, for a Sentinel URL, each
    replica the sentinels know and see up (for what is not replicated, such as ACL users)."""
    if not is_sentinel_url(url):
        return [redis.Redis.from_url(url, **settings)]
    target = parse(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_settings(settings))
    try:
        host, port = sentinel.discover_master(target.service)
        replicas = sentinel.discover_slaves(target.service)
    finally:
        for connection in sentinel.sentinels:
            connection.close()
    node_settings = {**settings, **target.data_node_settings()}
    return [
        redis.Redis(host=str(node_host), port=int(node_port), **node_settings)
        for node_host, node_port in [(host, port), *replicas]
    ]
