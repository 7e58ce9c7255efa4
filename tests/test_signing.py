"""Identity and signing between real sidecars: forged, altered, expired, wrong-agent and
replayed messages are refused by the receiver, dead-lettered with the reason, and audited; a
sender whose own token expired sends nothing until renewed; and a dead letter is replayed only
if it still authenticates."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis
from api import Api
from conftest import Sidecars
from policies import publish
from streams import append_as
from waiting import eventually

from mas_cli.local.processes import ProcessStartError, SidecarProcess
from mas_core.envelope import Envelope
from mas_core.identity.credentials import Anchor, create_anchor, issue_agent_credentials
from mas_core.identity.tokens import (
    generate_private_key,
    issue_token,
    load_private_key_pem,
    sign_envelope,
)
from mas_core.keys import AgentKeys

BOB = AgentKeys("default/bob")
ALICE = "default/alice"
SIGNED = {"rules": [{"name": "all", "action": "allow"}], "signing": {"required": True}}


class Identities:
    """A trust anchor and the credential directories it issued."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.anchor: Anchor = create_anchor(root / "anchor")

    def issue(self, agent_id: str, ttl_seconds: int = 600, now: float | None = None) -> Path:
        """Write (or renew) the agent's credentials; its key stays the same."""
        directory = self.root / agent_id.replace("/", "_")
        issue_agent_credentials(
            self.anchor, directory, agent_id=agent_id, ttl_seconds=ttl_seconds, now=now
        )
        return directory


@pytest.fixture
def identities(tmp_path: Path, redis_client: redis.Redis) -> Identities:
    publish(redis_client, **SIGNED)
    return Identities(tmp_path / "identity")


def signed_sidecar(sidecars: Sidecars, identities: Identities, agent_id: str) -> SidecarProcess:
    directory = identities.issue(agent_id)
    return sidecars.start(agent_id, MAS_CREDENTIALS_DIR=str(directory))


def inbox_envelopes(client: redis.Redis) -> list[tuple[bytes, dict[str, object]]]:
    return [(entry_id, orjson.loads(f[b"e"])) for entry_id, f in client.xrange(BOB.inbox(ALICE))]


def refusals(client: redis.Redis) -> list[str]:
    """The reasons alice's audit trail gives for what it refused on receive, in order."""
    audit = [orjson.loads(f[b"e"]) for _, f in client.xrange(AgentKeys(ALICE).audit)]
    return [e["reason"] for e in audit if e["decision"] == "refused_on_receive"]


async def dead_letter_reasons(api: Api, count: int) -> list[str]:
    """The reasons of the dead letters, once there are ``count`` of them."""

    async def reasons() -> list[str] | None:
        found = [dead["reason"] for dead in await api.dead_letters()]
        return found if len(found) >= count else None

    found: list[str] = await eventually(reasons, f"{count} dead letters")
    return found


async def test_a_signed_message_carries_its_signature_and_token_and_is_delivered(
    sidecars: Sidecars, http: aiohttp.ClientSession, identities: Identities,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    alice = Api(http, signed_sidecar(sidecars, identities, "default/alice"))
    bob = Api(http, signed_sidecar(sidecars, identities, "default/bob"))
    await alice.send("bob", "hello", {"n": 1})

    [(_, stored)] = inbox_envelopes(redis_client)
    [delivery] = await bob.collect(1)

    assert stored["signature"] and stored["token"]
    assert delivery["payload"] == {"n": 1}


async def test_tampered_forged_and_replayed_messages_are_refused_by_the_receiver(
    sidecars: Sidecars, http: aiohttp.ClientSession, identities: Identities,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    alice = Api(http, signed_sidecar(sidecars, identities, "default/alice"))
    mallory_dir = identities.issue("default/mallory")
    bob_sidecar = signed_sidecar(sidecars, identities, "default/bob")
    bob = Api(http, bob_sidecar)
    for n in range(3):
        await alice.send("bob", "hello", {"n": n})
    (_, first), (second_id, second), (third_id, third) = inbox_envelopes(redis_client)
    redis_client.xdel(BOB.inbox(ALICE), second_id, third_id)

    altered = second | {"payload": {"n": 1000}}
    forged = third | {"signature": third["signature"][:-4] + "AAAA"}
    mallory_token = (mallory_dir / "token").read_text().strip()
    impostor = first | {"id": "01IMPOSTOR000000000000000", "token": mallory_token}
    for envelope in (altered, forged, impostor):
        redis_client.xadd(BOB.inbox(ALICE), {"e": orjson.dumps(envelope)})

    [delivered] = await bob.collect(1)
    redis_client.xadd(BOB.inbox(ALICE), {"e": orjson.dumps(first)})  # replay of a delivered message
    reasons = await dead_letter_reasons(bob, 4)

    assert delivered["payload"] == {"n": 0}
    assert reasons[0].startswith("unauthenticated: ") and "does not verify" in reasons[0]
    assert reasons[1].startswith("unauthenticated: ") and "does not verify" in reasons[1]
    assert "default/mallory" in reasons[2] and "claims sender 'default/alice'" in reasons[2]
    assert reasons[3].startswith("replay: duplicate")
    audit = [orjson.loads(f[b"e"]) for _, f in redis_client.xrange(BOB.audit)]
    refused = [e["message_id"] for e in audit if e["decision"] == "refused_on_receive"]
    received = [
        m["message_id"] for e in audit if e["decision"] == "received" for m in e["messages"]
    ]
    assert refused == [altered["id"], forged["id"], impostor["id"], first["id"]]  # last: a replay
    assert received == [first["id"]]


async def test_an_expired_token_and_an_unsigned_message_are_refused(
    sidecars: Sidecars, http: aiohttp.ClientSession, identities: Identities,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    bob = Api(http, signed_sidecar(sidecars, identities, "default/bob"))
    sidecars.start("default/alice")
    key = generate_private_key()
    expired = issue_token(
        identities.anchor.private_key, agent_id="default/alice", roles=[], capabilities=[],
        agent_public_key=key.verify_key, ttl_seconds=60, now=time.time() - 3600,
    )  # fmt: skip
    now = int(time.time() * 1000)
    base = Envelope(id="01EXPIRED0000000000000000", sender="default/alice",
                    target="default/bob", type="hello", created_at=now)  # fmt: skip
    append_as(redis_client, ALICE, BOB.agent_id, sign_envelope(base, key, expired).to_entry())
    unsigned = base.model_copy(update={"id": "01UNSIGNED000000000000000"})
    append_as(redis_client, ALICE, BOB.agent_id, unsigned.to_entry())

    consumer = asyncio.create_task(bob.collect(1))  # subscribed: the inbox is read
    reasons = await dead_letter_reasons(bob, 2)
    consumer.cancel()

    assert "expired" in reasons[0]
    assert "no identity token" in reasons[1]


async def test_without_credentials_a_sidecar_cannot_send_where_signing_is_required(
    sidecars: Sidecars, http: aiohttp.ClientSession, identities: Identities
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    sidecars.start("default/bob")

    status, body = await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"})

    assert (status, body["error"]["code"]) == (503, "credentials_unavailable")


def test_a_sidecar_with_invalid_credentials_refuses_to_start(
    sidecars: Sidecars, identities: Identities
) -> None:
    directory = identities.issue("default/alice")
    (directory / "token").write_text("not-a-token")

    with pytest.raises(ProcessStartError):
        sidecars.start("default/alice", MAS_CREDENTIALS_DIR=str(directory))


async def test_a_request_only_accepts_a_signed_reply_from_the_agent_it_asked(
    sidecars: Sidecars, http: aiohttp.ClientSession, identities: Identities,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    """Only the agent asked writes its reply stream; forged replies must not answer."""
    alice_dir = identities.issue("default/alice")
    alice = Api(
        http, sidecars.start("default/alice", replica="r1", MAS_CREDENTIALS_DIR=str(alice_dir))
    )
    signed_sidecar(sidecars, identities, "default/bob")
    mallory_dir = identities.issue("default/mallory")
    bob_dir = identities.issue("default/bob")
    asking = asyncio.create_task(
        alice.call("POST", "/v1/requests", {"to": "bob", "type": "ask", "payload": {},
                                            "timeout_ms": 10_000})
    )  # fmt: skip
    [(_, request)] = await eventually(lambda: inbox_envelopes(redis_client), "the request")
    replies = AgentKeys("default/alice").replies("r1", "default/bob")

    def reply(sender: str, payload: dict[str, str]) -> Envelope:
        return Envelope(
            id=f"01REPLY{sender[-3:].upper()}{len(payload['who'])}".ljust(26, "0")[:26],
            sender=sender,
            target="default/alice",
            type="answer",
            payload=payload,
            correlation_id=str(request["id"]),
            is_reply=True,
            created_at=int(time.time() * 1000),
        )

    def signed(envelope: Envelope, directory: Path) -> dict[bytes, bytes]:
        key = load_private_key_pem((directory / "agent.key").read_bytes())
        token = (directory / "token").read_text().strip()
        return sign_envelope(envelope, key, token).to_entry()

    # Unsigned, and signed by another agent than the one asked: both refused; in the stream of
    # the agent that was not asked, not even read.
    redis_client.xadd(replies, reply("default/bob", {"who": "forger"}).to_entry())
    mallorys = signed(reply("default/mallory", {"who": "mallory"}), mallory_dir)
    redis_client.xadd(replies, mallorys)
    redis_client.xadd(AgentKeys("default/alice").replies("r1", "default/mallory"), mallorys)
    await eventually(lambda: len(refusals(redis_client)) == 2, "both forged replies refused")
    assert not asking.done(), "no forged reply answers the request"
    redis_client.xadd(replies, signed(reply("default/bob", {"who": "bob"}), bob_dir))
    status, answer = await asking
    assert status == 200
    assert answer["payload"] == {"who": "bob"}
    refused = refusals(redis_client)
    assert len(refused) == 2 and refused[0].startswith("unauthenticated: ")
    assert refused[1] == "misaddressed: from default/mallory in the stream of default/bob"


async def test_a_sidecar_whose_token_expired_sends_nothing_and_is_not_ready_until_renewed(
    sidecars: Sidecars, http: aiohttp.ClientSession, identities: Identities,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    alice_dir = identities.issue("default/alice")
    alice_sidecar = sidecars.start("default/alice", MAS_CREDENTIALS_DIR=str(alice_dir))
    alice = Api(http, alice_sidecar)
    bob = Api(http, signed_sidecar(sidecars, identities, "default/bob"))
    await bob.send("alice", "question")
    [question] = await alice.collect(1, ack=False)  # alice will answer it once expired
    identities.issue("default/alice", ttl_seconds=60, now=time.time() - 3600)
    log = alice_sidecar.log_path
    assert log is not None
    await eventually(lambda: "has expired" in log.read_text(), "the expired token loaded")

    ready = await alice.call("GET", "/readyz")
    async with http.post(
        alice.base_url + "/v1/messages", json={"to": "bob", "type": "x"}, headers=alice.headers
    ) as sent:
        single = (sent.status, await sent.json(), sent.headers.get("Retry-After"))
    batch = await alice.call(
        "POST", "/v1/messages/batch", {"messages": [{"to": "bob", "type": "a"}] * 2}
    )
    request = await alice.call("POST", "/v1/requests", {"to": "bob", "type": "ask"})
    reply = await alice.call("POST", f"/v1/deliveries/{question['id']}/reply", {"type": "answer"})

    status, body, retry_after = single
    assert status == 503, body  # not accepted only to be dead-lettered by every receiver
    assert (body["error"]["code"], retry_after) == ("credentials_expired", "1")
    assert ready[0] == 503 and ready[1]["error"]["code"] == "credentials_expired"
    assert "identity token of default/alice expired" in ready[1]["error"]["message"]
    assert "nothing is sent until renewed credentials" in body["error"]["message"]
    assert [r["status"] for r in batch[1]["results"]] == [503, 503]
    assert {r["error"]["code"] for r in batch[1]["results"]} == {"credentials_expired"}
    for status, body in (request, reply):
        assert (status, body["error"]["code"]) == (503, "credentials_expired")
    assert redis_client.xlen(BOB.inbox(ALICE)) == 0  # nothing was written for bob to dead-letter
    audit = redis_client.xrange(AgentKeys("default/alice").audit)
    decisions = [orjson.loads(fields[b"e"])["decision"] for _, fields in audit]
    assert decisions.count("credentials_expired") == 5

    identities.issue("default/alice")  # renewed

    async def ready_again() -> bool:
        return (await alice.call("GET", "/readyz"))[0] == 200

    await eventually(ready_again, "the renewed token loaded")
    await alice.send("bob", "after-renewal")
    [delivered] = await bob.collect(1)
    assert delivered["type"] == "after-renewal"
    assert await bob.dead_letters() == []


async def test_a_dead_letter_that_still_authenticates_is_replayed_and_delivered(
    sidecars: Sidecars, http: aiohttp.ClientSession, identities: Identities
) -> None:
    alice = Api(http, signed_sidecar(sidecars, identities, "default/alice"))
    bob = Api(http, signed_sidecar(sidecars, identities, "default/bob"))
    message_id = await alice.send("bob", "job", {"n": 1})
    [delivery] = await bob.collect(1, ack=False)
    assert await bob.answer(delivery["id"], "reject", {"reason": "not now"}) == 204
    [dead] = await eventually(bob.dead_letters, "the rejected message dead-lettered")

    status, body = await bob.call("POST", f"/v1/dead-letters/{dead['id']}/replay")
    [again] = await bob.collect(1)

    assert (status, body["id"]) == (202, message_id)
    assert (again["id"], again["payload"]) == (message_id, {"n": 1})
    assert await bob.dead_letters() == []


async def test_a_dead_letter_that_no_longer_authenticates_is_kept_and_its_sender_must_resend(
    sidecars: Sidecars, http: aiohttp.ClientSession, identities: Identities,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    """A message signed with an expired token (what a sender wrote before it refused to) is
    dead-lettered by the receiver; renewing the sender's credentials cannot fix the token the
    stored envelope carries, and the receiver cannot sign for the sender."""
    bob = Api(http, signed_sidecar(sidecars, identities, "default/bob"))
    alice_dir = identities.issue("default/alice")
    alice = Api(http, sidecars.start("default/alice", MAS_CREDENTIALS_DIR=str(alice_dir)))
    key = load_private_key_pem((alice_dir / "agent.key").read_bytes())
    expired = issue_token(
        identities.anchor.private_key, agent_id="default/alice", roles=[], capabilities=[],
        agent_public_key=key.verify_key, ttl_seconds=60, now=time.time() - 3600,
    )  # fmt: skip
    stale = Envelope(id="01STALE000000000000000000", sender="default/alice",
                     target="default/bob", type="hello", payload={"n": 1},
                     created_at=int(time.time() * 1000))  # fmt: skip
    entry = sign_envelope(stale, key, expired).to_entry()
    append_as(redis_client, ALICE, "default/bob", entry)  # as alice's sidecar would have
    consumer = asyncio.create_task(bob.collect(1))  # subscribed: the inbox is read
    [reason] = await dead_letter_reasons(bob, 1)
    [dead] = await bob.dead_letters()

    status, body = await bob.call("POST", f"/v1/dead-letters/{dead['id']}/replay")
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", "import sys; from mas_cli.main import main; sys.exit(main())",
         "dead-letters", "replay", dead["id"], "--sidecar", bob.base_url],
        env={**os.environ, "MAS_SIDECAR_TOKEN": bob.token},  # as the agent's environment has it
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    kept = await bob.dead_letters()
    await alice.send("bob", "hello", {"n": 1})  # the sender sends it again
    delivered = await consumer

    assert "expired" in reason
    assert (status, body["error"]["code"]) == (409, "dead_letter_unauthenticated")
    message = body["error"]["message"]
    assert "expired" in message and "default/alice must send the message again" in message
    assert cli.returncode == 1 and "dead_letter_unauthenticated" in cli.stderr
    assert kept == [dead]  # kept as it was, not requeued and dead-lettered again
    assert [d["payload"] for d in delivered] == [{"n": 1}]
    assert delivered[0]["id"] != stale.id


async def test_a_dead_letter_is_not_replayed_before_a_gateway_policy_is_loaded(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    redis_client.flushall()  # no policy published: nothing could be judged
    bob = Api(http, sidecars.start("default/bob"))
    envelope = Envelope(
        id="01NOPOLICY000000000000000", sender="default/alice", target="default/bob",
        type="hello", created_at=int(time.time() * 1000),
    )  # fmt: skip
    dead_id = redis_client.xadd(BOB.dlq, {**envelope.to_entry(), b"dl:reason": b"rejected: x"})

    status, body = await bob.call("POST", f"/v1/dead-letters/{dead_id.decode()}/replay")

    assert (status, body["error"]["code"]) == (503, "policy_unavailable")
    assert redis_client.xlen(BOB.dlq) == 1 and redis_client.xlen(BOB.inbox(ALICE)) == 0
