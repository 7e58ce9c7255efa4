"""The sidecar's Redis client: hiredis packs the commands sent to one server, and a value of
every type the sidecar sends reads back as redis-py's own packing would store it; a command
leaves from its sender's task (no task of its own per write), and a write the server does not
take within the socket timeout still fails and drops the connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.exceptions
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from tasks import counting_tasks

from mas_core.redis_clients import NO_CLIENT_SETINFO
from mas_sidecar.redis_client import HiredisConnection, connect


@pytest.mark.parametrize(
    ("url", "connection_class"),
    [
        ("redis://127.0.0.1:6379/0", HiredisConnection),
        ("rediss://127.0.0.1:6379/0", SSLConnection),
        ("unix:///run/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_plain_tcp_urls_get_hiredis_packing_and_others_keep_their_connections(
    url: str, connection_class: type
) -> None:
    assert connect(url).connection_pool.connection_class is connection_class


async def test_values_of_every_type_round_trip_through_hiredis_packing(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        await client.execute_command("HSET", "t:h", "str", "é", b"bytes", b"\x00\xff", "int", 7)
        await client.execute_command("HSET", "t:h", "float", 0.1, "big", 2**70, "neg", -3)
        await client.execute_command("CONFIG GET", "maxmemory")  # a two-word command name

        stored = await client.hgetall("t:h")
    finally:
        await client.aclose()
    assert stored == {
        b"str": "é".encode(), b"bytes": b"\x00\xff", b"int": b"7", b"float": b"0.1",
        b"big": str(2**70).encode(), b"neg": b"-3",
    }  # fmt: skip


async def test_commands_and_pipelines_leave_without_a_task_of_their_own(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        await client.ping()  # connected
        with counting_tasks() as tasks:
            for n in range(20):
                await client.set("t:lone", n)
                async with client.pipeline(transaction=False) as pipe:
                    pipe.incr("t:count")
                    pipe.get("t:lone")
                    await pipe.execute()
                await client.xread({"t:none": "0-0"}, count=1, block=1)
    finally:
        await client.aclose()
    assert len(tasks) == 0, tasks.created


@pytest.fixture
async def deaf_server() -> AsyncIterator[int]:
    """A port on loopback whose server accepts connections and never reads from them."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.transport.pause_reading()
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_write_the_server_does_not_take_times_out_and_drops_the_connection(
    deaf_server: int,
) -> None:
    connection = HiredisConnection(
        host="127.0.0.1", port=deaf_server, socket_timeout=0.2, protocol=2, **NO_CLIENT_SETINFO
    )
    await connection.connect()
    # more than the socket buffers hold: the write waits for a reader that never comes
    command = connection.pack_command("SET", "t:big", b"x" * (32 << 20))
    with pytest.raises(redis.exceptions.TimeoutError, match="writing"):
        await connection.send_packed_command(command)
    assert not connection.is_connected
