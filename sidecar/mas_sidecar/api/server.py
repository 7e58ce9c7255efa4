"""Serving the HTTP API on 127.0.0.1, every connection bounded in number and in time.

The API's only intended client is the agent next to it, but nothing stops a buggy or hostile
local process from opening connections and holding them. These bounds keep that from taking the
sidecar's memory or leaving its agent without service for longer than a known time:

* **Connections**: at most ``max_connections`` are open at once. One more is answered at once
  with ``503 too_many_connections`` and ``Connection: close`` (a fixed answer, written before
  its request is read), then closed — when the client closes its side, or after
  ``REFUSED_LINGER_SECONDS`` at the latest. The open ones are not disturbed.
* **Idle connections and request heads**: a connection must deliver a complete request head
  (request line and headers) within ``idle_timeout_ms`` of opening or of its previous answer,
  or it is closed without an answer (aiohttp's keep-alive timer; data arriving does not restart
  it). So an idle keep-alive connection and a client trickling its headers byte by byte are
  both cut off; a request being handled (a delivery stream, a request waiting for its reply) is
  not idle.
* **Bodies**: the middleware in :mod:`mas_sidecar.api.http` gives a body ``body_timeout_ms`` to
  arrive after its head (``408 body_timeout``). What is left of a body the sidecar refused (408,
  413) is read and dropped for that long again at most (aiohttp's lingering close), then the
  connection is closed.
* **Delivery streams**: :meth:`mas_sidecar.streams.inbox.Inbox.subscription` caps them
  (``429 too_many_subscribers``); :func:`connection_closed` lets a stream notice at once that
  its client went away, so its place is free again without waiting for the next write.

:func:`serve` runs the app as ``aiohttp.web.run_app`` does (until SIGTERM or SIGINT, then a
graceful shutdown) but accepts connections itself, so that it can count them. Given the probes'
application (:mod:`mas_sidecar.api.probes`), it also serves that on ``MAS_METRICS_ADDRESS``,
with the same timeouts and at most ``probes.MAX_CONNECTIONS`` connections. :func:`serving`
serves another application beside the API the same way (an exposed agent's A2A listener, with
a cap of its own: a flood of A2A connections never takes the agent's API's). Used by
:mod:`mas_sidecar.main` and :mod:`mas_sidecar.api.a2a.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import orjson
from aiohttp import web
from prometheus_client import Counter

from mas_core.error_codes import HTTP_STATUS, ErrorCode
from mas_sidecar.api import probes as probes_app
from mas_sidecar.api.http import METRICS_KEY
from mas_sidecar.config import SidecarConfig

LISTEN_HOST = "127.0.0.1"  # the API trusts its caller: never listen beyond loopback
SHUTDOWN_SECONDS = 5.0
REFUSED_LINGER_SECONDS = 1.0
_BACKLOG = 128


class _Connection(asyncio.Protocol):
    """An accepted connection: aiohttp's handler for it, counted while it is open."""

    def __init__(self, handler: web.RequestHandler, acceptor: _Acceptor) -> None:
        self._handler = handler
        self._acceptor = acceptor
        self._closed: asyncio.Future[None] | None = None
        acceptor.open += 1

    def closed(self) -> asyncio.Future[None]:
        """Resolved once the connection is closed."""
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
        return self._closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> None:
        self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._acceptor.open -= 1
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._handler.connection_lost(exc)


class _Refused(asyncio.Protocol):
    """A connection over the limit: answered ``503 too_many_connections``, then closed.

    The answer and the end of our side go out at once; what the client sends is read and
    dropped until it closes too (so it reads the answer rather than a reset), for
    ``REFUSED_LINGER_SECONDS`` at most.
    """

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's do not subclass asyncio's
        transport.write(self._answer)
        transport.write_eof()
        self._deadline = asyncio.get_running_loop().call_later(
            REFUSED_LINGER_SECONDS, transport.close
        )

    def data_received(self, data: bytes) -> None:
        """Dropped: the request is not served."""

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()


class _Acceptor:
    """The protocol factory of the listening socket: aiohttp's handler for each connection while
    fewer than ``limit`` are open, :class:`_Refused` for the others."""

    def __init__(
        self,
        server: web.Server,
        limit: int,
        refused: Counter,
        setting: str = "MAS_MAX_CONNECTIONS",
        body: bytes | None = None,
    ) -> None:
        """``refused`` counts the connections refused; ``body``: the refusal's JSON document
        (the API's error document if None)."""
        self._server = server
        self.limit = limit
        self.open = 0
        self._refused = refused
        body = body or orjson.dumps(
            {
                "error": {
                    "code": ErrorCode.TOO_MANY_CONNECTIONS.value,
                    "message": too_many_connections(limit, setting),
                }
            }
        )
        status = HTTP_STATUS[ErrorCode.TOO_MANY_CONNECTIONS]
        self._refusal = (
            f"HTTP/1.1 {status} Service Unavailable\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        ).encode() + body

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.limit:
            self._refused.inc()
            return _Refused(self._refusal)
        return _Connection(self._server(), self)


def too_many_connections(limit: int, setting: str) -> str:
    """The message of a connection refused over ``limit``."""
    return (
        f"this listener serves at most {limit} connections at once ({setting}); "
        "close idle ones or retry later"
    )


def connection_closed(request: web.Request) -> asyncio.Future[None]:
    """A future resolved once ``request``'s connection is closed (never, for a connection not
    accepted by :func:`serve`)."""
    transport = request.transport
    if transport is None:  # already closed
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
    connection = transport.get_protocol()
    if isinstance(connection, _Connection):
        return connection.closed()
    return asyncio.get_running_loop().create_future()


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    config: SidecarConfig,
    address: tuple[str, int],
    *,
    limit: int,
    refused: Counter,
    setting: str,
    body: bytes,
) -> AsyncIterator[None]:
    """Serve ``app`` on ``address`` while in the block, beside the API (in its event loop),
    with the API's timeouts and at most ``limit`` connections: one more is answered ``503``
    with ``body`` (and counted by ``refused``), as the API answers its own."""
    runner = _runner(app, config, signals=False)
    await runner.setup()
    try:
        assert runner.server is not None
        listener = await _listen(_Acceptor(runner.server, limit, refused, setting, body), *address)
        try:
            yield
        finally:
            listener.close()
    finally:
        await runner.cleanup()


def _runner(app: web.Application, config: SidecarConfig, *, signals: bool) -> web.AppRunner:
    return web.AppRunner(
        app,
        handle_signals=signals,
        access_log=None,
        shutdown_timeout=SHUTDOWN_SECONDS,
        keepalive_timeout=config.idle_timeout_ms / 1000,
        lingering_time=config.body_timeout_ms / 1000,
    )


async def _listen(acceptor: _Acceptor, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(acceptor, host, port, backlog=_BACKLOG)


async def _serve(
    app: web.Application, config: SidecarConfig, probes: web.Application | None
) -> None:
    runners = [_runner(app, config, signals=True)]
    await runners[0].setup()
    listeners: list[asyncio.Server] = []
    try:
        server = runners[0].server
        assert server is not None
        metrics = app[METRICS_KEY]
        acceptor = _Acceptor(server, config.max_connections, metrics.connections_refused)
        metrics.connections.set_function(lambda: acceptor.open)
        listeners.append(await _listen(acceptor, LISTEN_HOST, config.port))
        if probes is not None and config.metrics_address is not None:
            runners.append(_runner(probes, config, signals=False))
            await runners[1].setup()
            assert runners[1].server is not None
            limit, (host, port) = probes_app.MAX_CONNECTIONS, config.metrics_address
            fixed = _Acceptor(
                runners[1].server, limit, metrics.connections_refused, "fixed for this listener"
            )
            listeners.append(await _listen(fixed, host, port))
        await asyncio.Event().wait()  # until SIGTERM or SIGINT (GracefulExit)
    finally:
        for listener in listeners:
            listener.close()
        for runner in reversed(runners):
            await runner.cleanup()


def serve(
    app: web.Application, config: SidecarConfig, probes: web.Application | None = None
) -> None:
    """Serve ``app`` on 127.0.0.1 (``config.port``), and ``probes`` on
    ``config.metrics_address`` when both are given, until SIGTERM or SIGINT, then shut down
    gracefully: the same steps as ``aiohttp.web.run_app``."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, config, probes))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():  # a signal: stop serving, then shut the app down
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        rest = asyncio.all_tasks(loop)
        for task in rest:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
