"""A thin raw-HTTP client for tests of the sidecar API: statuses and bodies exactly as sent.

(The SDK's client turns errors into exceptions; these tests want to see the wire.) Every request
carries the sidecar's API token, as its agent's would, unless the test says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from waiting import GUARD_SECONDS, eventually

from mas_cli.local.processes import SidecarProcess
from mas_core.sidecar_token import authorization


def value_of(metrics: str, name: str) -> float:
    """The value of an unlabelled metric in the text exposition format."""
    [value] = [line.split()[1] for line in metrics.splitlines() if line.startswith(name + " ")]
    return float(value)


class Api:
    """Raw calls to one sidecar, with its agent's token (or ``token``; ``""``: none)."""

    def __init__(
        self, session: aiohttp.ClientSession, sidecar: SidecarProcess, token: str | None = None
    ) -> None:
        self.session = session
        self.sidecar = sidecar
        self.base_url = sidecar.url
        self.token = sidecar.token if token is None else token

    @property
    def headers(self) -> dict[str, str]:
        """What every request carries: the token."""
        return {"Authorization": authorization(self.token)} if self.token else {}

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """(status, parsed JSON body or None)."""
        kwargs["headers"] = {**self.headers, **kwargs.get("headers", {})}
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            kwargs["headers"]["Content-Type"] = "application/json"
        async with self.session.request(method, self.base_url + path, **kwargs) as answer:
            raw = await answer.read()
            return answer.status, (orjson.loads(raw) if raw else None)

    async def wait_for_revision(self, revision: str) -> None:
        """Until the sidecar enforces the policy ``revision``."""

        async def enforced() -> bool:
            _, me = await self.call("GET", "/v1/self")
            return bool(me["policy"]["revision"] == revision)

        await eventually(enforced, f"policy revision {revision} in force")

    async def wait_for_policy_error(self) -> dict[str, Any]:
        """``GET /v1/self`` once the sidecar reports a policy it refused."""

        async def refused() -> dict[str, Any] | None:
            _, me = await self.call("GET", "/v1/self")
            return me if me["policy"]["error"] else None

        me: dict[str, Any] = await eventually(refused, "a policy refused")
        return me

    async def dead_letters(self) -> list[dict[str, Any]]:
        """The agent's dead letters (``GET /v1/dead-letters``)."""
        status, listing = await self.call("GET", "/v1/dead-letters")
        assert status == 200, listing
        return list(listing["dead_letters"])

    async def metric(self, name: str) -> float:
        """The current value of an unlabelled metric of the sidecar."""
        async with self.session.get(self.base_url + "/metrics", headers=self.headers) as answer:
            assert answer.status == 200
            return value_of(await answer.text(), name)

    async def sender_streams(self) -> int:
        """How many senders' streams the sidecar reads (its ``mas_sender_streams`` metric)."""
        return int(await self.metric("mas_sender_streams"))

    async def send(self, to: str, type: str, payload: Any = None, **extra: Any) -> str:
        status, body = await self.call(
            "POST", "/v1/messages", {"to": to, "type": type, "payload": payload, **extra}
        )
        assert status == 202, body
        return str(body["id"])

    async def answer(self, delivery_id: str, verb: str, body: Any = None) -> int:
        status, _ = await self.call("POST", f"/v1/deliveries/{delivery_id}/{verb}", body)
        return status

    async def deliveries(
        self, subscribed: asyncio.Event | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Delivery events, as long as the stream stays open; ``subscribed`` is set once the
        sidecar answered (it is then reading the inbox for this stream).

        A test that stops reading before the sidecar stops closes the stream itself
        (``contextlib.aclosing``): left to the garbage collector, the connection closes a moment
        later, and the sidecar may hand the next delivery to it, where it waits out its lease.
        """
        async with self.session.get(
            self.base_url + "/v1/deliveries",
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=None),
        ) as answer:
            assert answer.status == 200
            if subscribed is not None:
                subscribed.set()
            async for line in answer.content:
                if line.startswith(b"data: "):
                    yield orjson.loads(line[6:])

    async def collect(
        self, count: int, timeout: float = GUARD_SECONDS, ack: bool = True
    ) -> list[dict[str, Any]]:
        """The next ``count`` deliveries (acked unless ``ack`` is False); ``timeout`` only
        guards against a hang."""
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout), contextlib.aclosing(self.deliveries()) as events:
            async for event in events:
                received.append(event)
                if ack:
                    assert await self.answer(event["id"], "ack") == 204
                if len(received) == count:
                    break
        return received
