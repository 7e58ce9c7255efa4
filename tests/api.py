"""A thin raw-HTTP client for tests of the sidecar API: statuses and bodies exactly as sent.

(The SDK's client turns errors into exceptions; these tests want to see the wire.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson


class Api:
    """Raw calls to one sidecar."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url

    async def call(
        self, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> tuple[int, Any]:
        """(status, parsed JSON body or None)."""
        if body is not None:
            kwargs["data"] = orjson.dumps(body)
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        async with self.session.request(method, self.base_url + path, **kwargs) as answer:
            raw = await answer.read()
            return answer.status, (orjson.loads(raw) if raw else None)

    async def send(self, to: str, type: str, payload: Any = None, **extra: Any) -> str:
        status, body = await self.call(
            "POST", "/v1/messages", {"to": to, "type": type, "payload": payload, **extra}
        )
        assert status == 202, body
        return str(body["id"])

    async def answer(self, delivery_id: str, verb: str, body: Any = None) -> int:
        status, _ = await self.call("POST", f"/v1/deliveries/{delivery_id}/{verb}", body)
        return status

    async def deliveries(self) -> AsyncIterator[dict[str, Any]]:
        """Delivery events, as long as the stream stays open."""
        async with self.session.get(
            self.base_url + "/v1/deliveries", timeout=aiohttp.ClientTimeout(total=None)
        ) as answer:
            assert answer.status == 200
            async for line in answer.content:
                if line.startswith(b"data: "):
                    yield orjson.loads(line[6:])

    async def collect(
        self, count: int, timeout: float = 10.0, ack: bool = True
    ) -> list[dict[str, Any]]:
        """The next ``count`` deliveries (acked unless ``ack`` is False)."""
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            async for event in self.deliveries():
                received.append(event)
                if ack:
                    assert await self.answer(event["id"], "ack") == 204
                if len(received) == count:
                    break
        return received
