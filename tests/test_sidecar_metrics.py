"""The sidecar's per-replica metrics of what happens to messages: end-to-end latency and the
handler time an SDK agent reports with its ack, decisions by the rule that made them, and
label values that stay bounded whatever names policies use. Real sidecars, Redis and agents;
only counts are checked, never a duration (speed is measured in ``bench/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import redis
from api import Api
from conftest import Sidecars
from policies import publish
from prometheus import Scrape, scrape
from waiting import eventually

from mas import Agent, AgentMessage
from mas_cli.local.processes import SidecarProcess
from mas_sidecar.metrics import NO_RULE, OTHER, FoldedLabels, Metrics

ROOT = Path(__file__).resolve().parent.parent


class Worker(Agent):
    """Handles every ``job``."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.done: list[str] = []

    @Agent.on("job")
    async def handle_job(self, message: AgentMessage) -> None:
        self.done.append(message.id)


async def metrics_of(api: Api) -> Scrape:
    return await scrape(api.session, api.base_url + "/metrics", **api.headers)


async def test_an_sdk_agent_reports_handler_time_and_its_sidecar_the_delivery_latency(
    sidecars: Sidecars, http: aiohttp.ClientSession, started: Any
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob_sidecar = sidecars.start("default/bob")
    bob = Api(http, bob_sidecar)
    worker = await started(Worker(bob_sidecar))
    for n in range(3):
        await alice.send("bob", "job", {"n": n})
    await eventually(lambda: len(worker.done) == 3, "three jobs handled")

    async def observed() -> Scrape | None:
        seen = await metrics_of(bob)
        return seen if seen.value("mas_handler_seconds_count") == 3 else None

    seen = await eventually(observed, "three handler times")
    assert seen.value("mas_delivery_latency_seconds_count") == 3
    assert seen.value("mas_acks_total") == 3


async def test_acks_say_how_long_the_handler_took_or_are_refused_without_losing_the_delivery(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    for n in range(3):
        await alice.send("bob", "job", {"n": n})
    first, second, third = [d["id"] for d in await bob.collect(3, ack=False)]
    bad = [
        (f"/v1/deliveries/{first}/ack", {"handler_ms": -1}),
        (f"/v1/deliveries/{first}/ack", {"handler_ms": "12"}),
        (f"/v1/deliveries/{first}/ack", {"handler_ms": 12, "extra": 1}),
        ("/v1/deliveries/ack", {"ids": [first, second], "handler_ms": [1.5]}),
    ]
    for path, body in bad:
        status, answer = await bob.call("POST", path, body)
        assert (status, answer["error"]["code"]) == (400, "invalid_request"), (path, body)
    # Nothing was acked by the refused requests: every delivery is still leased here.
    assert await bob.answer(first, "ack", {"handler_ms": 12.5}) == 204
    status, answer = await bob.call(
        "POST", "/v1/deliveries/ack", {"ids": [second, third, "9-9"], "handler_ms": [3, None, 1]}
    )
    assert status == 200 and answer == {"acked": [second, third], "unknown": ["9-9"]}
    seen = await metrics_of(bob)
    assert seen.value("mas_acks_total") == 3
    assert seen.value("mas_handler_seconds_count") == 2  # 12.5 ms and 3 ms; None and unknown not
    assert seen.value("mas_handler_seconds_sum") == 0.0155


async def test_decisions_are_counted_by_the_rule_or_rate_limit_that_made_them(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    revision = publish(
        redis_client,
        rules=[
            {"name": "jobs", "action": "allow", "types": ["job"]},
            {"name": "no-secrets", "action": "deny", "types": ["secret"]},
        ],
        rateLimits=[{"name": "slow", "rate": 0.001, "burst": 2}],
    ).revision
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    await alice.wait_for_revision(revision)
    await alice.send("bob", "job")
    for message_type in ("secret", "gossip"):
        status, _ = await alice.call("POST", "/v1/messages", {"to": "bob", "type": message_type})
        assert status == 403
    await alice.send("bob", "job")
    status, _ = await alice.call("POST", "/v1/messages", {"to": "bob", "type": "job"})
    assert status == 429
    seen = await metrics_of(alice)
    counts = {
        (labels["decision"], labels["rule"]): seen.value("mas_rule_decisions_total", labels)
        for labels in seen.labels_of("mas_rule_decisions_total")
    }
    assert counts == {
        ("accepted", "default/test/jobs"): 2,
        ("denied", "default/test/no-secrets"): 1,
        ("denied", NO_RULE): 1,  # nothing allows gossip: default deny
        ("rate_limited", "slow"): 1,
    }


def test_names_from_policies_fold_into_other_beyond_the_limit() -> None:
    label = FoldedLabels(limit=2)
    assert [label(n) for n in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


def test_every_sidecar_metric_is_documented() -> None:
    documented = (ROOT / "docs" / "sidecar-api.md").read_text()
    families = [family.name for family in Metrics().registry.collect()]
    assert len(families) > 20
    assert [name for name in families if f"`{name}" not in documented] == []
