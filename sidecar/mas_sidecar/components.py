"""The sidecar's components, built once per process and shared by routes and background tasks.

Used by :mod:`mas_sidecar.app` (builds them) and the routes (look them up on the app).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from mas.keys import AgentKeys

from mas_sidecar.config import SidecarConfig
from mas_sidecar.dead_letters import DeadLetters
from mas_sidecar.inbox import Inbox
from mas_sidecar.metrics import Metrics
from mas_sidecar.outbox import Outbox
from mas_sidecar.registry import Registry
from mas_sidecar.replies import ReplyWaiter
from mas_sidecar.state_store import StateStore


@dataclass
class Components:
    config: SidecarConfig
    redis: aioredis.Redis
    metrics: Metrics
    registry: Registry
    inbox: Inbox
    outbox: Outbox
    replies: ReplyWaiter
    state: StateStore
    dead_letters: DeadLetters

    @classmethod
    def build(cls, config: SidecarConfig, metrics: Metrics) -> Components:
        client = aioredis.Redis.from_url(
            config.redis_url,
            socket_connect_timeout=2,
            socket_timeout=5,  # above the 1 s blocking reads
            health_check_interval=15,
        )
        keys = AgentKeys(config.agent_id)
        registry = Registry(
            client,
            agent_id=config.agent_id,
            capabilities=config.capabilities,
            metadata=config.metadata,
            ttl_ms=config.registry_ttl_ms,
            metrics=metrics,
        )
        return cls(
            config=config,
            redis=client,
            metrics=metrics,
            registry=registry,
            inbox=Inbox(
                client,
                keys,
                replica=config.replica,
                lease_ms=config.lease_ms,
                max_attempts=config.max_attempts,
                max_inflight=config.max_inflight,
                metrics=metrics,
            ),
            outbox=Outbox(
                client,
                agent_id=config.agent_id,
                namespace=config.namespace,
                registry=registry,
                metrics=metrics,
            ),
            replies=ReplyWaiter(client, keys.replies(config.replica), metrics),
            state=StateStore(client, keys.state),
            dead_letters=DeadLetters(client, keys),
        )


COMPONENTS = web.AppKey("components", Components)


def components(request: web.Request) -> Components:
    return request.app[COMPONENTS]
