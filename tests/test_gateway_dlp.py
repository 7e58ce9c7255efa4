"""DLP over everything an agent sends that other agents read, through real sidecars: a message's
type, correlation id and forwarded trace context beside its payload, and the metadata an agent
publishes in discovery. Each test plays a way data got past a policy blocking it."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import redis
from api import Api
from conftest import Sidecars
from policies import publish
from streams import waiting_for
from waiting import eventually

from mas_core.keys import POLICY_DOCUMENT, POLICY_REVISION, AgentKeys

ALICE = AgentKeys("default/alice")
BOB = AgentKeys("default/bob")
SSN = "123-45-6789"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BLOCK_SSN_REDACT_EMAIL = {"us_ssn": "block", "email": "redact"}


def audit_events(client: redis.Redis, keys: AgentKeys) -> list[dict[str, Any]]:
    return [orjson.loads(fields[b"e"]) for _, fields in client.xrange(keys.audit)]


async def alice_and_bob(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> tuple[Api, Api]:
    """Alice's and Bob's sidecars under a policy that allows every message, blocks SSNs and
    redacts email addresses, once Alice's enforces it."""
    document = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        dlp={"detectors": BLOCK_SSN_REDACT_EMAIL},
    )
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    await alice.wait_for_revision(document.revision)
    return alice, bob


async def test_data_in_the_correlation_id_is_refused_even_where_the_policy_only_redacts(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice, bob = await alice_and_bob(sidecars, http, redis_client)

    async def send(correlation_id: str) -> tuple[int, Any]:
        body = {"to": "bob", "type": "note", "payload": {}, "correlation_id": correlation_id}
        return await alice.call("POST", "/v1/messages", body)

    ssn_status, ssn_body = await send(SSN)
    email_status, email_body = await send("re:jane@example.com")
    ordinary_status, _ = await send("order-123456789")
    [delivered] = await bob.collect(1)

    assert (ssn_status, ssn_body["error"]["code"]) == (422, "dlp_blocked")
    assert ssn_body["error"]["message"] == (
        "the correlation_id holds data the policy blocks: us_ssn"
    )
    assert (email_status, email_body["error"]["code"]) == (422, "dlp_blocked")
    assert email_body["error"]["message"] == (
        "the correlation_id holds data the policy blocks or redacts: email "
        "(correlation_id cannot be redacted)"
    )
    assert ordinary_status == 202
    assert delivered["correlation_id"] == "order-123456789"
    trail = str(redis_client.xrange(ALICE.audit)) + str(waiting_for(redis_client, BOB.agent_id))
    assert SSN not in trail and "jane@example.com" not in trail
    assert [e["decision"] for e in audit_events(redis_client, ALICE)] == [
        "dlp_blocked", "dlp_blocked", "accepted",
    ]  # fmt: skip


async def test_data_in_the_forwarded_trace_context_is_refused_or_redacted_per_the_policy(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice, bob = await alice_and_bob(sidecars, http, redis_client)

    async def send(tracestate: str) -> tuple[int, Any]:
        headers = {"traceparent": TRACEPARENT, "tracestate": tracestate}
        body = {"to": "bob", "type": "note", "payload": {"text": "hello"}}
        return await alice.call("POST", "/v1/messages", body, headers=headers)

    blocked_status, blocked = await send(f"vendor=ssn:{SSN.replace('-', '.')}")
    redacted_status, _ = await send("vendor=jane@example.com,other=1")
    [delivered] = await bob.collect(1)

    assert (blocked_status, blocked["error"]["code"]) == (422, "dlp_blocked")
    assert blocked["error"]["message"] == "the trace holds data the policy blocks: us_ssn"
    assert redacted_status == 202
    assert delivered["trace"] == {
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=[REDACTED:email],other=1",
    }
    inbox = str(waiting_for(redis_client, BOB.agent_id))
    assert "123.45.6789" not in inbox and "jane@example.com" not in inbox
    refused, accepted = audit_events(redis_client, ALICE)
    assert refused["dlp"] == [{"detector": "us_ssn", "action": "block", "path": "trace.tracestate"}]
    assert accepted["dlp"] == [
        {"detector": "email", "action": "redact", "path": "trace.tracestate"}
    ]


async def test_a_message_type_holding_data_is_refused_and_audited_masked(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice, _ = await alice_and_bob(sidecars, http, redis_client)

    status, body = await alice.call(
        "POST", "/v1/messages", {"to": "bob", "type": f"ssn:{SSN}", "payload": {}}
    )

    assert (status, body["error"]["code"]) == (422, "dlp_blocked")
    assert body["error"]["message"] == "the type holds data the policy blocks: us_ssn"
    [refused] = audit_events(redis_client, ALICE)
    assert refused["type"] == "[REDACTED:us_ssn]"
    assert SSN not in str(redis_client.xrange(ALICE.audit))
    assert waiting_for(redis_client, BOB.agent_id) == []


async def test_discovery_metadata_is_refused_where_blocked_and_redacted_where_redacted(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice, _ = await alice_and_bob(sidecars, http, redis_client)
    doctor = Api(
        http, sidecars.start("default/doctor", MAS_METADATA='{"contact": "doc@example.com"}')
    )

    async def discovered() -> Any:
        _, listing = await alice.call("GET", "/v1/agents")
        return {agent["id"]: agent["metadata"] for agent in listing["agents"]}["default/doctor"]

    configured = await discovered()
    blocked_status, blocked = await doctor.call(
        "PUT", "/v1/self", {"metadata": {"patient": {"ssnNumber": "123456789"}}}
    )
    after_blocked = await discovered()
    redacted_status, me = await doctor.call(
        "PUT", "/v1/self", {"metadata": {"owner": "jane@example.com", "v": 2}}
    )

    assert configured == {"contact": "[REDACTED:email]"}
    assert (blocked_status, blocked["error"]["code"]) == (422, "dlp_blocked")
    assert blocked["error"]["message"] == "the metadata holds data the policy blocks: us_ssn"
    assert after_blocked == configured
    assert redacted_status == 200
    assert me["metadata"] == {"owner": "[REDACTED:email]", "v": 2}
    assert await discovered() == me["metadata"]
    stored = str(redis_client.get(AgentKeys("default/doctor").metadata))
    assert "123456789" not in stored and "example.com" not in stored
    events = audit_events(redis_client, AgentKeys("default/doctor"))
    assert [(e["decision"], e["dlp"]) for e in events] == [
        ("metadata_blocked", [{"detector": "us_ssn", "action": "block",
                               "path": "metadata.patient.ssnNumber"}]),
        ("metadata_published", [{"detector": "email", "action": "redact",
                                 "path": "metadata.owner"}]),
    ]  # fmt: skip


async def test_metadata_waits_for_a_policy_and_is_withheld_once_a_new_one_blocks_it(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    redis_client.delete(POLICY_DOCUMENT, POLICY_REVISION)
    doctor = Api(
        http,
        sidecars.start(
            "default/doctor", MAS_METADATA='{"note": "SSN 123456789"}', MAS_REGISTRY_TTL_MS="1500"
        ),
    )

    async def published() -> Any:
        _, me = await doctor.call("GET", "/v1/self")
        return me["metadata"]

    before_policy = await published()
    refused_status, refused = await doctor.call("PUT", "/v1/self", {"metadata": {"v": 1}})
    first = publish(redis_client, rules=[{"name": "all", "action": "allow"}])
    await doctor.wait_for_revision(first.revision)
    await eventually(published, "the metadata published once a policy is in force")
    under_first = await published()
    second = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        dlp={"detectors": BLOCK_SSN_REDACT_EMAIL},
    )
    await doctor.wait_for_revision(second.revision)

    stored = AgentKeys("default/doctor").metadata

    async def withheld() -> bool:
        # Discovery shows {} once the policy is in force; the stored copy is rewritten at the
        # next lease renewal (see mas_sidecar.streams.registry), so both are waited for.
        return await published() == {} and b"123456789" not in (redis_client.get(stored) or b"")

    await eventually(withheld, "the metadata withheld once the policy blocks it")

    assert before_policy == {}
    assert (refused_status, refused["error"]["code"]) == (503, "policy_unavailable")
    assert under_first == {"note": "SSN 123456789"}
    assert redis_client.get(stored) == b"{}"
