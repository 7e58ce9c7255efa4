"""The dashboard's HTTP server (aiohttp): the pages, their live data, the write actions.

Routes:

* ``GET /``, ``GET /static/...``: the page and its script and style (files of this package);
* ``GET /api/page``: everything the page shows (:func:`mas_dashboard.views.page`) as JSON;
* ``GET /api/events``: server-sent events, one ``page`` event with that document now and again
  whenever it changes (while a page follows the stream, Redis is read every
  :attr:`DashboardSettings.refresh` seconds, and at once after an action; with nobody
  watching, the dashboard sends Redis nothing);
* ``GET /api/config``: whether write actions are on;
* ``POST /api/agents/{namespace}/{name}/dead-letters/{id}/replay`` and ``.../delete``: only
  with write actions on (else ``403 writes_disabled``) and the write token as a bearer token
  (else ``401 unauthorized``); each attempt is audited (:mod:`mas_dashboard.actions`).

Every error is ``{"error": {"code", "message"}}`` with a stable code. Requests whose ``Host``
is not the address the dashboard serves (a page of another site reaching it through DNS
rebinding) are refused (``421 wrong_host``). Built by :func:`make_app`, run by
:func:`run_dashboard`; used by ``mas dashboard`` and ``mas up`` (:mod:`mas_cli.dashboard_command`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import redis
from aiohttp import web

from mas_core import redis_clients
from mas_dashboard import actions
from mas_dashboard.reading import Verdicts, read_snapshot
from mas_dashboard.views import page

log = logging.getLogger(__name__)
STATIC = Path(str(resources.files("mas_dashboard") / "static"))
_SETTINGS_KEY: web.AppKey[DashboardSettings] = web.AppKey("settings")
_STATE_KEY: web.AppKey[Live] = web.AppKey("live")
_LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")
KEEPALIVE = 15.0  # seconds of silence after which the event stream sends a comment


@dataclass(frozen=True)
class DashboardSettings:
    """How one dashboard runs: the Redis URL of its own user, where it listens, and the write
    token (None: write actions off)."""

    redis_url: str
    host: str = "127.0.0.1"
    port: int = 0
    write_token: str | None = None
    refresh: float = 2.0  # seconds between reads of Redis

    @property
    def writes(self) -> bool:
        return self.write_token is not None


@dataclass
class Live:
    """The latest page document and its version; readers wait on ``changed``."""

    client: redis.Redis
    document: bytes = b"{}"
    version: int = 0  # 0: nothing read yet
    watchers: int = 0  # event streams open
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    actions: asyncio.Lock = field(default_factory=asyncio.Lock)  # one audited action at a time
    verdicts: Verdicts = field(default_factory=Verdicts)

    def read(self) -> bytes:
        snapshot = read_snapshot(self.client, self.verdicts, time.time_ns() // 1_000_000)
        return orjson.dumps(page(snapshot))

    async def refresh(self) -> None:
        document = await asyncio.to_thread(self.read)
        if document != self.document:
            async with self.changed:
                self.document, self.version = document, self.version + 1
                self.changed.notify_all()

    async def next_document(self, seen: int) -> tuple[int, bytes] | None:
        """The document after version ``seen`` (with its version), at once when there is one;
        None when none came within :data:`KEEPALIVE` seconds."""
        async with self.changed:
            try:
                await asyncio.wait_for(
                    self.changed.wait_for(lambda: self.version != seen), KEEPALIVE
                )
            except TimeoutError:
                return None
            return self.version, self.document

    async def follow(self, every: float) -> None:
        """While anyone watches, refresh every ``every`` seconds (or when woken); until
        cancelled."""
        while True:
            if not self.watchers:
                self.wake.clear()
                await self.wake.wait()
                continue
            try:
                await self.refresh()
            except redis.RedisError as exc:
                log.warning("cannot read Redis: %s", exc)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), every)


def _error(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _live(request: web.Request) -> Live:
    return request.app[_STATE_KEY]


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def page_document(request: web.Request) -> web.Response:
    live = _live(request)
    if not live.watchers:  # nobody keeps it fresh: read now
        await live.refresh()
    return web.Response(body=live.document, content_type="application/json")


async def config(request: web.Request) -> web.Response:
    return web.json_response({"writes": request.app[_SETTINGS_KEY].writes})


async def events(request: web.Request) -> web.StreamResponse:
    live = _live(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    seen = 0
    live.watchers += 1
    live.wake.set()
    try:
        while True:
            document = await live.next_document(seen)
            if document is None:  # a comment now and then: a client gone is noticed on a write
                await response.write(b": still here\n\n")
                continue
            seen = document[0]
            await response.write(b"event: page\ndata: " + document[1] + b"\n\n")
    finally:
        live.watchers -= 1


def _action(
    run: Callable[[redis.Redis, str, str], actions.Done], name: str
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        settings = request.app[_SETTINGS_KEY]
        if settings.write_token is None:
            return _error(
                "writes_disabled",
                "write actions are off: start the dashboard with --enable-writes",
                403,
            )
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
        if not hmac.compare_digest(given, settings.write_token.encode()):
            return _error("unauthorized", "this action needs the dashboard's write token", 401)
        live = _live(request)
        agent_id = f"{request.match_info['namespace']}/{request.match_info['name']}"
        dead_letter = request.match_info["id"]
        event: dict[str, Any] = {
            "decision": name,
            "agent": agent_id,
            "dead_letter": dead_letter[:64],
            "by": request.remote or "",
        }
        async with live.actions:
            try:
                done = await asyncio.to_thread(run, live.client, agent_id, dead_letter)
            except actions.ActionError as exc:
                event.update(outcome="refused", reason=exc.code)
                await asyncio.to_thread(actions.audit, live.client, event)
                return _error(exc.code, exc.message, exc.status)
            event.update(outcome="done", message_id=done.message_id)
            await asyncio.to_thread(actions.audit, live.client, event)
        live.wake.set()
        return web.json_response({"dead_letter": done.dead_letter, "message_id": done.message_id})

    return handle


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Refuse other hosts' names (DNS rebinding); answer every failure as a JSON error."""
    settings = request.app[_SETTINGS_KEY]
    host = request.host.rpartition(":")[0] if ":" in request.host.lstrip("[") else request.host
    allowed = _LOCAL_NAMES if settings.host in ("127.0.0.1", "localhost", "::1") else ()
    if allowed and host not in allowed:
        return _error("wrong_host", f"this dashboard does not serve {request.host!r}", 421)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        code = "not_found" if exc.status == 404 else "method_not_allowed"
        if exc.status not in (404, 405):
            code = "bad_request"
        return _error(code, exc.reason, exc.status)
    except redis.RedisError as exc:
        log.warning("Redis failed: %s", exc)
        return _error("redis_unavailable", "the dashboard cannot reach Redis right now", 503)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error("internal_error", "the dashboard failed on this request", 500)


def make_app(settings: DashboardSettings, client: redis.Redis) -> web.Application:
    """The application; it reads Redis with ``client`` while it runs."""
    app = web.Application(middlewares=[guard])
    app[_SETTINGS_KEY] = settings
    live = app[_STATE_KEY] = Live(client)
    app.router.add_get("/", index)
    app.router.add_get("/api/page", page_document)
    app.router.add_get("/api/events", events)
    app.router.add_get("/api/config", config)
    prefix = "/api/agents/{namespace}/{name}/dead-letters/{id}"
    app.router.add_post(f"{prefix}/replay", _action(actions.replay, "dead_letter_replayed"))
    app.router.add_post(f"{prefix}/delete", _action(actions.delete, "dead_letter_deleted"))
    app.router.add_static("/static", STATIC)

    async def following(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(live.follow(settings.refresh))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(following)
    return app


@contextlib.asynccontextmanager
async def serving(settings: DashboardSettings) -> AsyncIterator[str]:
    """Serve the dashboard until the block ends; its URL."""
    client = redis_clients.client(settings.redis_url, **redis_clients.NO_CLIENT_SETINFO)
    runner = web.AppRunner(make_app(settings, client), handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        yield f"http://{host}:{port}/"
    finally:
        await runner.cleanup()
        client.close()


async def run_dashboard(settings: DashboardSettings, started: Callable[[str], None]) -> None:
    """Serve until cancelled; ``started`` gets the URL once it listens."""
    async with serving(settings) as url:
        started(url)
        await asyncio.Event().wait()
