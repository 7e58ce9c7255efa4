"""What the SDK's errors carry and its opt-in retries: rate limits and open circuits.

Real sidecars under published gateway policies: a token bucket refuses sends with a
``Retry-After``, and a circuit breaker that opens while the target is not live. The SDK's
exceptions carry that ``retry_after``; ``retry=`` sends again after it, and only then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import redis
from api import Api
from policies import publish
from waiting import eventually

from mas import Agent, AgentMessage, CircuitOpenError, RateLimitedError, Retry
from mas_cli.local.processes import SidecarProcess
from mas_control.provision import register_agent

if TYPE_CHECKING:
    from conftest import Sidecars

ALLOW = [{"name": "all", "action": "allow"}]


class Inbox(Agent):
    """Keeps every ``note`` it gets."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.notes: list[AgentMessage] = []

    @Agent.on("note")
    async def note(self, message: AgentMessage) -> None:
        self.notes.append(message)


async def sender_under(
    sidecars: Sidecars, http: aiohttp.ClientSession, revision: str
) -> SidecarProcess:
    """Alice's sidecar, once it enforces the policy ``revision``."""
    alice = sidecars.start("default/alice")
    await Api(http, alice).wait_for_revision(revision)
    return alice


def agent_of(sidecar: SidecarProcess) -> Agent:
    return Agent(sidecar_url=sidecar.url, sidecar_token=sidecar.token)


async def test_a_rate_limited_send_raises_with_the_wait_the_sidecar_asked_for(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis,
    started: Callable[[Agent[Any]], Any],
) -> None:  # fmt: skip
    document = publish(
        redis_client, rules=ALLOW, rateLimits=[{"name": "slow", "rate": 0.5, "burst": 1}]
    )
    sidecars.start("default/bob")
    alice = await started(agent_of(await sender_under(sidecars, http, document.revision)))
    await alice.send("bob", "note")

    with pytest.raises(RateLimitedError) as caught:
        await alice.send("bob", "note")

    assert caught.value.retry_after is not None
    assert 1 <= caught.value.retry_after <= 2  # a token every 2 s, rounded up to whole seconds


async def test_sends_refused_together_in_one_batch_each_carry_retry_after(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis,
    started: Callable[[Agent[Any]], Any],
) -> None:  # fmt: skip
    document = publish(
        redis_client, rules=ALLOW, rateLimits=[{"name": "slow", "rate": 0.5, "burst": 1}]
    )
    sidecars.start("default/bob")
    alice = await started(agent_of(await sender_under(sidecars, http, document.revision)))

    # Concurrent sends share batch requests (mas.coalesce): their refusals come per item.
    results = await asyncio.gather(
        *(alice.send("bob", "note") for _ in range(8)), return_exceptions=True
    )

    refused = [result for result in results if isinstance(result, RateLimitedError)]
    assert len(refused) == 7
    assert all(error.retry_after is not None and error.retry_after >= 1 for error in refused)


async def test_send_with_retry_gets_through_after_the_rate_limit_refills(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis,
    started: Callable[[Agent[Any]], Any],
) -> None:  # fmt: skip
    document = publish(
        redis_client, rules=ALLOW, rateLimits=[{"name": "slow", "rate": 0.5, "burst": 1}]
    )
    bob = await started(Inbox(sidecars.start("default/bob")))
    alice = await started(agent_of(await sender_under(sidecars, http, document.revision)))

    first = await alice.send("bob", "note")
    second = await alice.send("bob", "note", retry=3)

    await eventually(lambda: len(bob.notes) == 2, "both notes delivered")
    assert {note.id for note in bob.notes} == {first, second}


async def test_a_send_to_a_target_that_is_not_live_raises_circuit_open_with_retry_after(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis,
    started: Callable[[Agent[Any]], Any],
) -> None:  # fmt: skip
    document = publish(
        redis_client, rules=ALLOW, circuitBreaker={"whenNotLive": True, "openSeconds": 1}
    )
    register_agent(redis_client, "default/bob", [], [])  # registered, no sidecar: not live
    alice = await started(agent_of(await sender_under(sidecars, http, document.revision)))

    with pytest.raises(CircuitOpenError) as caught:
        await alice.send("bob", "note")
    with pytest.raises(CircuitOpenError):
        await alice.request("bob", "note", timeout=5, retry=Retry(attempts=1, max_wait=0.1))

    assert (caught.value.status, caught.value.code) == (503, "circuit_open")
    assert caught.value.retry_after == 1


async def test_send_with_retry_gets_through_once_the_target_is_live_again(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis,
    started: Callable[[Agent[Any]], Any],
) -> None:  # fmt: skip
    document = publish(
        redis_client, rules=ALLOW, circuitBreaker={"whenNotLive": True, "openSeconds": 1}
    )
    register_agent(redis_client, "default/bob", [], [])
    alice = await started(agent_of(await sender_under(sidecars, http, document.revision)))
    with pytest.raises(CircuitOpenError):
        await alice.send("bob", "note")

    sending = asyncio.create_task(alice.send("bob", "note", retry=Retry(attempts=60)))
    bob = await started(Inbox(await asyncio.to_thread(sidecars.start, "default/bob")))

    sent = await sending
    await eventually(lambda: [note.id for note in bob.notes] == [sent], "the note delivered")


def test_retry_takes_the_sidecars_wait_or_backs_off_within_its_bounds() -> None:
    refusal = RateLimitedError(429, "rate_limited", "slow", retry_after=2.0)
    silent = CircuitOpenError(503, "circuit_open", "open")
    policy = Retry(attempts=5, backoff=0.5, max_wait=3.0)

    assert 2.0 <= policy.wait(0, refusal) <= 2.2
    assert [0.5 * 2**n <= policy.wait(n, silent) <= 0.55 * 2**n for n in range(3)] == [True] * 3
    assert 3.0 <= policy.wait(4, silent) <= 3.3
    with pytest.raises(ValueError, match="negative"):
        Retry(attempts=-1)
