"""The discovery registry's entry format, and the administrative edits of the registry.

An agent's entry in ``mas:{registry}:agents`` is JSON ``{capabilities, roles, metadata}``.
Its sidecars write it (with their runtime metadata) and renew its liveness lease; the operator
writes it when it reconciles the ``Agent`` (so the agent is registered, and messages to it are
accepted, before its pods run) and removes it, with its lease and policy reports, when the
``Agent`` is deleted. Used by the sidecar's registry and by the operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import redis

from mas.keys import POLICY_ENFORCERS, REGISTRY_AGENTS, REGISTRY_LEASES


def entry_document(
    capabilities: Sequence[str], roles: Sequence[str], metadata: Mapping[str, Any]
) -> bytes:
    """The registry entry of an agent, as stored."""
    return orjson.dumps(
        {"capabilities": list(capabilities), "roles": list(roles), "metadata": dict(metadata)}
    )


def register_agent(
    client: redis.Redis, agent_id: str, capabilities: Sequence[str], roles: Sequence[str]
) -> None:
    """Write ``agent_id``'s entry, keeping the metadata its sidecars published (no lease)."""
    raw = client.hget(REGISTRY_AGENTS, agent_id)
    metadata = orjson.loads(raw).get("metadata", {}) if raw else {}
    client.hset(REGISTRY_AGENTS, agent_id, entry_document(capabilities, roles, metadata))


def forget_agent(client: redis.Redis, agent_id: str) -> None:
    """Remove ``agent_id``'s entry, lease and its replicas' policy reports."""
    reports = [
        field
        for field, _ in client.hscan_iter(POLICY_ENFORCERS, match=f"{agent_id}/*")
        if field.decode().rpartition("/")[0] == agent_id
    ]
    with client.pipeline(transaction=True) as pipe:
        pipe.hdel(REGISTRY_AGENTS, agent_id)
        pipe.zrem(REGISTRY_LEASES, agent_id)
        if reports:
            pipe.hdel(POLICY_ENFORCERS, *reports)
        pipe.execute()
