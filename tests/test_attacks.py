"""Attacks by a compromised agent: its process, its sidecar, the sidecar's keys and Redis user.

Each test plays the attacker against real sidecars on a real server (the embedded Valkey, or
``MAS_TEST_REDIS_SERVER``) and asserts that what the attacker wrote never reaches the victim as
if it were allowed: it is refused, dead-lettered with the reason and audited, or never accepted.
A :class:`Compromised` agent holds what an attacker who owns a sidecar holds: the agent's
private key and identity token (so it signs anything as that agent) and a Redis client logged
in as the agent's own least-privilege ACL user (so it writes whatever that user may write).
The audit trail's tests play the agent rewriting its own trail with its Redis user, against
the control plane's checkpoints (:mod:`mas_control.audit_keeper`). docs/security.md lists the
guarantees these tests prove.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from api import Api
from conftest import Sidecars
from policies import publish
from streams import append_as
from test_acl import AclUsers
from test_signing import Identities
from waiting import eventually

from mas_cli.audit_trails import Evidence, verify_trail
from mas_cli.main import main
from mas_cli.options import TAMPERED
from mas_control.audit_keeper import Kept, keep_trail
from mas_core.audit.chain import F_REPLICA, GENESIS, START, Chain
from mas_core.audit.checkpoints import parse_checkpoint
from mas_core.envelope import Envelope
from mas_core.identity.credentials import Anchor
from mas_core.identity.tokens import key_id, load_private_key_pem, sign_envelope
from mas_core.ids import new_id
from mas_core.keys import REGISTRY_AGENTS, REGISTRY_LEASES, AgentKeys, audit_checkpoint

ALICE = AgentKeys("default/alice")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Compromised:
    """An agent whose sidecar the attacker owns: its key, its token, its Redis user."""

    def __init__(self, agent_id: str, credentials: Path, client: redis.Redis) -> None:
        self.agent_id = agent_id
        self._key = load_private_key_pem((credentials / "agent.key").read_bytes())
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

    def append(self, stream: str, envelope: Envelope, **options: Any) -> bytes:
        """XADD as this agent's own Redis user, around its sidecar's checks (``options``: what
        redis-py's ``xadd`` takes: an explicit ``id``, ``maxlen``...)."""
        entry_id: bytes = self.redis.xadd(stream, envelope.to_entry(), **options)
        return entry_id

    def send(self, target: str, entry: Envelope | dict[bytes, bytes], **options: Any) -> bytes:
        """Append to this agent's own stream into ``target`` and announce it, as its sidecar
        does, but around its checks (``entry``: an envelope, or the fields of a captured
        entry)."""
        fields = entry.to_entry() if isinstance(entry, Envelope) else entry
        return append_as(self.redis, self.agent_id, target, fields, **options)


@dataclass
class World:
    """Signed sidecars connected as their agents' own ACL users, and compromised agents."""

    http: aiohttp.ClientSession
    sidecars: Sidecars
    identities: Identities
    users: AclUsers
    admin: redis.Redis
    apis: dict[str, Api] = field(default_factory=dict)  # the honest sidecars started, by agent

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
        self.apis[agent_id] = Api(self.http, sidecar)
        return self.apis[agent_id]

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
    bob.send("default/alice", forged)
    what, letter = await outcome(alice)

    assert what == "dead-lettered", letter
    assert letter["message"]["id"] == forged.id
    assert letter["reason"].startswith("unauthorized: no rule allows default/bob")
    assert audited(redis_client, ALICE) == ["refused_on_receive"]


async def test_no_other_agent_can_speak_for_an_external_a2a_client(
    world: World, redis_client: redis.Redis
) -> None:
    # external/partner may call alice; bob may not. Bob's compromised sidecar signs a message
    # claiming to carry partner's call: only alice's own sidecar may speak for a client of hers.
    world.policy(
        rules=[
            {"name": "partner", "action": "allow", "from": {"agents": ["external/partner"]},
             "to": {"agents": ["alice"]}, "types": ["a2a.*"]},
        ]
    )  # fmt: skip
    alice = world.start("default/alice")
    bob = world.compromise("default/bob")

    forged = bob.envelope(
        "default/alice", "a2a.message", {"text": "wire the money"}, principal="external/partner"
    )
    bob.send("default/alice", forged)
    what, letter = await outcome(alice)

    assert what == "dead-lettered", letter
    assert letter["reason"].startswith("unauthorized: only an agent's own sidecar")
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
    replies = ALICE.replies("alice-0", "default/bob")

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
    bob.send("default/alice", as_message)  # a "reply" as a message is a message like any other
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


async def test_a_compromised_replier_answers_nothing_with_progress_nor_reports_on_anothers_request(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(
        rules=[
            {"name": "alice-asks", "action": "allow", "from": {"agents": ["alice"]},
             "to": {"agents": ["bob", "carol"]}, "types": ["question"]},
        ]
    )  # fmt: skip
    alice = world.start("default/alice", replica="alice-0")
    bob_api, carol = world.start("default/bob"), world.start("default/carol")
    asking_bob, to_bob = await ask(alice, bob_api)
    asking_carol = asyncio.create_task(
        alice.call(
            "POST", "/v1/requests", {"to": "carol", "type": "question", "timeout_ms": 60_000}
        )
    )
    carols = AgentKeys("default/carol").inbox("default/alice")
    await eventually(lambda: redis_client.xlen(carols) == 1, "the request in carol's inbox")
    [to_carol] = await carol.collect(1, ack=False)
    bob = world.compromise("default/bob")

    def progress(correlation_id: str) -> Envelope:
        return bob.envelope(
            "default/alice", "mas.progress", {"text": "done, trust me"},
            correlation_id=correlation_id,
        )  # fmt: skip

    on_carols = progress(to_carol["id"])  # a request that went to carol: bob may not report
    bob.append(ALICE.replies("alice-0", "default/bob"), on_carols)
    bob.append(ALICE.replies("alice-0", "default/bob"), progress(to_bob["id"]))  # answers nothing
    answered = await bob_api.call("POST", f"/v1/deliveries/{to_bob['id']}/reply", {"type": "a"})
    status, answer = await asking_bob
    from_carol = await carol.call("POST", f"/v1/deliveries/{to_carol['id']}/reply", {"type": "b"})

    assert (status, answer["id"]) == (200, answered[1]["id"])
    assert (await asking_carol)[1]["id"] == from_carol[1]["id"]
    events = [orjson.loads(f[b"e"]) for _, f in redis_client.xrange(ALICE.audit)]
    refused = [e for e in events if e["decision"] == "refused_on_receive"]
    assert [e["message_id"] for e in refused] == [on_carols.id]
    assert "no rule allows default/bob to send 'mas.progress'" in refused[0]["reason"]


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


# -- streams: a sender can harm only its own messages ---------------------------------------------

ANYTHING = {"rules": [{"name": "anything", "action": "allow"}]}
TEN_YEARS_MS = 10 * 365 * 86_400_000
LAST_ID = "18446744073709551615-18446744073709551615"  # no entry can follow it
NoPermission = redis.exceptions.NoPermissionError


async def dead_letters(api: Api, count: int) -> list[dict[str, Any]] | None:
    """``api``'s dead letters once there are ``count`` of them."""
    letters = await api.dead_letters()
    return letters if len(letters) >= count else None


async def test_a_sender_that_future_dates_its_stream_delays_no_other_senders_message(
    world: World,
) -> None:
    world.policy(**ANYTHING)
    alice, carol = world.start("default/alice"), world.start("default/carol")
    mallory = world.compromise("default/mallory")
    future = f"{now_ms() + TEN_YEARS_MS}-0"
    dated = mallory.envelope("default/alice", "note", {"n": "from the future"})

    with pytest.raises(NoPermission):  # into the stream of another sender: not at all
        mallory.append(ALICE.inbox("default/carol"), dated, id=future)
    mallory.send("default/alice", dated, id=future)  # into its own: every later entry is dated
    later = mallory.envelope("default/alice", "note", {"n": "after"})
    mallory.send("default/alice", later)
    sent = [await carol.send("alice", "note", {"n": n}) for n in range(3)]
    delivered = await alice.collect(3)

    assert [d["id"] for d in delivered] == sent
    dead = await eventually(lambda: dead_letters(alice, 2), "mallory's two entries dead-lettered")
    assert {d["message"]["id"] for d in dead} == {dated.id, later.id}  # its own messages only
    assert {d["sender"] for d in dead} == {"default/mallory"}
    assert all(d["reason"].startswith("unauthenticated: ") for d in dead)  # a token 10 y old


async def test_a_sender_can_trim_or_expire_no_stream_but_its_own(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(**ANYTHING)
    alice = world.start("default/alice")  # not subscribed yet: what is sent waits for it
    carol = world.start("default/carol")
    mallory = world.compromise("default/mallory")
    sent = [await carol.send("alice", "note", {"n": n}) for n in range(3)]
    mallory.send("default/alice", mallory.envelope("default/alice", "note"))
    carols, own = ALICE.inbox("default/carol"), ALICE.inbox("default/mallory")
    filler = mallory.envelope("default/alice", "filler")

    attacks = [
        lambda: mallory.append(carols, filler, maxlen=0, approximate=False),
        lambda: mallory.append(carols, filler, minid="18446744073709551615"),
        lambda: mallory.redis.xtrim(carols, maxlen=0, approximate=False),
        lambda: mallory.redis.xdel(carols, "0-1"),
        lambda: mallory.redis.pexpire(carols, 1),
        lambda: mallory.redis.delete(carols),
        lambda: mallory.redis.pexpire(ALICE.senders, 1),
        lambda: mallory.redis.pexpire(own, 1),
    ]
    for attack in attacks:
        with pytest.raises(NoPermission):
            attack()
    mallory.append(own, filler, maxlen=0, approximate=False)  # its own stream: its own loss
    delivered = await alice.collect(3)

    assert [d["id"] for d in delivered] == sent
    assert redis_client.xlen(own) == 0
    assert await alice.dead_letters() == []


async def test_a_replier_can_neither_drop_nor_answer_another_agents_reply_in_flight(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(**ALICE_ASKS_BOB)
    alice, bob = world.start("default/alice", replica="alice-0"), world.start("default/bob")
    asking, delivery = await ask(alice, bob)
    mallory = world.compromise("default/mallory")
    bobs = ALICE.replies("alice-0", "default/bob")
    forged = mallory.envelope(
        "default/alice", "answer", is_reply=True, correlation_id=delivery["id"]
    )

    attacks = [
        lambda: mallory.redis.pexpire(bobs, 1),
        lambda: mallory.append(bobs, forged),
        lambda: mallory.append(bobs, forged, maxlen=0, approximate=False),
        lambda: mallory.redis.xtrim(bobs, maxlen=0, approximate=False),
        lambda: mallory.redis.delete(bobs),
        lambda: mallory.redis.pexpire(ALICE.replies("alice-0", "default/mallory"), 1),
        lambda: mallory.redis.xadd(ALICE.reply_bell("alice-0"), {"n": "1"}),
    ]
    for attack in attacks:
        with pytest.raises(NoPermission):
            attack()
    assert redis_client.pttl(bobs) > 0  # the requester set its expiry; nobody else may
    answered = await bob.call("POST", f"/v1/deliveries/{delivery['id']}/reply", {"type": "a"})
    status, reply = await asking

    assert (status, reply["id"], reply["from"]) == (200, answered[1]["id"], "default/bob")


async def test_another_agents_envelope_re_injected_through_the_attackers_stream_is_refused(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(**ANYTHING)
    alice = world.start("default/alice")  # not subscribed: the original is not read yet
    carol = world.start("default/carol")
    mallory = world.compromise("default/mallory")
    sent = await carol.send("alice", "transfer", {"amount": 10})
    [(_, captured)] = redis_client.xrange(ALICE.inbox("default/carol"))  # however it got it
    mallory.send("default/alice", captured)
    mallory.send("default/alice", captured)

    [delivered] = await alice.collect(1)
    dead = await eventually(lambda: dead_letters(alice, 2), "both copies dead-lettered")

    assert delivered["id"] == sent
    assert [d["message"]["id"] for d in dead] == [sent, sent]
    assert {d["reason"] for d in dead} == {
        "misaddressed: from default/carol in the stream of default/mallory"
    }
    assert {d["sender"] for d in dead} == {"default/mallory"}
    received_then_refused = sorted(audited(redis_client, ALICE))  # carol's, then the copies
    assert received_then_refused == ["received", "refused_on_receive", "refused_on_receive"]


async def test_the_mas_functions_let_a_sender_unlist_or_write_no_other_sender(
    world: World, redis_client: redis.Redis
) -> None:
    """The functions a sender may call name the keys it may write; what each runs is checked
    against its own rights, so none unlists, writes or re-records for it another sender."""
    world.policy(**ANYTHING)
    alice = world.start("default/alice")  # not subscribed yet: what is sent waits for it
    carol = world.start("default/carol")
    mallory = world.compromise("default/mallory")
    sent = [await carol.send("alice", "note", {"n": n}) for n in range(3)]
    own, carols = ALICE.inbox("default/mallory"), ALICE.inbox("default/carol")
    guard = (ALICE.dlq, ALICE.seen, ALICE.seen_by_time, ALICE.senders)
    requeue = (sent[0], "0-1", 1, "default/mallory", "in:default/mallory", "e", "x")
    refused = re.compile("perm|can't access", re.I)
    receipt = (ALICE.seen, ALICE.seen_by_time, ALICE.audit, ALICE.audit_heads)
    receipt_args = (1, sent[1], "x 1-1", 1, 1, "1", "r", "1:x", "e", "x")

    attacks = [
        # adopting drops a listed name whose stream (here: its own) does not exist; unlisted,
        # carol's stream would no longer be read
        lambda: mallory.redis.fcall("mas_adopt", 2, ALICE.senders, own, "default/carol"),
        # the batched append into carol's stream, and trimming it
        lambda: mallory.redis.fcall("mas_append", 1, carols, "", 1, 0, "e", "x"),
        lambda: mallory.redis.fcall("mas_append", 1, carols, "", 1, 1, "e", "x"),
        # a requeue as alice's replay guard's entry of record (so a message of carol's would
        # be refused as a replay), and the guard's check and record
        lambda: mallory.redis.fcall("mas_seen_requeue", 5, own, *guard, *requeue),
        lambda: mallory.redis.fcall(
            "mas_seen_check", 2, ALICE.seen, ALICE.seen_by_time, sent[1], "x 1-1", 1, 1, "1"
        ),
        # the same with a receipt appended to alice's trail
        lambda: mallory.redis.fcall("mas_seen_receipt", 4, *receipt, *receipt_args),
    ]
    for attack in attacks:
        with pytest.raises(redis.exceptions.ResponseError, match=refused):
            attack()
    delivered = await alice.collect(3)

    assert [d["id"] for d in delivered] == sent
    assert b"default/carol" in redis_client.smembers(ALICE.senders)
    records = redis_client.hmget(ALICE.seen, sent)  # each message's entry of record: carol's
    assert all(record.startswith(b"in:default/carol ") for record in records), records
    assert await alice.dead_letters() == []


async def test_a_trimmed_or_exhausted_ring_and_bogus_senders_delay_a_new_sender_only(
    world: World, redis_client: redis.Redis
) -> None:
    world.policy(**ANYTHING)
    alice = world.start("default/alice")
    mallory = world.compromise("default/mallory")
    mallory.redis.xadd(ALICE.ring, {"n": "1"}, maxlen=0, approximate=False)  # trimmed
    mallory.redis.xadd(ALICE.ring, {"n": "1"}, id=LAST_ID)  # and no entry can follow
    bogus = ["not an agent", "default/ghost", "*", "default/alice}:in:default/x"]
    mallory.redis.sadd(ALICE.senders, *bogus)
    carol = world.start("default/carol")  # a sender alice has never heard of

    sent = [await carol.send("alice", "note", {"n": n}) for n in range(3)]  # all accepted
    delivered = await alice.collect(3)  # found by the replicas' periodic look at the set

    assert [d["id"] for d in delivered] == sent
    await eventually(
        lambda: redis_client.smembers(ALICE.senders) == {b"default/carol"}, "bogus names dropped"
    )
    assert not redis_client.exists(ALICE.inbox("default/ghost"))
    assert await alice.dead_letters() == []


# -- the audit trail: tamper-evident against its own agent ----------------------------------------


async def an_audited_exchange(world: World, count: int = 3) -> None:
    """Alice asks bob ``count`` questions, bob takes each: entries in both trails."""
    world.policy(**ALICE_ASKS_BOB)
    alice, bob = world.start("default/alice"), world.start("default/bob")
    for n in range(count):
        await alice.send("bob", "question", {"n": n})
    await bob.collect(count)


def checkpoint(world: World, agent_id: str) -> Kept:
    """A round of the control plane's audit keeper (no retention)."""
    return keep_trail(world.admin, agent_id, world.identities.anchor, retention=None, archive=None)


def verdict(world: World, agent_id: str) -> tuple[bool, str]:
    """``mas audit verify`` with the anchor's public key: intact?, and what it says."""
    out = io.StringIO()
    anchor = world.identities.anchor
    intact = verify_trail(world.admin, agent_id, out, Evidence({anchor.kid: anchor.public_key}))
    return intact, out.getvalue()


def trim_everything(attacker: Compromised, keys: AgentKeys) -> list[bytes]:
    """What an agent's own Redis user can do to its trail: trim it to nothing (an XADD with
    MAXLEN 0) and set every chain head back to the start; the replicas whose heads it reset
    (named in its entries)."""
    replicas = list(dict.fromkeys(f[F_REPLICA] for _, f in attacker.redis.xrange(keys.audit)))
    attacker.redis.xadd(keys.audit, {"x": "y"}, maxlen=0, approximate=False)
    for replica in replicas:
        attacker.redis.hset(keys.audit_heads, replica, f"0:{GENESIS}")
    return replicas


async def test_an_agent_that_trims_its_own_trail_is_found(world: World) -> None:
    await an_audited_exchange(world)
    assert checkpoint(world, "default/alice").problem is None
    stored = world.admin.get(audit_checkpoint("default/alice"))

    trim_everything(world.compromise("default/alice"), ALICE)
    intact, said = verdict(world, "default/alice")
    kept = checkpoint(world, "default/alice")

    assert not intact, said
    assert re.search(r"TAMPERED checkpoint #1 \(.*\) counts 3 entries up to entry", said)
    assert "the trail 0: entries below it were removed" in said
    assert re.search(
        r"TAMPERED \d+ entries were removed from the stream, and the control "
        r"plane made no cut",
        said,
    )
    assert kept.problem is not None and "trimmed by someone else" in kept.problem
    assert world.admin.get(audit_checkpoint("default/alice")) == stored  # the evidence stays


async def test_an_agent_that_rewrites_its_own_trail_from_scratch_is_found(
    world: World, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await an_audited_exchange(world)
    checkpoint(world, "default/alice")
    alice = world.compromise("default/alice")

    for replica in trim_everything(alice, ALICE):  # then a fresh chain, as long as the old one
        chain = Chain(replica.decode())
        for n in range(3):
            alice.redis.xadd(ALICE.audit, chain.append({"decision": "nothing", "n": n}))
        alice.redis.hset(ALICE.audit_heads, replica, chain.head_value)
    status = main(
        ["audit", "verify", "default/alice", "--redis-url", redis_url,
         "--trust", str(world.identities.root / "anchor")]
    )  # fmt: skip
    said = capsys.readouterr().out

    assert status == TAMPERED, said
    assert "entries #1..#3, covered by checkpoint #1" in said
    assert re.search(r"\(replica [^,]+, #1\): out of order: comes after #3", said)
    assert "NOT intact" in said
    assert checkpoint(world, "default/alice").problem is not None


async def test_a_trail_trimmed_before_any_checkpoint_is_found_by_the_stream(
    world: World,
) -> None:
    await an_audited_exchange(world)

    trim_everything(world.compromise("default/alice"), ALICE)
    intact, said = verdict(world, "default/alice")

    assert not intact, said
    assert "no checkpoint yet" in said
    assert "the control plane made no cut: the trail was trimmed by someone else" in said
    assert checkpoint(world, "default/alice").problem is not None  # and it will not vouch


async def test_no_agent_reaches_a_checkpoint_and_a_forged_one_is_refused(world: World) -> None:
    await an_audited_exchange(world, count=1)
    checkpoint(world, "default/alice")
    alice = world.compromise("default/alice")
    own, other = audit_checkpoint("default/alice"), audit_checkpoint("default/bob")
    agent_key = load_private_key_pem(
        (world.credentials("default/alice") / "agent.key").read_bytes()
    )
    genuine, _ = parse_checkpoint(world.admin.get(own), None)
    forged = replace(genuine, number=2, head=START).sign(Anchor.of(agent_key))

    attempts = [
        lambda: alice.redis.set(own, forged),
        lambda: alice.redis.get(own),
        lambda: alice.redis.delete(own),
        lambda: alice.redis.set(other, forged),
        lambda: alice.redis.xtrim(ALICE.audit, maxlen=0),
    ]
    for attempt in attempts:
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    world.admin.set(own, forged)  # as if someone with the server's admin rights wrote it
    intact, said = verdict(world, "default/alice")

    assert not intact
    assert f"signed by key {key_id(agent_key.verify_key)}, which is not a trusted anchor" in said
