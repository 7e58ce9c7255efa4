"""Audit trails kept by the control plane, against real sidecars and a real server: checkpoints
round after round, archive-then-trim past a retention, verification across the archive, and
cross-verification of what senders sent against what receivers received.

The rules of cross-verification themselves (in flight, missing, not checked, ...) are tested
as the pure function they are at the end."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import test_attacks
from test_attacks import ALICE_ASKS_BOB, World

from mas_cli.audit_cross import Record, Trail, cross_check, records
from mas_cli.audit_trails import Evidence, cross_verify, verify_trail
from mas_control.audit_keeper import Kept, Limits, cut_batch, keep_trail, trail_heads
from mas_control.audit_rounds import TrailRounds
from mas_core.audit.archive import read_segments, trail_directory
from mas_core.audit.chain import F_EVENT, F_REPLICA, F_SEQ
from mas_core.audit.checkpoints import parse_checkpoint
from mas_core.envelope import ENTRY_FIELD
from mas_core.identity.credentials import new_anchor
from mas_core.ids import new_id
from mas_core.keys import AgentKeys, audit_checkpoint, audit_keeper
from mas_core.policy.document import AuditRetention

world = test_attacks.world  # the fixture: sidecars as their agents' own users, attackers
ALICE, BOB = AgentKeys("default/alice"), AgentKeys("default/bob")
SMALL = Limits(segment=5, batch=3)  # cuts of at least 3 entries, segments of at most 5


async def exchange(world: World, count: int) -> None:
    """Alice asks bob ``count`` questions, bob takes each (sidecars started once)."""
    if not world.apis:
        world.policy(**ALICE_ASKS_BOB)
        world.start("default/alice")
        world.start("default/bob")
    alice, bob = world.apis["default/alice"], world.apis["default/bob"]
    for n in range(count):
        await alice.send("bob", "question", {"n": n})
    await bob.collect(count)


def keep(
    world: World,
    agent_id: str,
    archive: Path | None = None,
    retention: AuditRetention | None = None,
    **options: Any,
) -> Kept:
    kept = keep_trail(
        world.admin,
        agent_id,
        world.identities.anchor,
        retention=retention,
        archive=archive,
        limits=SMALL,
        **options,
    )
    assert kept.problem is None, kept.problem
    return kept


def verified(world: World, agent_id: str, archive: Path | None = None) -> tuple[bool, str]:
    out = io.StringIO()
    anchor = world.identities.anchor
    evidence = Evidence({anchor.kid: anchor.public_key}, archive)
    return verify_trail(world.admin, agent_id, out, evidence), out.getvalue()


def crossed(world: World, agent_id: str, archive: Path | None = None) -> tuple[bool, str]:
    out = io.StringIO()
    return cross_verify(world.admin, agent_id, out, Evidence(archive=archive)), out.getvalue()


async def test_a_trails_head_moves_when_an_entry_is_added_and_only_then(world: World) -> None:
    # mas up passes over a trail whose head did not move since its last round.
    await exchange(world, 1)
    ids = ["default/alice", "default/nobody"]
    first = trail_heads(world.admin, ids)
    assert first["default/alice"] is not None
    assert first["default/nobody"] is None

    keep(world, "default/alice")  # a round adds nothing to the trail
    assert trail_heads(world.admin, ids) == first
    await exchange(world, 1)
    assert trail_heads(world.admin, ids)["default/alice"] != first["default/alice"]


def commands_of_rounds(world: World, rounds: TrailRounds, agent_ids: list[str]) -> Counter[str]:
    """One round of ``rounds`` over every trail of ``agent_ids``, and the commands the server
    counted for it (``INFO commandstats``; nothing else talks to the server meanwhile)."""
    world.admin.config_resetstat()
    for agent_id in agent_ids:
        assert (
            rounds.keep(
                world.admin, agent_id, world.identities.anchor, retention=None, archive=None
            ).problem
            is None
        )
    counted: Counter[str] = Counter()
    for name, values in world.admin.info("commandstats").items():
        if name.removeprefix("cmdstat_") not in ("info", "config|resetstat"):
            counted[name.removeprefix("cmdstat_")] = values["calls"]
    return counted


async def test_rounds_pass_over_idle_trails_for_one_command_each_whatever_their_number(
    world: World,
) -> None:
    # The operator's timer runs a round per Agent; over a trail nothing was added to, a round
    # costs one command, however many agents idle; with every=3, rounds 1, 4, 7, ... are full.
    await exchange(world, 3)
    for sidecar in world.sidecars.started:
        sidecar.stop()  # from here on, only the rounds talk to the server
    rounds = TrailRounds(every=3)
    trails = ["default/alice", "default/bob"]
    idle = [*trails, *(f"default/idle-{n}" for n in range(20))]  # 20 with no trail yet

    full = commands_of_rounds(world, rounds, idle)
    passed = [commands_of_rounds(world, rounds, idle) for _ in range(2)]
    fourth = commands_of_rounds(world, rounds, idle)

    assert full["xinfo|stream"] == 2 and full.total() >= 4 * len(idle)
    assert passed == [Counter({"xrevrange": len(idle)})] * 2
    assert fourth["xinfo|stream"] == 2 and fourth["xrevrange"] == len(idle)  # full again


async def test_a_trail_that_grew_gets_a_full_round_at_once(world: World) -> None:
    await exchange(world, 2)
    rounds = TrailRounds()
    first = rounds.keep(
        world.admin, "default/alice", world.identities.anchor, retention=None, archive=None
    )
    await exchange(world, 1)

    grown = rounds.keep(
        world.admin, "default/alice", world.identities.anchor, retention=None, archive=None
    )

    assert first.checkpoint is not None and grown.checkpoint is not None
    assert (first.checkpoint.head.total, grown.checkpoint.head.total) == (2, 3)


async def test_the_keeper_follows_a_trail_checkpoint_after_checkpoint(world: World) -> None:
    await exchange(world, 2)
    first = keep(world, "default/alice").checkpoint
    await exchange(world, 3)
    second = keep(world, "default/alice").checkpoint
    again = keep(world, "default/alice").checkpoint  # nothing new: nothing written

    assert first is not None and second is not None and again is not None
    assert (first.number, first.head.total) == (1, 2)
    assert (second.number, second.head.total, second.trail) == (2, 5, first.trail)
    assert again == second
    intact, said = verified(world, "default/alice")
    assert intact, said
    assert "checked against checkpoint #2" in said and "signed by anchor" in said


async def test_one_round_at_a_time_keeps_a_trail(world: World) -> None:
    await exchange(world, 2)
    first = keep(world, "default/alice").checkpoint
    await exchange(world, 2)
    world.admin.set(audit_keeper("default/alice"), "another round", px=60_000)

    busy = keep(world, "default/alice").checkpoint
    world.admin.delete(audit_keeper("default/alice"))
    after = keep(world, "default/alice").checkpoint

    assert first is not None and busy == first
    assert after is not None and (after.number, after.head.total) == (2, 4)
    assert not world.admin.exists(audit_keeper("default/alice"))  # a round lets go


async def test_a_new_anchor_signs_the_checkpoint_again_at_its_first_round(world: World) -> None:
    await exchange(world, 1)
    keep(world, "default/alice")
    successor = new_anchor()  # mas up has a new one every run

    kept = keep_trail(world.admin, "default/alice", successor, retention=None, archive=None)
    stored = world.admin.get(audit_checkpoint("default/alice"))

    assert kept.checkpoint is not None and kept.problem is None
    assert parse_checkpoint(stored, {successor.kid: successor.public_key})[0] == kept.checkpoint


async def test_verification_waits_for_a_round_of_the_control_plane(world: World) -> None:
    await exchange(world, 1)
    keep(world, "default/alice")
    world.admin.set(audit_keeper("default/alice"), "a round at work", px=300)

    intact, said = verified(world, "default/alice")  # not while a cut could be under way

    assert intact, said
    assert not world.admin.exists(audit_keeper("default/alice"))


async def test_past_its_retention_a_trail_is_archived_trimmed_and_verified_across(
    world: World, tmp_path: Path
) -> None:
    await exchange(world, 12)
    kept = keep(world, "default/alice", tmp_path, AuditRetention(entries=4))
    assert kept.checkpoint is not None
    directory = trail_directory(tmp_path, "default/alice", kept.checkpoint.trail)

    assert (kept.archived, world.admin.xlen(ALICE.audit)) == (8, 4)
    assert [len(list(s.entries())) for s in read_segments(directory)] == [5, 3]
    intact, said = verified(world, "default/alice")
    assert intact, said
    assert "its first 8 entries (up to " in said
    intact, said = verified(world, "default/alice", tmp_path)
    assert intact, said
    assert "audit trail of default/alice: 12 entries in 1 chain(s), intact" in said
    assert "the entries before it read from 2 segment(s)" in said

    await exchange(world, 3)  # the next cut continues from the last one
    assert keep(world, "default/alice", tmp_path, AuditRetention(entries=4)).archived == 3
    assert verified(world, "default/alice", tmp_path)[0]
    assert "received: matched: 15" in crossed(world, "default/bob", tmp_path)[1]
    without = crossed(world, "default/bob")[1]
    assert "received: not checked (the sender's trail is trimmed past it): 11" in without


async def test_an_archive_altered_or_missing_a_segment_fails_verification(
    world: World, tmp_path: Path
) -> None:
    await exchange(world, 12)
    checkpoint = keep(world, "default/alice", tmp_path, AuditRetention(entries=2)).checkpoint
    assert checkpoint is not None
    first, second = read_segments(trail_directory(tmp_path, "default/alice", checkpoint.trail))
    lines = first.path.read_bytes().splitlines()
    entry = orjson.loads(lines[1])
    entry["event"]["to"] = "default/mallory"
    first.path.write_bytes(b"\n".join([lines[0], orjson.dumps(entry), *lines[2:], b""]))

    altered = verified(world, "default/alice", tmp_path)[1]
    second.path.unlink()
    missing = verified(world, "default/alice", tmp_path)[1]

    assert "altered: its content does not match its hash" in altered
    assert "entries below it were removed" in missing
    assert verified(world, "default/alice")[0]  # what Redis holds is still intact


async def test_retention_by_age_archives_what_is_older(world: World, tmp_path: Path) -> None:
    await exchange(world, 4)
    checkpoint = keep(world, "default/alice").checkpoint
    assert checkpoint is not None
    recent = keep(world, "default/alice", tmp_path, AuditRetention(seconds=3600))
    later = checkpoint.taken_at_ms + 3_601_000

    aged = keep(world, "default/alice", tmp_path, AuditRetention(seconds=3600), now_ms=later)

    assert recent.archived == 0
    assert (aged.archived, world.admin.xlen(ALICE.audit)) == (4, 0)
    assert verified(world, "default/alice", tmp_path)[0]


async def test_cross_verification_matches_what_was_sent_with_what_was_received(
    world: World,
) -> None:
    await exchange(world, 3)
    world.apis["default/bob"].sidecar.stop()  # nothing reads bob's inbox now
    await world.apis["default/alice"].send("bob", "question", {"n": "unread"})

    consistent, said = crossed(world, "default/alice")
    received = crossed(world, "default/bob")

    assert consistent, said
    assert "sent: matched: 3" in said
    assert "sent: in flight (the receiver read nothing later from it): 1" in said
    assert received[0] and "received: matched: 3" in received[1]


async def test_cross_verification_finds_a_message_written_around_the_senders_trail(
    world: World,
) -> None:
    await exchange(world, 1)
    alice = world.compromise("default/alice")
    forged = alice.envelope("default/bob", "question", {"n": "unaudited"})
    alice.send("default/bob", forged)  # signed with alice's own key: bob accepts it
    await world.apis["default/bob"].collect(1)

    consistent, said = crossed(world, "default/bob")

    assert not consistent
    assert (
        f"MISMATCH default/bob received {forged.id} from default/alice: the sender's trail "
        "does not record sending it"
    ) in said


async def test_cross_verification_finds_a_message_its_receiver_dropped(world: World) -> None:
    await exchange(world, 1)
    world.apis["default/bob"].sidecar.stop()  # nothing reads bob's inbox meanwhile
    alice = world.apis["default/alice"]
    sent = [await alice.send("bob", "question", {"n": n}) for n in range(3)]
    bob, from_alice = world.compromise("default/bob"), BOB.inbox("default/alice")
    entries = bob.redis.xrange(from_alice)
    dropped = next(i for i, f in entries if orjson.loads(f[ENTRY_FIELD])["id"] == sent[1])
    bob.redis.xdel(from_alice, dropped)  # its own Redis user may delete from its own streams
    await world.start("default/bob").collect(2)

    consistent, said = crossed(world, "default/alice")

    assert not consistent
    assert f"sent {sent[1]} (" in said
    assert "to default/bob: missing at the receiver, which recorded later messages" in said
    assert "sent: matched: 3" in said


# -- the rules, as a pure function ---------------------------------------------------------------


def record(message_id: str, decision: str, seq: int, **fields: Any) -> Record:
    values: dict[str, Any] = {
        "sender": "ns/a", "target": "ns/b", "digest": "d", "reply": False,
        "entry": (seq * 10, 0), "replica": "a-0",
    }  # fmt: skip
    values.update(fields)
    return Record(message_id=message_id, decision=decision, seq=seq, **values)


def test_a_sent_message_is_matched_refused_dead_lettered_in_flight_or_missing() -> None:
    sent = [record(f"m{n}", "accepted", n) for n in range(1, 8)]
    sent[5] = record("m6", "accepted", 6, reply=True)
    at_b = [
        record("m1", "received", 1, replica="b-0"),
        record("m2", "refused_on_receive", 2),
        record("m4", "received", 3, digest="other"),
        record("m5", "received", 4),
    ]

    report = cross_check("ns/a", Trail(sent), {"ns/b": Trail(at_b, dead_letters=frozenset({"m3"}))})

    assert report.mismatches == [
        "ns/a sent m4 (a-0 #4) to ns/b: the receiver recorded another payload digest"
    ]
    assert dict(report.counts) == {
        "sent: matched": 2,
        "sent: refused by the receiver": 1,
        "sent: dead-lettered by the receiver": 1,
        "sent: reply unconfirmed (its request may have timed out)": 1,
        "sent: in flight (the receiver read nothing later from it)": 1,
    }
    dropped = cross_check("ns/a", Trail(sent), {"ns/b": Trail([at_b[0], at_b[3]])})
    assert dropped.mismatches[0] == (
        "ns/a sent m2 (a-0 #2) to ns/b: missing at the receiver, which recorded later messages "
        "of that replica"
    )


def test_what_a_trimmed_trail_no_longer_holds_is_not_checked() -> None:
    old, fresh = new_id(1_000_000), new_id(10_000_000)
    received = [
        record(old, "received", 1, sender="ns/b", target="ns/a"),
        record(fresh, "received", 2, sender="ns/b", target="ns/a"),
    ]
    sent = [record("m1", "accepted", 1)]
    peers = {"ns/b": Trail([], begins_after=(1_000_000, 0))}

    report = cross_check("ns/a", Trail(received + sent), peers)

    assert dict(report.counts) == {
        "received: not checked (the sender's trail is trimmed past it)": 1,
        "sent: not checked (the receiver's trail is trimmed past it)": 1,
    }
    assert report.mismatches == [
        f"ns/a received {fresh} from ns/b: the sender's trail does not record sending it"
    ]


def test_records_are_read_from_audit_entries() -> None:
    receipt = {"decision": "received", "to": "ns/b", "messages": [
        {"message_id": "m1", "from": "ns/a", "type": "t", "payload_sha256": "d", "reply": True},
        {"message_id": "m2", "from": "ns/c", "type": "t", "payload_sha256": "d"},
    ]}  # fmt: skip
    sent = {"decision": "accepted", "message_id": "m3", "from": "ns/b", "to": "ns/a",
            "payload_sha256": "d"}  # fmt: skip
    entries = [
        (b"5-1", {F_EVENT: orjson.dumps(receipt), F_REPLICA: b"b-0", F_SEQ: b"7"}),
        (b"5-2", {F_EVENT: b'{"decision": "metadata_published"}', F_REPLICA: b"b-0", F_SEQ: b"8"}),
        (b"5-3", {F_EVENT: orjson.dumps(sent), F_REPLICA: b"b-0", F_SEQ: b"9"}),
        (b"5-4", {F_EVENT: b"not json", F_REPLICA: b"b-0", F_SEQ: b"10"}),
    ]

    found = records(entries)

    assert found == [
        record("m1", "received", 7, target="ns/b", replica="b-0", reply=True, entry=(5, 1)),
        record("m2", "received", 7, sender="ns/c", target="ns/b", replica="b-0", entry=(5, 1)),
        record("m3", "accepted", 9, sender="ns/b", target="ns/a", replica="b-0", entry=(5, 3)),
    ]


def test_a_cut_takes_a_tenth_of_a_retention_in_entries_at_most_a_full_batch() -> None:
    assert cut_batch(AuditRetention(entries=50_000), Limits()) == 1_000
    assert cut_batch(AuditRetention(entries=200, seconds=60), Limits()) == 20
    assert cut_batch(AuditRetention(entries=5), Limits()) == 1
    assert cut_batch(AuditRetention(seconds=60), Limits()) == 1_000
