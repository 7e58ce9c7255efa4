"""Least-privilege Redis ACL users for sidecars: one user per agent, its password in the agent's
Secret (only the sidecar mounts it; the agent container has no Redis credentials at all).

The rules are built from the key schema (:mod:`mas_core.keys`) and from the commands the sidecar
really sends; nothing grants ``@all``, a category, ``allkeys`` or any administrative command.
Needs Redis ≥ 7.0 or Valkey ≥ 7.2 (ACL selectors and ``%R~`` / ``%W~`` key permissions).

What the user of agent ``ns/name`` may do (``P`` is its own prefix ``mas:{ns/name}:``, ``S``
its id ``ns/name``):

* **Its own keys** ``P*`` (its senders' streams and their set and ring, dead letters, state,
  replay guard, shared rate-limit buckets, audit chain, its replicas' reply streams): read and
  write with the stream, hash, set and sorted-set commands the sidecar uses, and ``FCALL`` of
  the control plane's function library (:mod:`mas_core.functions`: state store, replay guard, rate
  limiter, batched appends, adopting new senders). It cannot load or run code of its own (no
  ``EVAL``, ``EVALSHA``, ``SCRIPT`` or ``FUNCTION``). Redis checks each command a function
  runs, and the keys it declares, against these same rules. Removing data is narrower:
  ``XDEL`` only on its senders' streams, ring, dead letters and reply streams, ``DEL`` only on
  reply streams, ``SREM`` only on its senders set, ``HDEL``/``ZREM`` only on the replay guard,
  ``PEXPIRE`` only on rate-limit buckets and its reply streams — so it cannot delete its own
  state or audit stream.
* **Other agents: only what carries its own id.** ``XADD`` (write-only, ``%W~``) to
  ``mas:{*}:in:S`` — its own stream into each other agent — and ``mas:{*}:replies:*:S`` — its
  own reply stream to each replica that asks it —, and ``XLEN`` (the length only) of
  ``mas:{*}:in:S``: the circuit breaker reads back this sender's backlog at the target. To be
  found, it adds itself to a target's ``senders`` set (``SADD``, write-only) and appends to
  its ``ring`` (``XADD``, write-only). It can read no message of any other agent, and write
  none into a stream another sender writes: agent ids are two DNS labels joined by ``/``, with
  no ``:``, braces or glob characters, so only the agent's own id ends one of these patterns
  (tested over tricky names). ``GET`` (read-only) on other agents' ``metadata``: what each
  agent publishes about itself, shown in discovery. The sidecar appends through one function
  call per target and pipeline (:mod:`mas_sidecar.streams.writer`), so ``FCALL`` may also name those
  keys; Redis requires read-write access for a function's declared keys, which grants nothing
  more here, because every command a function runs is checked against these same rules.
* **Registry and policy**: read ``mas:{registry}:agents``, ``mas:{registry}:leases``,
  ``mas:{policy}:document``, ``mas:{policy}:revision`` and ``mas:{policy}:changes`` (the
  stream of publication notices a sidecar blocks on; it cannot append to it, so it cannot make
  other sidecars reload, nor trim it). The registry's entries (the
  capabilities and roles authorization relies on) are the control plane's to write: a sidecar
  publishes what its agent says about itself in its own ``metadata`` key. Trust anchors are
  files, never in Redis; the control plane's signed checkpoints of audit trails
  (``mas:control:{ns/name}:audit-checkpoint``, outside every agent's prefix) and any other key
  are out of reach, for reading and writing.

Known limits (an ACL grants a command on a whole key, it cannot name a hash field, a
sorted-set member or a command argument), and what each can do:

* ``XADD`` accepts ``MAXLEN`` / ``MINID`` and explicit entry ids, so a user can trim or
  future-date every stream it may append to: its own streams into other agents (its own
  messages only: each sender has its own stream, and the receiver takes from ``in:S`` only
  envelopes of ``S``), any agent's ``ring`` (which delays the discovery of a new sender until
  the receivers' periodic look at their ``senders`` set; nothing on the receive path uses ring
  entry ids) and its own audit stream (which breaks its hash chain where ``mas audit verify``
  detects it). ``SADD`` can list bogus senders in another agent's set: a receiver validates
  each name and drops names without a stream, creating nothing.
* ``mas:{registry}:leases`` (``ZADD``): each replica renews its agent's liveness lease. It
  could move another agent's deadline (make it look live or dead until that agent renews).
* ``mas:{policy}:enforcers`` (``HSET``): each replica reports the policy revision it enforces.
  It could misreport another replica's revision; it cannot read or change the policy itself.

Only the sidecar holds the password, never the agent.

**The dashboard's users** (:func:`dashboard_user`, :func:`dashboard_acl_rules`): the read-only
:data:`DASHBOARD_USER` reads and never writes: the registry, leases, policy document, revision
and enforcers; every agent's audit stream, its chain heads and the control plane's checkpoint
of it (to verify the trail); dead letters; the senders sets; and of the messages waiting in an
agent's inbox streams only their count and pending summary (``XLEN``, ``XPENDING``, ``XINFO
GROUPS``: never an entry, so never a payload). No state, metadata, replay guard or reply
stream. With write actions on, the dashboard is :data:`DASHBOARD_WRITER` (a user of its own,
so a read-only dashboard and one with writes can share a server), which may also replay and
delete dead letters (``FCALL`` of ``mas_seen_requeue`` and each command that function runs,
each on the keys it needs only; ``XDEL`` on dead letters) and append to its own hash-chained
trail of those actions (:data:`mas_core.keys.DASHBOARD_AUDIT`). Known limits of the writer:
it may append to any inbox stream, so it can put back any envelope it can read (a dead
letter) and append entries that are no message; a receiver checks every entry's signature
and identity token and refuses (and audits) what its sender did not sign, so it cannot make a
message of its own.

Pure: the rules, the user's name and its URL. The control plane applies them
(:func:`mas_control.provision.apply_acl_user`: the operator on every reconcile, ``mas up`` at
start); the operator's settings and the ``mas`` command mask passwords with :func:`masked_url`.
"""

from __future__ import annotations

import secrets
from urllib.parse import quote, urlsplit, urlunsplit

from mas_core.keys import (
    DASHBOARD_AUDIT,
    DASHBOARD_AUDIT_HEADS,
    POLICY_CHANGES,
    POLICY_DOCUMENT,
    POLICY_ENFORCERS,
    POLICY_REVISION,
    REGISTRY_AGENTS,
    REGISTRY_LEASES,
    AgentKeys,
    audit_checkpoint,
)
from mas_core.names import InvalidAgentIdError, qualify

USER_PREFIX = "mas-agent"
DASHBOARD_USER = "mas-dashboard"  # read-only
DASHBOARD_WRITER = "mas-dashboard-writer"  # read-only plus the dead-letter rights

# Commands on the agent's own keys (every one is checked against the key patterns as well).
_OWN_COMMANDS = (
    # its senders' streams: consumer groups, reads, leases, acks; the ring; dead letters, audit
    # chain, reply streams
    "xgroup|create", "xadd", "xlen", "xrange", "xread", "xreadgroup", "xack", "xclaim",
    "xautoclaim", "xpending",
    # its senders set (read, and listed again by a dead letter's replay)
    "smembers", "sadd", "exists",
    # state, audit chain heads, replay guard, rate-limit buckets (mostly inside functions)
    "hget", "hmget", "hset", "zadd", "zrangebyscore", "zscore",
    # policy document and revision (read-only key patterns below); the agent's own metadata
    "get", "set",
    # the control plane's functions (mas_core.functions); TIME for the shared rate-limit bucket
    "fcall", "time",
    # MULTI around ack / dead-lettering; PING for health checks; WAIT for replicas to confirm
    # this connection's own writes (MAS_REDIS_WAIT_REPLICAS): it touches no key and can only
    # hold up the connection that sends it
    "multi", "exec", "ping", "wait",
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
    own = AgentKeys(agent_id)
    anyone = AgentKeys("*")  # the patterns of every agent's keys
    mine_in = anyone.inbox(agent_id)  # this agent's stream into any other agent
    mine_replies = anyone.replies("*", agent_id)  # its replies to any agent's replica
    own_replies = own.reply_bell("*")  # its replicas' bells and reply streams
    return [
        "reset",
        "on",
        *(f"+{command}" for command in _OWN_COMMANDS),
        f"~{own.every_key}",
        f"%R~{REGISTRY_AGENTS}",
        f"%R~{REGISTRY_LEASES}",
        f"%R~{POLICY_DOCUMENT}",
        f"%R~{POLICY_REVISION}",
        f"%R~{POLICY_CHANGES}",  # read (XREAD) only: no sidecar can announce a policy
        # removals on own keys, each only where the sidecar removes something
        f"(+xdel ~{own.inbox('*')} ~{own.ring} ~{own.dlq} ~{own_replies})",
        f"(+del ~{own_replies})",
        f"(+srem ~{own.senders})",
        f"(+hdel +zrem ~{own.seen} ~{own.seen_by_time})",
        f"(+pexpire ~{own.ratelimit('*')} ~{own_replies})",
        # other agents: append to the streams that carry this agent's own id; be discovered
        f"(+xadd %W~{mine_in} %W~{mine_replies} %W~{anyone.ring})",
        f"(+xlen %R~{mine_in})",
        f"(+sadd %W~{anyone.senders})",
        # discovery: what other agents publish about themselves
        f"(+get %R~{anyone.metadata})",
        # the writer's append function names those keys (its commands are checked as above)
        f"(+fcall ~{mine_in} ~{anyone.senders} ~{anyone.ring} ~{mine_replies})",
        # shared entries this agent maintains (see the module docstring)
        f"(+hset %W~{POLICY_ENFORCERS})",
        f"(+zadd %W~{REGISTRY_LEASES})",
    ]


def dashboard_acl_rules(*, writes: bool) -> list[str]:
    """The ``ACL SETUSER`` rules of the dashboard's user, from ``reset`` (without password):
    read-only, plus the dead-letter rights with ``writes`` (see the module docstring)."""
    anyone = AgentKeys("*")
    inboxes = anyone.inbox("*")
    rules = [
        "reset",
        "on",
        "+ping",
        f"(+get %R~{POLICY_DOCUMENT} %R~{POLICY_REVISION} %R~{audit_checkpoint('*')})",
        f"(+hgetall %R~{REGISTRY_AGENTS} %R~{POLICY_ENFORCERS} %R~{anyone.audit_heads})",
        f"(+zrange %R~{REGISTRY_LEASES})",
        f"(+xrange +xrevrange +xinfo|stream +exists %R~{anyone.audit} %R~{anyone.dlq})",
        f"(+xlen +xpending +xinfo|groups %R~{inboxes})",
        f"(+smembers %R~{anyone.senders})",
    ]
    if writes:
        rules += [
            f"(+fcall ~{inboxes} ~{anyone.dlq} ~{anyone.seen} ~{anyone.seen_by_time} "
            f"~{anyone.senders})",
            f"(+xgroup|create +xadd ~{inboxes})",
            f"(+sadd ~{anyone.senders})",
            f"(+xdel ~{anyone.dlq})",
            f"(+hset ~{anyone.seen})",
            f"(+zadd ~{anyone.seen_by_time})",
            f"(+xadd +hget +hset +multi +exec ~{DASHBOARD_AUDIT} ~{DASHBOARD_AUDIT_HEADS})",
        ]
    return rules


def dashboard_user(*, writes: bool) -> str:
    """The ACL user of a dashboard with or without write actions."""
    return DASHBOARD_WRITER if writes else DASHBOARD_USER


def dashboard_redis_url(redis_url: str, password: str, *, writes: bool) -> str:
    """``redis_url`` with the dashboard's user and ``password`` in place of its credentials."""
    return url_with_credentials(redis_url, dashboard_user(writes=writes), password)


def generate_password() -> str:
    """A new random ACL password (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def agent_redis_url(redis_url: str, agent_id: str, password: str) -> str:
    """``redis_url`` with ``agent_id``'s ACL user and ``password`` in place of its credentials."""
    return url_with_credentials(redis_url, acl_username(agent_id), password)


def url_with_credentials(redis_url: str, user: str, password: str) -> str:
    """``redis_url`` with ``user`` and ``password`` in place of its credentials."""
    parts = urlsplit(redis_url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def masked_url(redis_url: str) -> str:
    """``redis_url`` fit for printing: any password replaced by ``***``."""
    parts = urlsplit(redis_url)
    if parts.password is None:
        return redis_url
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))
