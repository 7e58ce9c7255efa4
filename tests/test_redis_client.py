"""The sidecar's Redis client: hiredis packs the commands sent to one server, and a value of
every type the sidecar sends reads back as redis-py's own packing would store it."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

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
