"""Gateway checks in the sidecar: policy loading, authorization, rate limits, circuit breaker,
the receive-side re-check, and the audit trail of every decision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis
from api import Api
from conftest import Sidecars
from policies import policy, publish
from streams import append_as
from waiting import eventually

from mas_cli.local.processes import SidecarProcess
from mas_core.audit import chain as audit
from mas_core.keys import POLICY_DOCUMENT, POLICY_REVISION, AgentKeys

BOB = AgentKeys("default/bob")
ALICE = AgentKeys("default/alice")


def audit_events(client: redis.Redis, keys: AgentKeys) -> list[dict[str, object]]:
    return [orjson.loads(fields[b"e"]) for _, fields in client.xrange(keys.audit)]


async def test_a_send_no_rule_allows_is_denied_with_the_reason_and_audited(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "pings", "action": "allow", "from": {"agents": ["alice"]},
                "to": {"agents": ["bob"]}, "types": ["ping"]}],
    )  # fmt: skip
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    await alice.wait_for_revision(document.revision)

    assert (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "ping"}))[0] == 202
    status, body = await alice.call("POST", "/v1/messages", {"to": "bob", "type": "delete-all"})

    assert status == 403
    assert body["error"]["code"] == "forbidden"
    assert (
        "no rule allows default/alice to send 'delete-all' to default/bob"
        in body["error"]["message"]
    )
    assert redis_client.xlen(BOB.inbox(ALICE.agent_id)) == 1
    events = audit_events(redis_client, ALICE)
    assert [e["decision"] for e in events] == ["accepted", "denied"]
    assert events[0]["rule"] == "default/test/pings"
    assert "delete-all" in str(events[1]["reason"])


async def test_deny_wins_and_rules_match_by_role_and_capability(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[
            {"name": "staff-to-doctors", "action": "allow", "from": {"roles": ["staff"]},
             "to": {"capabilities": ["diagnose"]}},
            {"name": "no-prescriptions", "action": "deny", "from": {"agents": ["nurse"]},
             "types": ["prescribe*"]},
        ],
    )  # fmt: skip
    nurse = Api(http, sidecars.start("default/nurse", MAS_ROLES="staff"))
    visitor = Api(http, sidecars.start("default/visitor"))
    sidecars.start("default/doctor", capabilities=["diagnose"])
    sidecars.start("default/janitor")
    await nurse.wait_for_revision(document.revision)

    async def status(api: Api, to: str, type: str) -> int:
        return (await api.call("POST", "/v1/messages", {"to": to, "type": type}))[0]

    assert await status(nurse, "doctor", "consult") == 202
    assert await status(nurse, "doctor", "prescribe.refill") == 403
    assert await status(nurse, "janitor", "consult") == 403
    assert await status(visitor, "doctor", "consult") == 403


async def test_without_any_policy_nothing_is_sent(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    redis_client.delete(POLICY_DOCUMENT, POLICY_REVISION)
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")

    status, body = await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"})

    assert status == 503
    assert body["error"]["code"] == "policy_unavailable"


async def test_a_new_policy_takes_effect_without_restart(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice", replica="alice-0"))
    sidecars.start("default/bob")
    assert (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] == 202

    document = publish(redis_client, rules=[{"name": "nothing", "action": "deny"}])
    await alice.wait_for_revision(document.revision)

    assert (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] == 403
    enforcing = redis_client.hget("mas:{policy}:enforcers", "default/alice/alice-0")
    assert enforcing == document.revision.encode()


async def test_an_invalid_policy_is_rejected_and_the_last_good_one_stays(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    good = publish(redis_client, rules=[{"name": "all", "action": "allow"}])
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    await alice.wait_for_revision(good.revision)

    broken = good.to_json().replace(b'"all"', b'"Not A Name!"')
    redis_client.set(POLICY_DOCUMENT, broken)
    redis_client.set(POLICY_REVISION, "broken-1")
    me = await alice.wait_for_policy_error()

    assert me["policy"]["revision"] == good.revision
    assert "keeping revision" in me["policy"]["error"]
    assert "Not A Name!" in me["policy"]["error"]
    assert (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] == 202


async def test_a_sender_over_its_rate_limit_gets_429_with_retry_after(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        rateLimits=[{"name": "slow", "rate": 0.5, "burst": 3}],
    )
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    await alice.wait_for_revision(document.revision)

    statuses = [
        (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] for _ in range(4)
    ]
    async with http.post(
        alice.base_url + "/v1/messages", json={"to": "bob", "type": "x"}, headers=alice.headers
    ) as answer:
        body = await answer.json()
        retry_after = answer.headers["Retry-After"]

    assert statuses == [202, 202, 202, 429]
    assert body["error"]["code"] == "rate_limited"
    assert "slow" in body["error"]["message"]
    assert int(retry_after) >= 1
    assert [e["decision"] for e in audit_events(redis_client, ALICE)].count("rate_limited") == 2


async def test_an_agent_scoped_rate_limit_is_shared_by_its_replicas(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        rateLimits=[{"name": "shared", "rate": 0.1, "burst": 4, "scope": "agent"}],
    )
    replicas = [Api(http, sidecars.start("default/alice", replica=f"alice-{n}")) for n in range(2)]
    sidecars.start("default/bob")
    await replicas[1].wait_for_revision(document.revision)

    statuses = [
        (await replicas[n % 2].call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0]
        for n in range(6)
    ]

    assert statuses.count(202) == 4
    assert statuses[4:] == [429, 429]


async def test_the_circuit_opens_on_a_target_backlog_and_closes_after_a_probe(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        circuitBreaker={"backlogThreshold": 3, "openSeconds": 2},
    )
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    await alice.wait_for_revision(document.revision)

    statuses = [
        (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] for _ in range(5)
    ]
    _, body = await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"})
    await bob.collect(4)

    async def accepted() -> tuple[int, Any] | None:  # refused at once while open: no probe
        answer = await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"})
        return answer if answer[0] == 202 else None

    probe = await eventually(accepted, "a probe through the half-open circuit")
    after = await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"})

    assert statuses == [202, 202, 202, 202, 503]
    assert body["error"]["code"] == "circuit_open"
    assert "backlog" in body["error"]["message"]
    assert (probe[0], after[0]) == (202, 202)
    async with http.get(alice.base_url + "/metrics", headers=alice.headers) as answer:
        assert 'mas_circuits{state="CLOSED"} 1.0' in await answer.text()


async def test_a_message_written_around_the_senders_sidecar_is_refused_by_the_receiver(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "carol-only", "action": "allow", "from": {"agents": ["carol"]}}],
    )
    carol = Api(http, sidecars.start("default/carol"))
    sidecars.start("default/mallory")
    bob = Api(http, sidecars.start("default/bob"))
    await bob.wait_for_revision(document.revision)
    await carol.send("bob", "hello")
    [(_, fields)] = redis_client.xrange(BOB.inbox("default/carol"))
    forged = orjson.loads(fields[b"e"]) | {"sender": "default/mallory", "id": "01FORGED"}
    append_as(redis_client, "default/mallory", "default/bob", {"e": orjson.dumps(forged)})

    [delivered] = await bob.collect(1)

    [dead] = await eventually(bob.dead_letters, "the forged message dead-lettered")

    assert delivered["from"] == "default/carol"
    assert dead["reason"].startswith("unauthorized: no rule allows default/mallory")
    decisions = [e["decision"] for e in audit_events(redis_client, BOB)]
    assert sorted(decisions) == ["received", "refused_on_receive"]  # carol's, and the forgery


async def test_the_audit_chain_verifies_and_an_edit_in_redis_is_found(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    for n in range(5):
        await alice.send("bob", "x", {"n": n})
    entries = redis_client.xrange(ALICE.audit)
    heads = redis_client.hgetall(ALICE.audit_heads)
    assert audit.verify(entries, heads).ok

    entry_id, fields = entries[2]  # a stream entry cannot be edited in place: delete, re-add
    tampered = fields | {b"e": fields[b"e"].replace(b"accepted", b"denied__")}
    redis_client.xdel(ALICE.audit, entry_id)
    redis_client.xadd(ALICE.audit, tampered)
    report = audit.verify(redis_client.xrange(ALICE.audit), redis_client.hgetall(ALICE.audit_heads))
    cli = subprocess.run(
        [sys.executable, "-m", "mas_cli", "audit", "verify", "alice", "--redis-url",
         sidecars.redis_url],
        capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert not report.ok
    assert any("#3" in p and "missing" in p for p in report.problems), report.problems
    assert any("#3" in p and "altered" in p for p in report.problems), report.problems
    assert cli.returncode == 3
    assert "TAMPERED" in cli.stdout and "NOT intact" in cli.stdout


async def test_the_audit_chain_continues_across_a_sidecar_restart(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    sidecar: SidecarProcess = sidecars.start("default/alice", replica="alice-0")
    sidecars.start("default/bob")
    await Api(http, sidecar).send("bob", "x")
    sidecar.kill()
    sidecar.start()
    await Api(http, sidecar).send("bob", "x")

    report = audit.verify(redis_client.xrange(ALICE.audit), redis_client.hgetall(ALICE.audit_heads))
    assert report.ok, report.problems
    assert (report.entries, report.chains) == (2, 1)


async def test_dlp_blocks_naming_the_detector_never_the_value_and_redacts_before_sending(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        dlp={"detectors": {"email": "redact", "payment_card": "block", "phone": "log"}},
    )
    alice = Api(http, sidecars.start("default/alice"))
    bob = Api(http, sidecars.start("default/bob"))
    await alice.wait_for_revision(document.revision)

    status, body = await alice.call(
        "POST", "/v1/messages",
        {"to": "bob", "type": "pay", "payload": {"card": "4111 1111 1111 1111"}},
    )  # fmt: skip
    await alice.send(
        "bob", "note", {"text": "mail jane.doe@example.com", "call": "+1 415 555 0100"}
    )
    [delivered] = await bob.collect(1)

    assert (status, body["error"]["code"]) == (422, "dlp_blocked")
    assert "payment_card" in body["error"]["message"]
    assert "4111" not in str(body)
    assert delivered["payload"]["text"] == "mail [REDACTED:email]"
    assert delivered["payload"]["call"] == "+1 415 555 0100"
    raw_inbox_and_audit = str(redis_client.xrange(ALICE.audit)) + str(
        redis_client.xrange(BOB.inbox(ALICE.agent_id))
    )
    assert "jane.doe@example.com" not in raw_inbox_and_audit
    assert "4111 1111" not in raw_inbox_and_audit
    blocked, accepted = audit_events(redis_client, ALICE)
    assert blocked["decision"] == "dlp_blocked"
    assert {(f["detector"], f["action"]) for f in accepted["dlp"]} == {
        ("email", "redact"),
        ("phone", "log"),
    }


async def test_a_policy_with_an_invalid_custom_regex_is_rejected_and_the_last_good_one_stays(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    good = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        dlp={"custom": [{"name": "ticket", "pattern": "TCK-[0-9]{6}", "action": "block"}]},
    )
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    await alice.wait_for_revision(good.revision)

    redis_client.set(POLICY_DOCUMENT, good.to_json().replace(b"TCK-[0-9]{6}", b"TCK-([0-9]"))
    redis_client.set(POLICY_REVISION, "bad-regex")
    me = await alice.wait_for_policy_error()
    status, _ = await alice.call(
        "POST", "/v1/messages", {"to": "bob", "type": "x", "payload": "TCK-123456"}
    )

    assert me["policy"]["revision"] == good.revision
    assert "ticket" in me["policy"]["error"] and "RE2" in me["policy"]["error"]
    assert status == 422


async def test_restricted_discovery_lists_only_agents_the_caller_may_message(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "to-doctors", "action": "allow", "from": {"agents": ["patient"]},
                "to": {"capabilities": ["diagnose"]}}],
        discovery={"restricted": True},
    )  # fmt: skip
    patient = Api(http, sidecars.start("default/patient", capabilities=["chat"]))
    sidecars.start("default/doctor", capabilities=["diagnose", "chat"])
    sidecars.start("default/billing", capabilities=["chat"])
    await patient.wait_for_revision(document.revision)

    _, listing = await patient.call("GET", "/v1/agents?capability=chat")

    assert [agent["id"] for agent in listing["agents"]] == ["default/doctor"]


async def test_a_policy_file_is_loaded_and_reloaded_when_it_changes(
    sidecars: Sidecars, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    path = tmp_path / "policy.json"
    first = policy(rules=[{"name": "all", "action": "allow"}])
    path.write_bytes(first.to_json())
    alice = Api(http, sidecars.start("default/alice", MAS_POLICY_FILE=str(path)))
    sidecars.start("default/bob")
    await alice.wait_for_revision(first.revision)
    assert (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] == 202

    second = policy(rules=[{"name": "none", "action": "deny"}])
    path.write_bytes(second.to_json())
    await alice.wait_for_revision(second.revision)

    assert (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] == 403


async def test_audit_export_and_tail_print_json_lines(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")
    for n in range(3):
        await alice.send("bob", "x", {"n": n})

    def mas(*args: str) -> list[dict[str, object]]:
        done = subprocess.run(
            [sys.executable, "-m", "mas_cli", "audit", *args, "alice", "--redis-url",
             sidecars.redis_url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return [orjson.loads(line) for line in done.stdout.splitlines()]

    exported, tailed = mas("export"), mas("tail", "-n", "2")

    assert [entry["seq"] for entry in exported] == [1, 2, 3]
    assert {entry["event"]["decision"] for entry in exported} == {"accepted"}  # type: ignore[index]
    assert tailed == exported[1:]
