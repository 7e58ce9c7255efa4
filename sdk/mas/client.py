"""An async HTTP client for the sidecar API (docs/sidecar-api.md), one method per endpoint.

Agent programs normally use :class:`mas.Agent`, which drives this client; it is also usable on
its own (scripts, tests, other frameworks). Every request carries the agent's token
(``Authorization: Bearer``, see :mod:`mas_core.sidecar_token`), which the control plane gives the
agent as ``MAS_SIDECAR_TOKEN`` (or a file named by ``MAS_SIDECAR_TOKEN_FILE``). With a
``tracer`` that records (:mod:`mas_core.telemetry.tracing`), sends, requests, replies and acks
are spans, and each request carries its span's W3C trace context (``traceparent``) so the
sidecar's spans continue the trace; a send then goes alone, not coalesced. Every error
answer of the sidecar is raised as the matching :class:`mas.errors.SidecarError`; failures to
reach the sidecar at all surface as ``aiohttp.ClientError`` or ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from mas.coalesce import Coalescer
from mas.errors import MasError, SidecarError, sidecar_error
from mas.retry import RetryOption, retrying
from mas_core.envflags import env_secret
from mas_core.error_codes import ErrorCode
from mas_core.sidecar_token import TOKEN_ENV, authorization
from mas_core.telemetry.tracing import NO_TRACER, Tracer

_JSON = {"Content-Type": "application/json"}
COALESCED_BATCH = 100  # calls per shared request, at most
COALESCED_IN_FLIGHT = 2  # requests of one kind under way before calls start to queue


class SidecarClient:
    """Talks to one sidecar at ``base_url`` (default: the ``MAS_SIDECAR_URL`` environment)
    with the agent's ``token`` (default: ``MAS_SIDECAR_TOKEN``, or the file
    ``MAS_SIDECAR_TOKEN_FILE`` names; none for a sidecar that serves every caller)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        coalesce: bool = True,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        """``coalesce``: concurrent :meth:`send` and :meth:`ack` calls share batch requests
        (:mod:`mas.coalesce`); off, each call is its own request. ``tracer``: makes the
        client's spans (none by default)."""
        self.tracer = tracer
        url = base_url or os.environ.get("MAS_SIDECAR_URL")
        if not url:
            raise MasError("no sidecar URL: pass base_url or set MAS_SIDECAR_URL")
        if token is None:
            try:
                token = env_secret(os.environ, TOKEN_ENV)
            except ValueError as exc:
                raise MasError(str(exc)) from None
        self._headers = {"Authorization": authorization(token)} if token else {}
        self.base_url = url.rstrip("/")
        self.timeout = timeout
        self._default_timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        in_flight = COALESCED_IN_FLIGHT if coalesce else 1 << 30
        self._sends = Coalescer(
            self._send_one, self._send_coalesced, max_batch=COALESCED_BATCH,
            max_in_flight=in_flight,
        )  # fmt: skip
        self._acks = Coalescer(
            self._ack_one, self._ack_coalesced, max_batch=COALESCED_BATCH,
            max_in_flight=in_flight,
        )  # fmt: skip

    async def __aenter__(self) -> SidecarClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the client may be used again afterwards (a new pool)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # Messages

    async def send(
        self,
        to: str,
        type: str,
        payload: Any = None,
        *,
        correlation_id: str | None = None,
        ttl_ms: int | None = None,
        retry: RetryOption = None,
    ) -> str:
        """Send a message to ``to``; the id of the accepted message.

        ``retry`` (off by default): a :class:`mas.retry.Retry`, or a number of more tries, to
        send again after :class:`mas.errors.RateLimitedError` or
        :class:`mas.errors.CircuitOpenError` (nothing was sent then), waiting their
        ``retry_after``; other errors are raised at once.
        """
        body: dict[str, Any] = {"to": to, "type": type, "payload": payload}
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        if ttl_ms is not None:
            body["ttl_ms"] = ttl_ms
        if not self.tracer.enabled:
            return await retrying(lambda: self._sends.call(body), retry)
        with self.tracer.span(f"send {type}", kind="producer", attributes=_to(to)) as span:
            return await retrying(lambda: self._send_one(body, span.headers), retry)

    async def _send_one(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
        answer = await self._call("POST", "/v1/messages", body, headers=headers)
        return str(answer["id"])

    async def _send_coalesced(self, bodies: list[dict[str, Any]]) -> Sequence[str | BaseException]:
        try:
            return await self.send_many(bodies)
        except SidecarError as exc:
            if exc.status >= 500:
                raise
            # Refused whole (one malformed message, too large a body): nothing was sent, so
            # each goes alone and gets the answer it would have had.
            return await asyncio.gather(
                *(self._send_one(body) for body in bodies), return_exceptions=True
            )

    async def send_many(self, messages: Sequence[Mapping[str, Any]]) -> list[str | SidecarError]:
        """Send 1 to 500 messages in one request (``POST /v1/messages/batch``).

        Each message is a mapping with the keys :meth:`send` takes (``to``, ``type``,
        ``payload``, optionally ``correlation_id`` and ``ttl_ms``) and passes every check on its
        own. One result per message, in order: the id of an accepted message, or the
        :class:`mas.errors.SidecarError` a single send would have raised (not raised here). A
        malformed batch raises, and then nothing was sent.
        """
        answer = await self._call("POST", "/v1/messages/batch", {"messages": list(messages)})
        results: list[str | SidecarError] = []
        for item in answer["results"]:
            if "id" in item:
                results.append(str(item["id"]))
            else:
                error = item["error"]
                results.append(
                    sidecar_error(
                        int(item["status"]),
                        str(error["code"]),
                        str(error["message"]),
                        retry_after=_seconds(error.get("retry_after")),
                    )
                )
        return results

    async def request(
        self,
        to: str,
        type: str,
        payload: Any = None,
        *,
        timeout_ms: int = 30000,
        retry: RetryOption = None,
    ) -> dict[str, Any]:
        """Send a message and wait for its reply; the reply document.

        Raises :class:`mas.errors.RequestTimeoutError` when no reply comes within ``timeout_ms``.
        ``retry`` as for :meth:`send` (a request refused by a rate limit or an open circuit was
        not sent; a timed-out one is not tried again).
        """
        body = {"to": to, "type": type, "payload": payload, "timeout_ms": timeout_ms}
        http_timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000 + self.timeout)
        with self.tracer.span(f"request {type}", kind="client", attributes=_to(to)) as span:
            return await retrying(
                lambda: self._call(
                    "POST", "/v1/requests", body, headers=span.headers, http_timeout=http_timeout
                ),
                retry,
            )

    # Deliveries

    async def deliveries(self) -> AsyncGenerator[dict[str, Any], None]:
        """The delivery stream: each message event's data, until the sidecar ends the stream.

        The connection has no read timeout (keepalive comments arrive every 15 s and are
        skipped). Close the iterator (``contextlib.aclosing``) to unsubscribe.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=None)
        headers = {"Accept": "text/event-stream"}
        async with self._http().get(
            self._url("/v1/deliveries"), headers=headers, timeout=timeout
        ) as response:
            if response.status >= 400:
                raise await _error_from(response)
            async for event, data in _sse_events(response.content):
                if event == "message":
                    yield _parse_event_data(data)

    async def ack(self, delivery_id: str, handler_ms: float | None = None) -> None:
        """The delivery is done: remove it from the inbox. ``handler_ms``: how long its handler
        took, for the sidecar's ``mas_handler_seconds``."""
        with self.tracer.span("ack"):
            await self._acks.call((delivery_id, handler_ms))

    async def _ack_one(self, ack: tuple[str, float | None]) -> None:
        delivery_id, handler_ms = ack
        body = None if handler_ms is None else {"handler_ms": handler_ms}
        await self._call("POST", f"/v1/deliveries/{_seg(delivery_id)}/ack", body)

    async def _ack_coalesced(
        self, acks: list[tuple[str, float | None]]
    ) -> list[BaseException | None]:
        delivery_ids = [delivery_id for delivery_id, _ in acks]
        _, unknown = await self.ack_many(delivery_ids, [ms for _, ms in acks])
        if not unknown:
            return [None] * len(delivery_ids)
        # Not leased (answered already, expired, never delivered): the single ack says which.
        errors = dict(
            zip(
                unknown,
                await asyncio.gather(
                    *(self._ack_one((i, None)) for i in unknown), return_exceptions=True
                ),
                strict=True,
            )
        )
        return [errors.get(i) for i in delivery_ids]

    async def ack_many(
        self, delivery_ids: Sequence[str], handler_ms: Sequence[float | None] | None = None
    ) -> tuple[list[str], list[str]]:
        """Ack 1 to 1000 deliveries in one request (``POST /v1/deliveries/ack``), with how
        long the handler took on each (``handler_ms``, in the same order) if given;
        ``(acked, unknown)``: the ids removed from the inbox, and those not leased to the
        sidecar (already answered, lease expired, or never delivered)."""
        body: dict[str, Any] = {"ids": list(delivery_ids)}
        if handler_ms is not None and any(ms is not None for ms in handler_ms):
            body["handler_ms"] = list(handler_ms)
        answer = await self._call("POST", "/v1/deliveries/ack", body)
        return [str(i) for i in answer["acked"]], [str(i) for i in answer["unknown"]]

    async def nack(self, delivery_id: str, delay_ms: int = 0) -> None:
        """Give the delivery back, to be redelivered after ``delay_ms``."""
        await self._call("POST", f"/v1/deliveries/{_seg(delivery_id)}/nack", {"delay_ms": delay_ms})

    async def extend(self, delivery_id: str) -> None:
        """Start the delivery's lease again (for long-running work); a
        :class:`mas.errors.SidecarError` ``delivery_not_found`` when it is lost."""
        await self._call("POST", f"/v1/deliveries/{_seg(delivery_id)}/extend")

    async def extend_many(self, delivery_ids: Sequence[str]) -> tuple[list[str], list[str]]:
        """Start the leases of 1 to 1000 deliveries again in one request
        (``POST /v1/deliveries/extend``); ``(extended, unknown)``: the ids whose lease started
        again, and those not leased to the sidecar any more (answered, ran out, taken over)."""
        answer = await self._call("POST", "/v1/deliveries/extend", {"ids": list(delivery_ids)})
        return [str(i) for i in answer["extended"]], [str(i) for i in answer["unknown"]]

    async def reject(self, delivery_id: str, reason: str) -> None:
        """Dead-letter the delivery now, keeping ``reason`` with it."""
        await self._call("POST", f"/v1/deliveries/{_seg(delivery_id)}/reject", {"reason": reason})

    async def reply(self, delivery_id: str, type: str, payload: Any = None) -> str:
        """Reply to the delivery's sender (does not ack); the id of the reply message."""
        body = {"type": type, "payload": payload}
        with self.tracer.span(f"reply {type}", kind="producer") as span:
            path = f"/v1/deliveries/{_seg(delivery_id)}/reply"
            answer = await self._call("POST", path, body, headers=span.headers)
        return str(answer["id"])

    async def progress(self, delivery_id: str, text: str, data: Any = None) -> str:
        """Report progress on the request being handled; the id of the progress report."""
        body: dict[str, Any] = {"text": text}
        if data is not None:
            body["data"] = data
        with self.tracer.span("progress", kind="producer") as span:
            path = f"/v1/deliveries/{_seg(delivery_id)}/progress"
            answer = await self._call("POST", path, body, headers=span.headers)
        return str(answer["id"])

    # State

    async def get_state(self) -> tuple[dict[str, Any], int]:
        """The agent's state document and its revision (``{}`` and 0 before the first write)."""
        return _state_of(await self._call("GET", "/v1/state"))

    async def put_state(
        self, state: dict[str, Any], revision: int | None = None
    ) -> tuple[dict[str, Any], int]:
        """Replace the state; with ``revision``, only if it is still the current one.

        Raises :class:`mas.errors.RevisionConflictError` when ``revision`` is stale.
        """
        answer = await self._call("PUT", "/v1/state", {"state": state}, headers=_if_match(revision))
        return _state_of(answer)

    async def patch_state(
        self, changes: dict[str, Any], revision: int | None = None
    ) -> tuple[dict[str, Any], int]:
        """Merge ``changes`` into the state (JSON merge patch: ``None`` deletes a key)."""
        answer = await self._call(
            "PATCH", "/v1/state", {"state": changes}, headers=_if_match(revision)
        )
        return _state_of(answer)

    async def is_completed(self, message_id: str) -> bool:
        """Whether the agent recorded ``message_id`` as handled (:meth:`record_completed`)."""
        answer = await self._call("GET", f"/v1/state/completed/{_seg(message_id)}")
        return bool(answer["completed"])

    async def record_completed(self, message_id: str, ttl_ms: int) -> None:
        """Record that the agent handled ``message_id``, for ``ttl_ms`` (idempotent handling)."""
        await self._call("PUT", f"/v1/state/completed/{_seg(message_id)}", {"ttl_ms": ttl_ms})

    # Discovery and self

    async def discover(self, capabilities: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Live agents having every one of ``capabilities`` (all live agents when empty)."""
        params = [("capability", capability) for capability in capabilities]
        answer = await self._call("GET", "/v1/agents", params=params)
        return list(answer["agents"])

    async def self_info(self) -> dict[str, Any]:
        """This agent's id, namespace, replica, capabilities and metadata."""
        return await self._call("GET", "/v1/self")

    async def set_metadata(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Publish this agent's metadata in discovery; the updated self document."""
        return await self._call("PUT", "/v1/self", {"metadata": metadata})

    # Dead letters

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """This agent's dead letters, oldest first."""
        answer = await self._call("GET", "/v1/dead-letters", params=[("limit", str(limit))])
        return list(answer["dead_letters"])

    async def replay_dead_letter(self, dead_letter_id: str) -> str:
        """Put a dead letter's message back into the inbox; the id of the requeued message."""
        answer = await self._call("POST", f"/v1/dead-letters/{_seg(dead_letter_id)}/replay")
        return str(answer["id"])

    async def delete_dead_letter(self, dead_letter_id: str) -> None:
        """Drop a dead letter."""
        await self._call("DELETE", f"/v1/dead-letters/{_seg(dead_letter_id)}")

    # Plumbing

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._default_timeout,
                # Loopback only, and a request() may hold its connection for minutes: no pool cap.
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._session

    def _url(self, path: str) -> str:
        return self.base_url + path

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        params: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        http_timeout: aiohttp.ClientTimeout | None = None,
    ) -> dict[str, Any]:
        """One request; the JSON object answered (``{}`` for 204), or the error raised."""
        all_headers = dict(headers or {})
        data = None
        if body is not None:
            data = orjson.dumps(body)
            all_headers.update(_JSON)
        async with self._http().request(
            method,
            self._url(path),
            data=data,
            params=params,
            headers=all_headers,
            timeout=http_timeout or self._default_timeout,
        ) as response:
            if response.status >= 400:
                raise await _error_from(response)
            if response.status == 204:
                return {}
            raw = await response.read()
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise SidecarError(
                response.status,
                ErrorCode.INTERNAL_ERROR,
                f"{method} {path} answered with a body that is not a JSON object",
            )
        return answer


def _to(target: str) -> dict[str, str]:
    return {"messaging.system": "mas", "messaging.destination.name": target}


def _seg(value: str) -> str:
    """``value`` escaped as one URL path segment."""
    return quote(value, safe="")


def _if_match(revision: int | None) -> dict[str, str]:
    return {} if revision is None else {"If-Match": str(revision)}


def _state_of(answer: dict[str, Any]) -> tuple[dict[str, Any], int]:
    return dict(answer["state"]), int(answer["revision"])


def _seconds(value: object) -> float | None:
    """A ``Retry-After`` in seconds (HTTP-dates, which the sidecar never sends, count as none)."""
    try:
        seconds = float(str(value))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


async def _error_from(response: aiohttp.ClientResponse) -> SidecarError:
    """The exception for an error answer, from its error document when it has one."""
    raw = await response.read()
    try:
        error = orjson.loads(raw)["error"]
        return sidecar_error(
            response.status, str(error["code"]), str(error["message"]),
            retry_after=_seconds(response.headers.get("Retry-After")),
        )  # fmt: skip
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = raw[:200].decode("utf-8", "replace")
        return SidecarError(
            response.status, ErrorCode.INTERNAL_ERROR, text or response.reason or ""
        )


async def _sse_events(stream: aiohttp.StreamReader) -> AsyncIterator[tuple[str, str]]:
    """``(event type, data)`` of each server-sent event; comments and ids are skipped.

    Lines are split here rather than with ``readline`` so that an event carrying a large payload
    is not limited by the reader's buffer size.
    """
    buffer = b""
    event, data = "", list[str]()
    async for chunk in stream.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw_line in lines:
            line = raw_line.removesuffix(b"\r").decode("utf-8", "replace")
            if not line:
                if data:
                    yield event or "message", "\n".join(data)
                event, data = "", list[str]()
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


def _parse_event_data(data: str) -> dict[str, Any]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise SidecarError(
            200, ErrorCode.INTERNAL_ERROR, "a delivery event's data is not a JSON object"
        )
    return document
