"""The sidecar's HTTP bounds, played by real clients over raw sockets: slow heads and bodies are
cut off, idle connections closed, delivery streams and connections capped — and what stays
under a bound keeps working. Limits are counted (connections and streams held, answers
refused), never timed."""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
from typing import Any

import aiohttp
import orjson
from api import Api, value_of
from conftest import Sidecars
from waiting import GUARD_SECONDS, eventually

from mas_cli.local.processes import SidecarProcess
from mas_core.sidecar_token import authorization

HEAD = b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\n\r\n"


def authorized(sidecar: SidecarProcess) -> bytes:
    """The header line that presents ``sidecar``'s token."""
    return f"Authorization: {authorization(sidecar.token)}\r\n".encode()


class RawClient:
    """One TCP connection to a sidecar, written and read as a slow or idle client would."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD_SECONDS)
        self.received = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:  # the sidecar closed the connection (broken pipe, reset)
            self.closed = True

    def take_available(self) -> bool:
        """Read what has arrived, without waiting; True once the sidecar closed the
        connection."""
        while not self.closed and select.select([self.sock], [], [], 0)[0]:
            self._recv()
        return self.closed

    def read_to_end(self) -> bytes:
        """Everything until the sidecar closes the connection."""
        while not self.closed:
            self._recv()
        return self.received

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next whole answer on a kept-alive connection: status, headers, body."""
        while b"\r\n\r\n" not in self.received and not self.closed:
            self._recv()
        head, _, rest = self.received.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {
            name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])
        }
        length = int(headers["content-length"])
        while len(rest) < length and not self.closed:
            self._recv()
            rest = self.received.partition(b"\r\n\r\n")[2]
        self.received = rest[length:]
        return int(lines[0].split()[1]), headers, rest[:length]

    def close(self) -> None:
        self.sock.close()

    def _recv(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionError:
            chunk = b""
        self.closed = not chunk
        self.received += chunk


async def subscribe(api: Api) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    """A delivery stream read in the background (its events put on the queue), once open."""
    subscribed = asyncio.Event()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read() -> None:
        async with contextlib.aclosing(api.deliveries(subscribed)) as stream:
            async for event in stream:
                await events.put(event)

    task = asyncio.create_task(read())
    await eventually(subscribed.is_set, "a delivery stream open")
    return task, events


async def test_a_client_trickling_its_request_head_is_disconnected_without_an_answer(
    sidecars: Sidecars,
) -> None:
    sidecar = sidecars.start("default/alice", MAS_IDLE_TIMEOUT_MS="300")
    client = RawClient(sidecar.port)
    client.send(b"GET /healthz HTTP/1.1\r\nHost: sidecar\r\nX-Slow: ")

    def trickle() -> bool:  # one more byte of the header at each poll, never its end
        client.send(b"a")
        return client.take_available()

    await eventually(trickle, "the slow client disconnected")

    assert client.received == b""
    client.close()


async def test_a_client_trickling_its_body_gets_408_and_is_disconnected(
    sidecars: Sidecars,
) -> None:
    sidecars.start("default/bob")
    sidecar = sidecars.start("default/alice", MAS_BODY_TIMEOUT_MS="300")
    client = RawClient(sidecar.port)
    client.send(
        b"POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        + authorized(sidecar)
        + b'Content-Length: 100000\r\n\r\n{"to": "bob", "type": "x", "payload": "'
    )

    def trickle() -> bool:  # one more byte of the body at each poll until the sidecar answers
        if not client.received:
            client.send(b"a")
        return client.take_available()

    await eventually(trickle, "the slow client disconnected")

    head, _, body = client.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(body)["error"]["code"] == "body_timeout"
    client.close()


async def test_idle_keep_alive_connections_are_closed_but_a_delivery_stream_is_not_idle(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    bob = sidecars.start("default/bob", MAS_IDLE_TIMEOUT_MS="300")
    alice = Api(http, sidecars.start("default/alice"))
    stream, events = await subscribe(Api(http, bob))
    client = RawClient(bob.port)
    client.send(HEAD)
    status, headers, _ = client.answer()

    await eventually(client.take_available, "the idle connection closed")

    assert status == 200 and headers.get("connection") != "close"
    await alice.send("bob", "after-the-idle-timeout")
    delivery = await asyncio.wait_for(events.get(), GUARD_SECONDS)
    assert delivery["type"] == "after-the-idle-timeout"
    stream.cancel()
    client.close()


async def test_delivery_streams_over_the_cap_get_429_and_those_under_it_keep_working(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    bob = Api(http, sidecars.start("default/bob", MAS_MAX_SUBSCRIBERS="2"))
    alice = Api(http, sidecars.start("default/alice"))
    first, first_events = await subscribe(bob)
    second, second_events = await subscribe(bob)

    refusals = [await bob.call("GET", "/v1/deliveries") for _ in range(20)]
    async with http.get(bob.base_url + "/v1/deliveries", headers=bob.headers) as refused:
        retry_after = refused.headers.get("Retry-After")
    held = await bob.metric("mas_subscribers")
    for n in range(4):
        await alice.send("bob", "still-delivered", {"n": n})
    received: list[int] = []

    async def all_delivered() -> bool:
        for events in (first_events, second_events):
            while not events.empty():
                event = events.get_nowait()
                assert await bob.answer(event["id"], "ack") == 204
                received.append(event["payload"]["n"])
        return len(received) == 4

    await eventually(all_delivered, "every message delivered to the open streams")

    for status, body in refusals:
        assert (status, body["error"]["code"]) == (429, "too_many_subscribers")
    assert retry_after == "1"
    assert held == 2
    assert sorted(received) == [0, 1, 2, 3]
    first.cancel()  # its client goes away: the place is free again

    async def one_held() -> bool:
        return await bob.metric("mas_subscribers") == 1

    await eventually(one_held, "the place of the closed stream freed")
    third, _ = await subscribe(bob)
    assert await bob.metric("mas_subscribers") == 2
    for task in (second, third):
        task.cancel()


async def test_connections_over_the_cap_are_answered_503_and_closed_the_others_served(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    sidecar = sidecars.start(
        "default/alice", MAS_MAX_CONNECTIONS="8", MAS_MAX_SUBSCRIBERS="2",
        MAS_IDLE_TIMEOUT_MS="600000",
    )  # fmt: skip
    alice = Api(http, sidecar)

    async def only_this_one_open() -> bool:  # the start-up readiness checks have gone
        return await alice.metric("mas_http_connections") == 1

    await eventually(only_this_one_open, "no other connection open")
    held: list[RawClient] = []
    refused: list[tuple[int, dict[str, str], bytes]] = []
    while not refused:  # open and use connections, keeping them, until one is refused
        client = RawClient(sidecar.port)
        client.send(HEAD)
        answer = client.answer()
        if answer[0] == 200:
            held.append(client)
        else:
            refused.append(answer)
            client.close()
    for _ in range(20):
        extra = RawClient(sidecar.port)
        extra.send(HEAD)
        refused.append(extra.answer())
        assert extra.read_to_end() == b""  # and then closed
        extra.close()
    still_served = []
    for client in held:
        client.send(HEAD)
        still_served.append(client.answer()[0])
    held.pop().close()

    def served_again() -> tuple[RawClient, str] | None:
        client = RawClient(sidecar.port)
        client.send(b"GET /metrics HTTP/1.1\r\nHost: sidecar\r\n" + authorized(sidecar) + b"\r\n")
        status, _, body = client.answer()
        if status == 200:
            return client, body.decode()
        client.close()
        return None

    newcomer, metrics = await eventually(served_again, "a connection served once one closed")

    assert len(held) == 7  # and the one closed: 8 open at once, the cap
    for status, headers, body in refused:
        assert (status, headers["connection"], headers["retry-after"]) == (503, "close", "1")
        assert orjson.loads(body)["error"]["code"] == "too_many_connections"
    assert still_served == [200] * 8
    assert value_of(metrics, "mas_http_connections") == 8  # the 7 held and the newcomer
    assert value_of(metrics, "mas_http_connections_refused_total") >= 21
    for client in [*held, newcomer]:
        client.close()
