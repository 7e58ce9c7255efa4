"""What the control plane writes on the agents' Redis for them: their ACL users, the function
library, the compiled gateway policy and their registry entries.

Every write here is idempotent, so the control plane repeats it whenever it may have been
lost (:mod:`mas_control.recovery`):

* ACL users (:func:`apply_acl_user`, :func:`delete_acl_user`): one per agent, with the rules of
  :func:`mas_core.acl.sidecar_acl_rules` and the password in the agent's Secret; and the
  dashboard's (:func:`apply_dashboard_user`, :func:`mas_core.acl.dashboard_acl_rules`);
* the function library (:func:`ensure_functions`): :data:`mas_core.functions.LIBRARY`, loaded
  with the administrative user unless the server has this version;
* the policy (:func:`publish_policy`): the document, its revision and a notice on the changes
  stream in one MULTI; sidecars block on that stream and load the new policy at once (and read
  the revision every few seconds in case a notice was missed); :func:`enforcers` reads which
  revision each sidecar replica reports;
* registry entries (:func:`register_agent`, :func:`register_external_agent`,
  :func:`forget_agent`): what the control plane
  vouches for about an agent (:mod:`mas_core.registry_entries`), written before its sidecars
  start.

Used by the operator (``mas_operator.redis_admin``), ``mas up``'s supervisor, the benchmarks
and the test harnesses.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import redis

from mas_core.acl import acl_username, dashboard_acl_rules, dashboard_user, sidecar_acl_rules
from mas_core.functions import LIBRARY, VERSION
from mas_core.keys import (
    POLICY_CHANGES,
    POLICY_CHANGES_KEPT,
    POLICY_DOCUMENT,
    POLICY_ENFORCERS,
    POLICY_REVISION,
    REGISTRY_AGENTS,
    REGISTRY_LEASES,
    AgentKeys,
)
from mas_core.policy.document import CompiledPolicy
from mas_core.registry_entries import EXTERNAL_LEASE, entry_document, parse_entry


def apply_acl_user(client: redis.Redis, agent_id: str, password: str) -> None:
    """Create or reset ``agent_id``'s ACL user with ``password`` (the only one it accepts).

    Idempotent: ``reset`` first drops every earlier rule and password.
    """
    if not password:
        raise ValueError("an ACL user needs a non-empty password")
    client.execute_command(
        "ACL", "SETUSER", acl_username(agent_id), *sidecar_acl_rules(agent_id), f">{password}"
    )


def apply_dashboard_user(client: redis.Redis, password: str, *, writes: bool) -> None:
    """Create or reset the dashboard's ACL user (:func:`mas_core.acl.dashboard_user`) with
    ``password``: read-only, plus the dead-letter rights with ``writes``. Idempotent, as
    :func:`apply_acl_user`."""
    if not password:
        raise ValueError("an ACL user needs a non-empty password")
    client.execute_command(
        "ACL",
        "SETUSER",
        dashboard_user(writes=writes),
        *dashboard_acl_rules(writes=writes),
        f">{password}",
    )


def delete_acl_user(client: redis.Redis, agent_id: str) -> None:
    """Remove ``agent_id``'s ACL user (and disconnect its clients); no error when absent."""
    client.execute_command("ACL", "DELUSER", acl_username(agent_id))


def ensure_functions(client: redis.Redis | redis.RedisCluster) -> bool:
    """Load the library with an administrative client unless the server has this version (on
    a cluster: on every primary); whether it loaded. Call it before sidecars start and whenever
    the server may have lost it."""
    try:
        if client.fcall("mas_version", 0) == VERSION.encode():
            return False
    except redis.ResponseError:
        pass  # no such function yet
    client.function_load(LIBRARY, replace=True)
    return True


def publish_policy(client: redis.Redis, document: CompiledPolicy) -> None:
    """Make ``document`` the policy in force."""
    with client.pipeline(transaction=True) as pipe:
        pipe.set(POLICY_DOCUMENT, document.to_json())
        pipe.set(POLICY_REVISION, document.revision)
        pipe.xadd(
            POLICY_CHANGES,
            {"revision": document.revision},
            maxlen=POLICY_CHANGES_KEPT,
            approximate=False,
        )
        pipe.execute()


def enforcers(client: redis.Redis) -> dict[str, str]:
    """``agent/replica`` -> the revision that sidecar enforces."""
    return {k.decode(): v.decode() for k, v in client.hgetall(POLICY_ENFORCERS).items()}


def register_agent(
    client: redis.Redis, agent_id: str, capabilities: Sequence[str], roles: Sequence[str]
) -> None:
    """Write ``agent_id``'s entry (no lease: its sidecars take that)."""
    client.hset(REGISTRY_AGENTS, agent_id, entry_document(capabilities, roles))


def register_external_agent(
    client: redis.Redis, agent_id: str, capabilities: Sequence[str], url: str, description: str
) -> bool:
    """Write an external A2A agent's entry (marked with its endpoint), its discovery metadata
    (``description``) and a lease that does not expire: no sidecar of its own renews one, and it
    is in discovery while the resource exists (:func:`forget_agent` removes the entry and lease).

    Never over an agent of mas: when ``agent_id``'s entry is an ordinary agent's, nothing is
    written and the answer is False (an ExternalAgent named like an Agent would otherwise have
    its messages sent to the URL of whoever wrote it). An Agent's registration, in turn, always
    wins (:func:`register_agent`)."""

    def register(pipe: redis.client.Pipeline) -> bool:
        current = pipe.hget(REGISTRY_AGENTS, agent_id)
        entry = parse_entry(current) if current is not None else None
        if entry is not None and entry.external is None:
            return False
        pipe.multi()
        pipe.hset(REGISTRY_AGENTS, agent_id, entry_document(capabilities, (), url))
        pipe.zadd(REGISTRY_LEASES, {agent_id: EXTERNAL_LEASE})
        return True

    if not client.transaction(register, REGISTRY_AGENTS, value_from_callable=True):
        return False
    client.set(AgentKeys(agent_id).metadata, orjson.dumps({"description": description}))
    return True


def forget_external_agent(client: redis.Redis, agent_id: str) -> None:
    """Remove an external agent's entry and lease, unless an agent of mas holds the id now."""

    def forget(pipe: redis.client.Pipeline) -> None:
        current = pipe.hget(REGISTRY_AGENTS, agent_id)
        entry = parse_entry(current) if current is not None else None
        if entry is not None and entry.external is None:
            return
        pipe.multi()
        pipe.hdel(REGISTRY_AGENTS, agent_id)
        pipe.zrem(REGISTRY_LEASES, agent_id)

    client.transaction(forget, REGISTRY_AGENTS)


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
