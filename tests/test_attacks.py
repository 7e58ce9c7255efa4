"""Attacks by a compromised agent: its process, its sidecar, the sidecar's keys and Redis user.

Each test plays the attacker against real sidecars on a real server (the embedded Valkey, or
``MAS_TEST_REDIS_SERVER``) and asserts that what the attacker wrote never reaches the victim as
if it were allowed: it is refused, dead-lettered with the reason and audited, or never accepted.
A :class:`Compromised` agent holds what an attacker who owns a sidecar holds: the agent's
private key and identity token (so it signs anything as that agent) and a Redis client logged
in as the agent's own least-privilege ACL user (so it writes whatever that user may write).
docs/security.md lists the guarantees these tests prove.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from api import Api
from conftest import Sidecars
from policies import publish
from test_acl import AclUsers
from test_signing import Identities
from waiting import eventually

from mas.envelope import Envelope
from mas.identity import load_private_key_pem, sign_envelope, signing_key
from mas.ids import new_id
from mas.keys import REGISTRY_AGENTS, REGISTRY_LEASES, AgentKeys

ALICE = AgentKeys("default/alice")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Compromised:
    """An agent whose sidecar the attacker owns: its key, its token, its Redis user."""

    def __init__(self, agent_id: str, credentials: Path, client: redis.Redis) -> None:
        self.agent_id = agent_id
        self._key = signing_key(load_private_key_pem((credentials / "agent.key").read_bytes()))
        self._token = (credentials / "token").read_text().strip()
        self.redis = client

    def envelope(self, target: str, type: str, payload: Any = None, **fields: Any) -> Envelope:
        """A message from this agent to ``target``, signed with its own key and token."""
        created = now_ms()
        unsigned = Envelope(
            id=new_id(created), sender=self.agent_id, target=target, type=type,
            payload=payload, created_at=created, **fields,
        )  # fmt: skip
        return sign_envelope(unsigned, self._key, self._token)

    def append(self, stream: str, envelope: Envelope) -> None:
        """XADD as this agent's own Redis user, around its sidecar's checks."""
        self.redis.xadd(stream, envelope.to_entry())


@dataclass
class World:
    """Signed sidecars connected as their agents' own ACL users, and compromised agents."""

    http: aiohttp.ClientSession
    sidecars: Sidecars
    identities: Identities
    users: AclUsers
    admin: redis.Redis

    def policy(self, **spec: Any) -> str:
        """Publish a policy (signing required unless ``spec`` says otherwise); its revision."""
        spec.setdefault("signing", {"required": True})
        return publish(self.admin, **spec).revision

    def start(self, agent_id: str, **settings: Any) -> Api:
        """An honest sidecar for ``agent_id``."""
        sidecar = self.sidecars.start(
            agent_id,
            redis_url=self.users.url(agent_id),
            MAS_CREDENTIALS_DIR=str(self.credentials(agent_id)),
            **settings,
        )
        return Api(self.http, sidecar)

    def compromise(self, agent_id: str) -> Compromised:
        """What an attacker holds who owns ``agent_id``'s sidecar (running or not)."""
        return Compromised(agent_id, self.credentials(agent_id), self.users.client(agent_id))

    def credentials(self, agent_id: str) -> Path:
        directory = self.identities.root / agent_id.replace("/", "_")
        return directory if directory.exists() else self.identities.issue(agent_id)


@pytest.fixture
def world(
    sidecars: Sidecars,
    http: aiohttp.ClientSession,
    redis_client: redis.Redis,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[World]:
    users = AclUsers(redis_client, redis_url)
    yield World(http, sidecars, Identities(tmp_path / "identity"), users, redis_client)
    users.remove()


async def outcome(api: Api) -> tuple[str, dict[str, Any]]:
    """The first thing that happens to what waits in ``api``'s inbox: ``("delivered", event)``
    or ``("dead-lettered", letter)`` (the sidecar reads its inbox while subscribed)."""
    delivered: list[dict[str, Any]] = []

    async def subscribe() -> None:
        async for event in api.deliveries():
            delivered.append(event)

    async def first() -> tuple[str, dict[str, Any]] | None:
        if delivered:
            return "delivered", delivered[0]
        letters = await api.dead_letters()
        return ("dead-lettered", letters[0]) if letters else None

    subscriber = asyncio.create_task(subscribe())
    try:
        found: tuple[str, dict[str, Any]] = await eventually(first, "a delivery or dead letter")
        return found
    finally:
        subscriber.cancel()


def audited(client: redis.Redis, keys: AgentKeys) -> list[str]:
    return [orjson.loads(fields[b"e"])["decision"] for _, fields in client.xrange(keys.audit)]


ALICE_ASKS_BOB = {
    "rules": [
        {"name": "alice-asks-bob", "action": "allow", "from": {"agents": ["alice"]},
         "to": {"agents": ["bob"]}, "types": ["question"]},
    ]
}  # fmt: skip


# -- authorization of replies -----------------------------------------------------------------


async def test_a_forged_reply_flag_does_not_skip_the_receivers_authorization(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(**ALICE_ASKS_BOB)  # no rule lets bob send anything to alice
    alice = world.start("default/alice")
    bob = world.compromise("default/bob")

    forged = bob.envelope(
        "default/alice", "admin.shutdown", {"now": True},
        is_reply=True, correlation_id=new_id(now_ms()),
    )  # fmt: skip
    bob.append(ALICE.inbox, forged)
    what, letter = await outcome(alice)

    assert what == "dead-lettered", letter
    assert letter["message"]["id"] == forged.id
    assert letter["reason"].startswith("unauthorized: no rule allows default/bob")
    assert audited(redis_client, ALICE) == ["refused_on_receive"]


DENY_ADMIN_REPLIES = {
    "rules": [
        *ALICE_ASKS_BOB["rules"],
        {"name": "no-admin", "action": "deny", "from": {"agents": ["bob"]},
         "to": {"agents": ["alice"]}, "types": ["admin.*"]},
    ]
}  # fmt: skip


async def ask(alice: Api, bob: Api) -> tuple[asyncio.Task[tuple[int, Any]], dict[str, Any]]:
    """Alice's request to bob (under way) and its delivery at bob."""
    asking = asyncio.create_task(
        alice.call("POST", "/v1/requests", {"to": "bob", "type": "question", "timeout_ms": 60_000})
    )
    [delivery] = await bob.collect(1, ack=False)
    return asking, delivery


async def test_deny_rules_refuse_a_reply_to_a_request_and_it_takes_one_reply(
    world: World,
) -> None:
    world.policy(**DENY_ADMIN_REPLIES)
    alice, bob = world.start("default/alice"), world.start("default/bob")
    asking, delivery = await ask(alice, bob)

    denied = await bob.call(
        "POST", f"/v1/deliveries/{delivery['id']}/reply", {"type": "admin.shutdown"}
    )
    answered = await bob.call("POST", f"/v1/deliveries/{delivery['id']}/reply", {"type": "answer"})
    again = await bob.call("POST", f"/v1/deliveries/{delivery['id']}/reply", {"type": "answer"})
    status, reply = await asking

    assert (denied[0], denied[1]["error"]["code"]) == (403, "forbidden")
    assert "denied by rule default/test/no-admin" in denied[1]["error"]["message"]
    assert answered[0] == 202  # no rule allows bob -> alice: the request it answers does
    assert (again[0], again[1]["error"]["code"]) == (409, "already_replied")
    assert (status, reply["type"], reply["id"]) == (200, "answer", answered[1]["id"])


async def test_a_reply_to_a_plain_message_needs_a_rule_like_any_message(world: World) -> None:
    world.policy(**ALICE_ASKS_BOB)
    alice, bob = world.start("default/alice"), world.start("default/bob")
    await alice.send("bob", "question")
    [delivery] = await bob.collect(1, ack=False)

    status, body = await bob.call(
        "POST", f"/v1/deliveries/{delivery['id']}/reply", {"type": "answer"}
    )

    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert (
        "no rule allows default/bob to send 'answer' to default/alice" in body["error"]["message"]
    )


async def test_a_compromised_replier_gets_one_reply_through_and_no_denied_one(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(**DENY_ADMIN_REPLIES)
    alice = world.start("default/alice", replica="alice-0")
    asking, delivery = await ask(alice, world.start("default/bob"))
    bob = world.compromise("default/bob")
    replies = ALICE.replies("alice-0")

    def reply(type: str) -> Envelope:
        return bob.envelope(
            "default/alice", type, is_reply=True, correlation_id=delivery["id"], reply_to=None
        )

    denied = reply("admin.shutdown")
    bob.append(replies, denied)  # a deny rule refuses it: the request keeps waiting
    first, second = reply("answer"), reply("admin.shutdown")
    bob.append(replies, first)
    bob.append(replies, second)  # after the one reply a request takes: an ordinary message
    status, answer = await asking
    as_message = reply("answer")
    bob.append(ALICE.inbox, as_message)  # a "reply" in the inbox is a message like any other
    what, letter = await outcome(alice)

    assert (status, answer["id"]) == (200, first.id)

    def refusals() -> list[dict[str, Any]]:
        events = [orjson.loads(f[b"e"]) for _, f in redis_client.xrange(ALICE.audit)]
        return [e for e in events if e["decision"] == "refused_on_receive"]

    refused = await eventually(lambda: len(refusals()) == 3 and refusals(), "three refusals")
    assert [e["message_id"] for e in refused] == [denied.id, second.id, as_message.id]
    assert "denied by rule default/test/no-admin" in refused[0]["reason"]
    assert "denied by rule default/test/no-admin" in refused[1]["reason"]
    assert (what, letter["message"]["id"]) == ("dead-lettered", as_message.id)
    assert letter["reason"].startswith("unauthorized: no rule allows default/bob")


# -- the registry: what authorization relies on is the control plane's --------------------------

CONSULTATIONS = {
    "rules": [
        {"name": "patients-consult", "action": "allow", "from": {"agents": ["patient"]},
         "to": {"capabilities": ["medical.consultation"]}},
    ]
}  # fmt: skip


async def test_an_agent_cannot_claim_a_capability_to_receive_what_it_grants(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(**CONSULTATIONS)
    patient = world.start("default/patient")
    world.start("default/mallory")
    mallory = world.compromise("default/mallory")
    claim = orjson.dumps({"capabilities": ["medical.consultation"], "roles": []})

    with pytest.raises(redis.exceptions.NoPermissionError):
        mallory.redis.hset(REGISTRY_AGENTS, "default/mallory", claim)
    with pytest.raises(redis.exceptions.NoPermissionError):
        mallory.redis.hset(REGISTRY_AGENTS, "default/doctor", b"{}")
    _, found = await patient.call("GET", "/v1/agents?capability=medical.consultation")
    status, body = await patient.call(
        "POST", "/v1/messages", {"to": "mallory", "type": "symptoms", "payload": "..."}
    )

    assert found["agents"] == []
    assert (status, body["error"]["code"]) == (403, "forbidden")


async def test_a_malformed_registry_entry_hides_nothing_else_and_grants_nothing(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(**CONSULTATIONS)
    patient = world.start("default/patient")
    world.start("default/doctor", capabilities=["medical.consultation"])
    broken = ["not json", "[1, 2]", '{"capabilities": "medical.consultation"}', '{"roles": [7]}']
    for index, raw in enumerate(broken):
        redis_client.hset(REGISTRY_AGENTS, f"default/broken-{index}", raw)
        redis_client.zadd(REGISTRY_LEASES, {f"default/broken-{index}": now_ms() + 60_000})
    world.start("default/mallory")
    redis_client.set(AgentKeys("default/mallory").metadata, b"[not an object")

    status, everyone = await patient.call("GET", "/v1/agents")
    _, consulting = await patient.call("GET", "/v1/agents?capability=medical.consultation")
    denied = await patient.call("POST", "/v1/messages", {"to": "broken-2", "type": "symptoms"})

    assert status == 200
    listed = {agent["id"]: agent for agent in everyone["agents"]}
    assert {f"default/broken-{i}" for i in range(4)} <= set(listed)
    assert listed["default/broken-2"]["capabilities"] == []
    assert listed["default/mallory"]["metadata"] == {}
    assert [agent["id"] for agent in consulting["agents"]] == ["default/doctor"]
    assert (denied[0], denied[1]["error"]["code"]) == (403, "forbidden")


# -- what one agent's Redis user can do to everyone ------------------------------------------------


def test_no_agent_can_make_the_server_run_code_of_its_own(
    world: World, redis_client: redis.Redis
) -> None:
    bob = world.compromise("default/bob")
    endless = "while true do end"
    attempts = [
        lambda: bob.redis.script_load(endless),
        lambda: bob.redis.eval(endless, 0),
        lambda: bob.redis.evalsha(bob.redis.script_load(endless), 0),
        lambda: bob.redis.function_load(
            f"#!lua name=spin\nredis.register_function('s', function() {endless} end)"
        ),
        lambda: bob.redis.function_delete("mas"),
    ]
    for attempt in attempts:
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()

    assert redis_client.ping()  # nobody got BUSY
