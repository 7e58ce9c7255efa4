"""The stage timings on ``/metrics`` (``mas_stage_seconds{stage}``): one observation per message
in each stage it passes, on the side that does it, through real sidecars and a real Redis.

Only counts are checked, never a duration (speed is measured in ``bench/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp
from api import Api
from conftest import Sidecars

STAGES = ("http_in", "checks", "redis_write", "redis_read", "verify", "delivery", "reply_wait")
# What the benchmark reads (bench/natural_agents.py): ``<summary>_sum{...}`` and ``_count{...}``.
_LINE = re.compile(r'^mas_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)$')


async def stage_counts(api: Api) -> dict[str, int]:
    """``_count`` of every stage of one sidecar (each stage is listed from the start)."""
    async with api.session.get(api.base_url + "/metrics", headers=api.headers) as answer:
        assert answer.status == 200
        text = await answer.text()
    found: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            suffix, stage, value = match.groups()
            found.setdefault(suffix, {})[stage] = float(value)
    assert set(found["count"]) == set(found["sum"]) == set(STAGES), found
    return {stage: int(count) for stage, count in found["count"].items()}


def grew(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """The stages whose count grew, and by how much."""
    return {stage: after[stage] - before[stage] for stage in STAGES if after[stage] > before[stage]}


async def test_each_stage_counts_once_per_message_on_the_side_that_does_it(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    start = {"alice": await stage_counts(alice), "bob": await stage_counts(bob)}

    # One message: alice takes it in, checks it and writes it; bob reads, verifies, delivers.
    await alice.send("bob", "greeting", {"text": "hi"})
    await bob.collect(1)
    sent = {"alice": await stage_counts(alice), "bob": await stage_counts(bob)}

    assert grew(sent["alice"], start["alice"]) == {"http_in": 1, "checks": 1, "redis_write": 1}
    assert grew(sent["bob"], start["bob"]) == {"redis_read": 1, "verify": 1, "delivery": 1}

    # One request and its reply: bob's reply goes through bob's HTTP in, checks and write;
    # alice waits for it and verifies it.
    async def answer_one() -> None:
        async with contextlib.aclosing(bob.deliveries()) as deliveries:
            async for delivery in deliveries:
                status = await bob.answer(delivery["id"], "reply", {"type": "sum", "payload": 6})
                assert status == 202
                assert await bob.answer(delivery["id"], "ack") == 204
                return

    responder = asyncio.create_task(answer_one())
    status, reply = await alice.call(
        "POST", "/v1/requests", {"to": "bob", "type": "add", "payload": [1, 2, 3]}
    )
    await responder
    assert (status, reply["payload"]) == (200, 6)
    asked = {"alice": await stage_counts(alice), "bob": await stage_counts(bob)}

    assert grew(asked["alice"], sent["alice"]) == {
        "http_in": 1, "checks": 1, "redis_write": 1, "verify": 1, "reply_wait": 1,
    }  # fmt: skip
    assert grew(asked["bob"], sent["bob"]) == {
        "http_in": 1, "checks": 1, "redis_write": 1, "redis_read": 1, "verify": 1, "delivery": 1,
    }  # fmt: skip


async def test_a_batch_counts_each_of_its_messages(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    before = {"alice": await stage_counts(alice), "bob": await stage_counts(bob)}

    messages = [{"to": "bob", "type": "item", "payload": n} for n in range(3)]
    status, body = await alice.call("POST", "/v1/messages/batch", {"messages": messages})
    assert status == 200 and [r["status"] for r in body["results"]] == [202] * 3
    await bob.collect(3)

    assert grew(await stage_counts(alice), before["alice"]) == {
        "http_in": 3, "checks": 3, "redis_write": 3,
    }  # fmt: skip
    assert grew(await stage_counts(bob), before["bob"]) == {
        "redis_read": 3, "verify": 3, "delivery": 3,
    }  # fmt: skip
