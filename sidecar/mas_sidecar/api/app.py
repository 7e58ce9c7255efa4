"""Builds the aiohttp application: components, routes, middleware and the lifespan.

Start-up serves at once and sets up on Redis in the background (:mod:`mas_sidecar.recovery`
waits for Redis and the control plane's function library, creates the ring's consumer group,
adopts the senders' streams and registers the agent, and does so again whenever the server was
restarted or replaced); then the background loops start, supervised (:mod:`mas_sidecar.loops`).
Shutdown stops the delivery streams and the loops, releases this replica's leases for the
other replicas, and closes Redis.
An exposed agent's sidecar also serves A2A on a listener of its own (:mod:`mas_sidecar.api.a2a`).
Used by :mod:`mas_sidecar.main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from mas_sidecar.api.http import (
    API_TOKEN,
    BODY_TIMEOUT,
    COMPONENTS,
    METRICS_KEY,
    REMOTES,
    middleware,
)
from mas_sidecar.api.routes import agents, dead_letters, deliveries, messages, state, system
from mas_sidecar.components import Components
from mas_sidecar.config import SidecarConfig
from mas_sidecar.metrics import Metrics
from mas_sidecar.streams.errors import REDIS_ERRORS

log = logging.getLogger(__name__)


def build_app(config: SidecarConfig) -> web.Application:
    metrics = Metrics()
    app = web.Application(middlewares=[middleware], client_max_size=config.max_body_bytes)
    app[METRICS_KEY] = metrics
    app[BODY_TIMEOUT] = config.body_timeout_ms / 1000
    app[API_TOKEN] = config.api_token.encode() if config.api_token is not None else None
    app[COMPONENTS] = Components.build(config, metrics)
    app[deliveries.STOPPING] = asyncio.Event()
    app[REMOTES] = {}
    for module in (messages, deliveries, state, agents, dead_letters, system):
        app.add_routes(module.routes)
    app.cleanup_ctx.append(_lifespan)
    if config.a2a_exposed:
        app.cleanup_ctx.append(_a2a_listener)
    app.on_shutdown.append(_stop_streams)
    app.on_cleanup.append(_close_remotes)
    return app


async def _close_remotes(app: web.Application) -> None:
    """Close the outbound A2A client, if a request to an external agent made one."""
    for client in app[REMOTES].values():
        await client.close()


async def _lifespan(app: web.Application) -> AsyncIterator[None]:
    parts = app[COMPONENTS]
    if parts.credentials is not None:
        parts.credentials.load()  # no valid identity: refuse to start (CredentialsError)
    loops = parts.loops
    loops.start("recovery", parts.recovery.run_until)
    starting = asyncio.create_task(_start_loops(parts), name="start-loops")
    yield
    starting.cancel()
    await loops.stop()
    with contextlib.suppress(*REDIS_ERRORS):
        released = await parts.inbox.release_all()
        log.info("released %d leases to the other replicas", released)
    await parts.redis.aclose()
    await parts.blocking.aclose()
    await asyncio.to_thread(parts.tracer.shutdown)  # export the spans still batched


async def _a2a_listener(app: web.Application) -> AsyncIterator[None]:
    """The A2A listener of an exposed agent (imported only then: see mas_sidecar.api.a2a)."""
    from mas_sidecar.api.a2a.server import listener  # noqa: PLC0415 - only when exposed

    async for _ in listener(app[COMPONENTS]):
        yield


async def _start_loops(parts: Components) -> None:
    """Start the background loops once the sidecar is set up on the server (it serves
    ``/readyz`` meanwhile, 503 with the reason)."""
    await parts.recovery.set_up.wait()
    loops = parts.loops
    loops.start("inbox-read", parts.inbox.read_until)
    loops.start("inbox-reclaim", parts.inbox.reclaim_until)
    loops.start("replies", parts.replies.read_until)
    loops.start("registry", parts.registry.renew_until)
    loops.start("policy", parts.policies.watch_until)
    loops.start("writer", parts.writer.run_until)
    if parts.credentials is not None:
        loops.start("credentials", parts.credentials.reload_until)
    log.info("sidecar for %s (replica %s) ready", parts.config.agent_id, parts.config.replica)


async def _stop_streams(app: web.Application) -> None:
    log.info("shutting down: closing delivery streams")
    app[deliveries.STOPPING].set()
