"""Builds the aiohttp application: components, routes, middleware and the lifespan.

Start-up waits for Redis (retrying, so a sidecar may start before Redis) and for the control
plane's function library on it, creates the ring's consumer group and adopts the senders'
streams, registers the agent and starts the background loops; shutdown stops the delivery
streams, releases this replica's leases for the other replicas, and closes Redis.
Used by :mod:`mas_sidecar.main` and by tests that serve the app in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web

from mas import functions
from mas_sidecar.components import COMPONENTS, Components
from mas_sidecar.config import SidecarConfig
from mas_sidecar.http import API_TOKEN, BODY_TIMEOUT, METRICS_KEY, middleware
from mas_sidecar.inbox import REDIS_ERRORS
from mas_sidecar.metrics import Metrics
from mas_sidecar.routes import agents, dead_letters, deliveries, messages, state, system

log = logging.getLogger(__name__)
_STARTUP_RETRY_SECONDS = 0.5
_LOOP_STOP_SECONDS = 3.0  # longer than one blocking read (1 s)


def build_app(config: SidecarConfig) -> web.Application:
    metrics = Metrics()
    app = web.Application(middlewares=[middleware], client_max_size=config.max_body_bytes)
    app[METRICS_KEY] = metrics
    app[BODY_TIMEOUT] = config.body_timeout_ms / 1000
    app[API_TOKEN] = config.api_token.encode() if config.api_token is not None else None
    app[COMPONENTS] = Components.build(config, metrics)
    app[deliveries.STOPPING] = asyncio.Event()
    for module in (messages, deliveries, state, agents, dead_letters, system):
        app.add_routes(module.routes)
    app.cleanup_ctx.append(_lifespan)
    app.on_shutdown.append(_stop_streams)
    return app


async def _lifespan(app: web.Application) -> AsyncIterator[None]:
    parts = app[COMPONENTS]
    if parts.credentials is not None:
        parts.credentials.load()  # no valid identity: refuse to start (CredentialsError)
    await _prepare(parts)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(parts.inbox.read_until(stop), name="inbox-read"),
        asyncio.create_task(parts.inbox.reclaim_until(stop), name="inbox-reclaim"),
        asyncio.create_task(parts.replies.read_until(stop), name="replies"),
        asyncio.create_task(parts.registry.renew_until(stop), name="registry"),
        asyncio.create_task(parts.policies.watch_until(stop), name="policy"),
        asyncio.create_task(parts.writer.run_until(stop), name="writer"),
    ]
    if parts.credentials is not None:
        tasks.append(asyncio.create_task(parts.credentials.reload_until(stop), name="credentials"))
    log.info("sidecar for %s (replica %s) ready", parts.config.agent_id, parts.config.replica)
    yield
    # Loops also watch ``stop``: redis-py can swallow a cancellation that lands mid-command.
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks, timeout=_LOOP_STOP_SECONDS)
    with contextlib.suppress(*REDIS_ERRORS):
        released = await parts.inbox.release_all()
        log.info("released %d leases to the other replicas", released)
    await parts.redis.aclose()


async def _prepare(parts: Components) -> None:
    """Set up Redis state, waiting for Redis to come up if it is not there yet."""
    while True:
        try:
            missing = await functions_missing(parts.redis)
            if missing is None:  # setting up the inbox calls a function (mas_adopt)
                await parts.inbox.setup()
                await parts.replies.setup()
                await parts.audit.setup()
                await parts.policies.refresh()
                await parts.registry.register()  # with the policy: it screens the metadata
                return
            log.warning("waiting for the control plane: %s", missing)
        except REDIS_ERRORS as exc:
            log.warning("waiting for Redis: %s", exc)
        await asyncio.sleep(_STARTUP_RETRY_SECONDS)


async def functions_missing(client: aioredis.Redis) -> str | None:
    """Why the server cannot run this sidecar's functions (:mod:`mas.functions`), or None."""
    try:
        version = await client.fcall("mas_version", 0)
    except redis.exceptions.ResponseError as exc:
        return f"the server has no mas function library ({exc})"
    if version.decode() != functions.VERSION:
        return f"the server has mas functions {version.decode()}, this sidecar {functions.VERSION}"
    return None


async def _stop_streams(app: web.Application) -> None:
    log.info("shutting down: closing delivery streams")
    app[deliveries.STOPPING].set()
