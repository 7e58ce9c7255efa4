"""The sidecar's components, built once per process and shared by routes and background tasks.

Wiring only: :meth:`Components.build` connects to Redis and builds the checks
(:mod:`mas_sidecar.checks`), the Streams bridge (:mod:`mas_sidecar.streams`), the set-up
(:mod:`mas_sidecar.recovery`) and the background loops (:mod:`mas_sidecar.loops`) with the parts
each needs. Used by :mod:`mas_sidecar.api.app` (builds them, keeps them on the application) and
the routes (:func:`mas_sidecar.api.http.components` looks them up).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis

from mas_core.keys import AgentKeys
from mas_core.telemetry import tracing
from mas_core.telemetry.tracing import Tracer
from mas_sidecar.checks.audit_log import AuditLog
from mas_sidecar.checks.breaker import Breakers
from mas_sidecar.checks.credentials import CredentialStore
from mas_sidecar.checks.gateway import Gateway
from mas_sidecar.checks.policy_store import PolicyStore
from mas_sidecar.checks.ratelimit import RateLimiter
from mas_sidecar.checks.replay import ReplayGuard
from mas_sidecar.config import SidecarConfig
from mas_sidecar.loops import Loops
from mas_sidecar.metrics import Metrics
from mas_sidecar.recovery import Recovery
from mas_sidecar.redis_client import connect
from mas_sidecar.streams.dead_letters import DeadLetters
from mas_sidecar.streams.inbox import Inbox
from mas_sidecar.streams.outbox import Outbox
from mas_sidecar.streams.registry import Registry
from mas_sidecar.streams.replies import ReplyWaiter
from mas_sidecar.streams.state_store import StateStore
from mas_sidecar.streams.writer import Replication, Writer


@dataclass
class Components:
    config: SidecarConfig
    redis: aioredis.Redis
    blocking: aioredis.Redis  # for the reads that block (mas_sidecar.redis_client.BLOCK_MS)
    metrics: Metrics
    writer: Writer
    registry: Registry
    policies: PolicyStore
    audit: AuditLog
    breakers: Breakers
    credentials: CredentialStore | None
    gateway: Gateway
    inbox: Inbox
    outbox: Outbox
    replies: ReplyWaiter
    state: StateStore
    dead_letters: DeadLetters
    recovery: Recovery
    loops: Loops
    tracer: Tracer

    @classmethod
    def build(cls, config: SidecarConfig, metrics: Metrics) -> Components:
        client = connect(config.redis_url, cluster=config.redis_cluster)
        blocking = connect(config.redis_url, cluster=config.redis_cluster, blocking=True)
        lost = asyncio.Event()  # a loop lost the server: the recovery looks at it at once
        tracer = (
            tracing.from_environment("mas-sidecar", {"mas.agent.id": config.agent_id})
            if config.tracing
            else tracing.NO_TRACER
        )
        keys = AgentKeys(config.agent_id)
        writer = Writer(
            client,
            Replication(config.wait_replicas, config.wait_timeout_ms)
            if config.wait_replicas
            else None,
        )
        policies = PolicyStore(
            client,
            agent_id=config.agent_id,
            replica=config.replica,
            policy_file=config.policy_file,
            metrics=metrics,
            blocking=blocking,
            trouble=lost.set,
            poll_ms=config.policy_poll_ms,
        )
        audit = AuditLog(client, keys, config.replica, writer)
        registry = Registry(
            client,
            agent_id=config.agent_id,
            capabilities=config.capabilities,
            roles=config.roles,
            metadata=config.metadata,
            ttl_ms=config.registry_ttl_ms,
            policies=policies,
            audit=audit,
            metrics=metrics,
        )
        breakers = Breakers()
        credentials = (
            CredentialStore(config.credentials_dir, agent_id=config.agent_id)
            if config.credentials_dir
            else None
        )
        replay = ReplayGuard(client, keys, window_ms=config.replay_window_ms)
        gateway = Gateway(
            agent_id=config.agent_id,
            roles=frozenset(config.roles),
            credentials=credentials,
            replay=replay,
            policies=policies,
            registry=registry,
            limiter=RateLimiter(client, keys),
            breakers=breakers,
            audit=audit,
            writer=writer,
            metrics=metrics,
        )
        inbox = Inbox(
            client,
            keys,
            replica=config.replica,
            lease_ms=config.lease_ms,
            max_attempts=config.max_attempts,
            max_inflight=config.max_inflight,
            max_subscribers=config.max_subscribers,
            check=gateway.check_receive_many,
            metrics=metrics,
            blocking=blocking,
            trouble=lost.set,
            tracer=tracer,
        )
        replies = ReplyWaiter(
            client, keys, config.replica, metrics, check=gateway.check_receive_many,
            blocking=blocking, trouble=lost.set,
        )  # fmt: skip
        recovery = Recovery(
            client, keys, inbox=inbox, replies=replies, audit=audit, policies=policies,
            registry=registry, metrics=metrics, wake=lost,
        )  # fmt: skip
        return cls(
            config=config,
            redis=client,
            blocking=blocking,
            metrics=metrics,
            writer=writer,
            registry=registry,
            policies=policies,
            audit=audit,
            breakers=breakers,
            credentials=credentials,
            gateway=gateway,
            inbox=inbox,
            outbox=Outbox(
                agent_id=config.agent_id,
                namespace=config.namespace,
                registry=registry,
                gateway=gateway,
                metrics=metrics,
                check_writable=recovery.check_writable,
            ),
            replies=replies,
            state=StateStore(client, keys),
            dead_letters=DeadLetters(client, keys, replay, gateway.replay_refusal),
            recovery=recovery,
            loops=Loops(metrics, recovery.alarm),
            tracer=tracer,
        )
