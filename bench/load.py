"""The agents' side of the benchmark: load through the sidecars with the SDK's HTTP client.

* :func:`one_way`: each sender sends its messages with up to ``window`` ``SidecarClient.send``
  calls in flight (the SDK coalesces concurrent sends into shared batch requests, and the
  sidecar writes concurrent messages in shared Redis round trips); the sink agent reads its
  delivery stream and acks every delivery (``SidecarClient.ack``, coalesced alike). With
  ``coalesce=False`` every send and ack is its own HTTP request (what a plain-HTTP agent that
  does not batch gets). Timed from the first send to the last receipt, after a warm-up message
  per sender.
  With ``batch``, each sender posts ``batch`` messages per ``POST /v1/messages/batch``
  (``window`` batches in flight) and the sink acks everything delivered so far with one
  ``POST /v1/deliveries/ack`` at a time.
* :func:`round_trip`: sequential ``POST /v1/requests``; the sink agent replies to each delivery
  and acks it. Latencies per request, after a short warm-up.

Each function takes the sidecar processes themselves
(:class:`mas_cli.local.processes.SidecarProcess`): a client talks to a sidecar with that sidecar's
URL and API token, as its agent would.

Used by :mod:`bench.cli`; the payload is :func:`payload` (about 200 bytes of JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from bench.workload import payload
from mas.client import SidecarClient
from mas_cli.local.processes import SidecarProcess

PAYLOAD_BYTES = len(orjson.dumps(payload(1000)))
MAX_ACK_BATCH = 1000  # what POST /v1/deliveries/ack takes at most


@dataclass
class Sink:
    """A receiving agent: counts deliveries of one type, acks each, optionally replies first."""

    client: SidecarClient
    reply: bool = False
    expected: int = 0
    received: int = 0
    last_at: float = 0.0

    batch_ack: bool = False

    def __post_init__(self) -> None:
        self.done = asyncio.Event()
        self._acks: set[asyncio.Task[None]] = set()
        self._unacked: list[str] = []
        self._acker: asyncio.Task[None] | None = None

    def expect(self, count: int) -> None:
        self.expected, self.received, self.done = count, 0, asyncio.Event()

    async def run(self) -> None:
        async with contextlib.aclosing(self.client.deliveries()) as stream:
            async for delivery in stream:
                if self.reply:
                    await self.client.reply(delivery["id"], "bench.pong", delivery["payload"])
                if self.batch_ack:
                    self._unacked.append(delivery["id"])
                    if self._acker is None or self._acker.done():
                        self._acker = asyncio.create_task(self._ack_batches())
                else:
                    task = asyncio.create_task(self.client.ack(delivery["id"]))
                    self._acks.add(task)
                    task.add_done_callback(self._acks.discard)
                self.received += 1
                self.last_at = time.perf_counter()
                if self.received >= self.expected:
                    self.done.set()

    async def _ack_batches(self) -> None:
        """One batch ack in flight at a time, of everything delivered since the last one."""
        while self._unacked:
            ids, self._unacked = self._unacked[:MAX_ACK_BATCH], self._unacked[MAX_ACK_BATCH:]
            await self.client.ack_many(ids)

    async def drain(self) -> None:
        """Wait for the acks still in flight."""
        while self._acks or (self._acker is not None and not self._acker.done()):
            pending = [*self._acks, *([self._acker] if self._acker else [])]
            await asyncio.gather(*pending, return_exceptions=True)


async def _send_all(client: SidecarClient, target: str, count: int, window: int) -> None:
    counter = iter(range(count))

    async def lane() -> None:
        for seq in counter:
            await client.send(target, "bench.data", payload(seq))

    await asyncio.gather(*(lane() for _ in range(min(window, count))))


async def _send_batches(
    client: SidecarClient, target: str, count: int, window: int, batch: int
) -> None:
    starts = iter(range(0, count, batch))

    async def lane() -> None:
        for start in starts:
            messages = [
                {"to": target, "type": "bench.data", "payload": payload(seq)}
                for seq in range(start, min(start + batch, count))
            ]
            results = await client.send_many(messages)
            failed = [r for r in results if not isinstance(r, str)]
            if failed:
                raise failed[0]

    await asyncio.gather(*(lane() for _ in range(min(window, -(-count // batch)))))


async def one_way(
    senders_of: Sequence[SidecarProcess],
    sink_of: SidecarProcess,
    per_sender: int,
    window: int,
    *,
    batch: int = 0,
    coalesce: bool = True,
) -> float:
    """Messages per second from the agents of ``senders_of`` to the agent of ``sink_of``; with
    ``batch``, the senders send ``batch`` messages per request and the sink acks in batches."""
    sink_id = sink_of.agent_id
    senders = [sidecar.client(coalesce=coalesce) for sidecar in senders_of]
    sink = Sink(sink_of.client(coalesce=coalesce), batch_ack=batch > 0)
    reader = asyncio.create_task(sink.run())
    try:
        sink.expect(len(senders))  # warm-up: one message per sender, and the subscription is up
        await asyncio.gather(
            *(client.send(sink_id, "bench.warmup", payload(0)) for client in senders)
        )
        await asyncio.wait_for(sink.done.wait(), 30)
        await sink.drain()
        sink.expect(per_sender * len(senders))
        started = time.perf_counter()
        if batch:
            await asyncio.gather(
                *(_send_batches(c, sink_id, per_sender, window, batch) for c in senders)
            )
        else:
            await asyncio.gather(*(_send_all(c, sink_id, per_sender, window) for c in senders))
        await asyncio.wait_for(sink.done.wait(), 300)
        elapsed = sink.last_at - started
        await sink.drain()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        for client in [*senders, sink.client]:
            await client.aclose()
    return per_sender * len(senders) / elapsed


async def many_pairs(
    pairs: Sequence[tuple[SidecarProcess, SidecarProcess]], per_pair: int, window: int
) -> float:
    """Aggregate messages per second of ``(sender, sink)`` sidecar pairs at once."""
    sinks = [Sink(sink.client()) for _, sink in pairs]
    senders = [sender.client() for sender, _ in pairs]
    targets = [sink.agent_id for _, sink in pairs]
    readers = [asyncio.create_task(sink.run()) for sink in sinks]
    try:
        for sink in sinks:
            sink.expect(1)
        await asyncio.gather(
            *(c.send(t, "bench.warmup", payload(0)) for c, t in zip(senders, targets, strict=True))
        )
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in sinks)), 30)
        for sink in sinks:
            await sink.drain()
            sink.expect(per_pair)
        started = time.perf_counter()
        await asyncio.gather(
            *(_send_all(c, t, per_pair, window) for c, t in zip(senders, targets, strict=True))
        )
        await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in sinks)), 300)
        elapsed = max(sink.last_at for sink in sinks) - started
        for sink in sinks:
            await sink.drain()
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for client in [*senders, *(sink.client for sink in sinks)]:
            await client.aclose()
    return per_pair * len(pairs) / elapsed


async def round_trip(sender: SidecarProcess, sink_of: SidecarProcess, requests: int) -> list[float]:
    """Seconds of each of ``requests`` sequential request/reply round trips."""
    sink_id = sink_of.agent_id
    client = sender.client()
    sink = Sink(sink_of.client(), reply=True, expected=1 << 62)
    reader = asyncio.create_task(sink.run())
    latencies: list[float] = []
    try:
        for seq in range(max(20, requests // 20)):  # warm-up
            await client.request(sink_id, "bench.ping", payload(seq), timeout_ms=30_000)
        for seq in range(requests):
            started = time.perf_counter()
            await client.request(sink_id, "bench.ping", payload(seq), timeout_ms=30_000)
            latencies.append(time.perf_counter() - started)
        await sink.drain()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await client.aclose()
        await sink.client.aclose()
    return latencies
