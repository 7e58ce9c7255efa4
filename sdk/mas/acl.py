"""Least-privilege Redis ACL users for sidecars: one user per agent, its password in the agent's
Secret (only the sidecar mounts it; the agent container has no Redis credentials at all).

The rules are built from the key schema (:mod:`mas.keys`) and from the commands the sidecar
really sends; nothing grants ``@all``, a category, ``allkeys`` or any administrative command.
Needs Redis ≥ 7.0 or Valkey ≥ 7.2 (ACL selectors and ``%R~`` / ``%W~`` key permissions).

What the user of agent ``ns/name`` may do (``P`` is its own prefix ``mas:{ns/name}:``):

* **Its own keys** ``P*`` (inbox, dead letters, state, replay guard, shared rate-limit buckets,
  audit chain, its replicas' reply streams): read and write with the stream, hash and sorted-set
  commands the sidecar uses, and ``FCALL`` of the control plane's function library
  (:mod:`mas.functions`: state store, replay guard, rate limiter, batched appends). It cannot
  load or run code of its own (no ``EVAL``, ``EVALSHA``, ``SCRIPT`` or ``FUNCTION``). Redis checks
  each command a function runs, and the keys it declares, against these same rules. Removing
  data is narrower: ``XDEL`` only on the inbox, dead letters and reply streams, ``DEL`` only on
  reply streams, ``HDEL``/``ZREM`` only on the replay guard, ``PEXPIRE`` only on rate-limit
  buckets — so it cannot delete its own state or audit stream.
* **Other agents' inboxes and reply streams**: ``XADD`` only, write-only (``%W~``) — it cannot
  read a message in them; plus ``PEXPIRE`` on reply streams (the sender bounds the life of a
  reply stream it writes to), and ``XLEN`` (read-only, the length only) on inboxes: the
  circuit breaker reads a target's backlog back with each send. ``GET`` (read-only) on their
  ``metadata`` key: what each agent publishes about itself, shown in discovery. The sidecar
  appends through one function call per stream and pipeline (:mod:`mas_sidecar.writer`), so
  ``FCALL`` may also name those streams as keys; Redis requires read-write access for a
  function's declared keys, which grants nothing more here, because every command a function
  runs is checked against these same rules — it can append to another inbox and read its
  length, never read, trim with ``XTRIM`` or delete it (tested).
* **Registry and policy**: read ``mas:{registry}:agents``, ``mas:{registry}:leases``,
  ``mas:{policy}:document`` and ``mas:{policy}:revision``. The registry's entries (the
  capabilities and roles authorization relies on) are the control plane's to write: a sidecar
  publishes what its agent says about itself in its own ``metadata`` key. Trust anchors are
  files, never in Redis; any other key is out of reach.

Shared keys a sidecar can still write, and why (known limitations: an ACL grants a command on a
whole key, it cannot name a hash field, a sorted-set member or a command argument):

* ``mas:{registry}:leases`` (``ZADD``): each replica renews its agent's liveness lease. It
  could move another agent's deadline (make it look live or dead until that agent renews).
* ``mas:{policy}:enforcers`` (``HSET``): each replica reports the policy revision it enforces.
  It could misreport another replica's revision; it cannot read or change the policy itself.
* ``XADD`` accepts ``MAXLEN`` / ``MINID``, so a user able to append to a stream can also trim
  it: another agent's inbox or reply stream, and its own audit stream. Trimming an audit stream
  breaks its hash chain where ``mas audit verify`` detects it; trimming an inbox loses
  undelivered messages. Only the sidecar holds the password, never the agent.

Used by the operator (one user per agent, rebuilt on every reconcile), ``mas up`` and the tests.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlsplit, urlunsplit

import redis

from mas.keys import (
    POLICY_DOCUMENT,
    POLICY_ENFORCERS,
    POLICY_REVISION,
    REGISTRY_AGENTS,
    REGISTRY_LEASES,
    AgentKeys,
)
from mas.names import InvalidAgentIdError, qualify

USER_PREFIX = "mas-agent"
ANY_AGENT = "mas:{*}:"  # the prefix pattern of every agent's keys

# Commands on the agent's own keys (every one is checked against the key patterns as well).
_OWN_COMMANDS = (
    # inbox: consumer group, reads, leases, acks; dead letters, audit chain, reply streams
    "xgroup|create", "xadd", "xlen", "xrange", "xread", "xreadgroup", "xack", "xclaim",
    "xautoclaim", "xpending",
    # state, audit chain heads, replay guard, rate-limit buckets (mostly inside functions)
    "hget", "hmget", "hset", "zadd", "zrangebyscore", "zscore",
    # policy document and revision (read-only key patterns below); the agent's own metadata
    "get", "set",
    # the control plane's functions (mas.functions); TIME for the shared rate-limit bucket
    "fcall", "time",
    # MULTI around ack / dead-lettering; PING for health checks
    "multi", "exec", "ping",
)  # fmt: skip


def _agent(agent_id: str) -> tuple[str, str]:
    """(namespace, name) of a full agent id; InvalidAgentIdError unless ``namespace/name``."""
    if "/" not in agent_id:
        raise InvalidAgentIdError(f"an ACL user needs a full 'namespace/name' id, not {agent_id!r}")
    namespace, _, name = qualify(agent_id).partition("/")
    return namespace, name


def acl_username(agent_id: str) -> str:
    """The ACL user of ``agent_id``: ``mas-agent.<namespace>.<name>``.

    Both parts are DNS-1123 labels (no dots), so the name is unambiguous, and it needs no
    escaping in a ``redis://user:password@host`` URL.
    """
    namespace, name = _agent(agent_id)
    return f"{USER_PREFIX}.{namespace}.{name}"


def sidecar_acl_rules(agent_id: str) -> list[str]:
    """The ``ACL SETUSER`` rules of ``agent_id``'s sidecar, from ``reset`` (without password)."""
    _agent(agent_id)
    own = AgentKeys(agent_id).prefix
    return [
        "reset",
        "on",
        *(f"+{command}" for command in _OWN_COMMANDS),
        f"~{own}*",
        f"%R~{REGISTRY_AGENTS}",
        f"%R~{REGISTRY_LEASES}",
        f"%R~{POLICY_DOCUMENT}",
        f"%R~{POLICY_REVISION}",
        # removals on own keys, each only where the sidecar removes something
        f"(+xdel ~{own}inbox ~{own}dlq ~{own}replies:*)",
        f"(+del ~{own}replies:*)",
        f"(+hdel +zrem ~{own}seen ~{own}seen-by-time)",
        f"(+pexpire ~{own}ratelimit:* %W~{ANY_AGENT}replies:*)",
        # other agents: append messages and replies; read an inbox's length, not its contents
        f"(+xadd %W~{ANY_AGENT}inbox %W~{ANY_AGENT}replies:*)",
        f"(+xlen %R~{ANY_AGENT}inbox)",
        # discovery: what other agents publish about themselves
        f"(+get %R~{ANY_AGENT}metadata)",
        # the writer's append function names those streams (its commands are checked as above)
        f"(+fcall ~{ANY_AGENT}inbox ~{ANY_AGENT}replies:*)",
        # shared entries this agent maintains (see the module docstring)
        f"(+hset %W~{POLICY_ENFORCERS})",
        f"(+zadd %W~{REGISTRY_LEASES})",
    ]


def generate_password() -> str:
    """A new random ACL password (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def apply_acl_user(client: redis.Redis, agent_id: str, password: str) -> None:
    """Create or reset ``agent_id``'s ACL user with ``password`` (the only one it accepts).

    Idempotent: ``reset`` first drops every earlier rule and password.
    """
    if not password:
        raise ValueError("an ACL user needs a non-empty password")
    client.execute_command(
        "ACL", "SETUSER", acl_username(agent_id), *sidecar_acl_rules(agent_id), f">{password}"
    )


def delete_acl_user(client: redis.Redis, agent_id: str) -> None:
    """Remove ``agent_id``'s ACL user (and disconnect its clients); no error when absent."""
    client.execute_command("ACL", "DELUSER", acl_username(agent_id))


def agent_redis_url(redis_url: str, agent_id: str, password: str) -> str:
    """``redis_url`` with ``agent_id``'s ACL user and ``password`` in place of its credentials."""
    parts = urlsplit(redis_url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(acl_username(agent_id), safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def masked_url(redis_url: str) -> str:
    """``redis_url`` fit for printing: any password replaced by ``***``."""
    parts = urlsplit(redis_url)
    if parts.password is None:
        return redis_url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))
