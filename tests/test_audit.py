"""The audit chain as a pure function: every way of tampering is found, and said where — in
the chains themselves, and against the marks of the control plane's checkpoints; checkpoints
signed and parsed back; the archive's entry format."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from mas_core.audit.archive import (
    entry_document,
    entry_fields,
    read_segments,
    trail_directory,
    write_segment,
)
from mas_core.audit.chain import F_EVENT, START, Chain, Follower, Mark, verify
from mas_core.audit.checkpoints import Checkpoint, CheckpointError, parse_checkpoint
from mas_core.identity.credentials import new_anchor

Entry = tuple[bytes, dict[bytes, bytes]]


def trail(count: int, replica: str = "r-0") -> tuple[list[Entry], dict[bytes, bytes]]:
    chain = Chain(replica)
    entries = [
        (f"{n + 1}-0".encode(), chain.append({"decision": "accepted", "n": n}))
        for n in range(count)
    ]
    return entries, {replica.encode(): chain.head_value.encode()}


def in_stream(entries: list[Entry]) -> list[Entry]:
    """``entries`` with new stream ids, in the order given."""
    return [(f"{n + 1}-0".encode(), fields) for n, (_, fields) in enumerate(entries)]


def mark_after(entries: list[Entry]) -> Mark:
    follower = Follower()
    for entry_id, fields in entries:
        follower.feed(entry_id, fields)
    assert not follower.problems
    return follower.mark()


def test_an_untouched_trail_verifies() -> None:
    entries, heads = trail(5)

    report = verify(entries, heads)

    assert report.ok
    assert (report.entries, report.chains) == (5, 1)


def test_an_altered_event_is_found_with_its_entry() -> None:
    entries, heads = trail(5)
    entry_id, fields = entries[2]
    entries[2] = (entry_id, fields | {F_EVENT: fields[F_EVENT].replace(b"accepted", b"allowed!")})

    report = verify(entries, heads)

    assert report.problems == [
        "entry 3-0 (replica r-0, #3): altered: its content does not match its hash"
    ]


def test_a_removed_entry_is_found() -> None:
    entries, heads = trail(5)
    del entries[1]

    assert verify(entries, heads).problems == [
        "entry 3-0 (replica r-0, #3): entries #2..#2 are missing"
    ]


def test_reordered_entries_are_found() -> None:
    entries, heads = trail(4)
    entries[1], entries[2] = entries[2], entries[1]

    problems = verify(entries, heads).problems

    assert any("out of order" in p for p in problems)


def test_entries_removed_at_the_end_are_found_through_the_chain_head() -> None:
    entries, heads = trail(5)

    problems = verify(entries[:3], heads).problems

    assert problems == ["replica r-0: entries #4..#5 are missing at the end"]


def test_a_replaced_last_entry_is_found_through_the_chain_head() -> None:
    entries, heads = trail(3)
    forged_chain = Chain("r-0")
    forged = [forged_chain.append({"decision": "accepted", "n": n}) for n in (0, 1)]
    forged.append(forged_chain.append({"decision": "nothing to see"}))
    tampered = [(entries[n][0], forged[n]) for n in range(3)]

    assert verify(tampered, heads).problems == ["replica r-0: last entry #3 was replaced"]


def test_each_replica_keeps_its_own_chain() -> None:
    first, first_heads = trail(3, "r-0")
    second, second_heads = trail(2, "r-1")
    interleaved = in_stream([first[0], second[0], first[1], second[1], first[2]])

    report = verify(interleaved, first_heads | second_heads)

    assert report.ok
    assert report.chains == 2


def test_a_chain_resumes_from_its_stored_head() -> None:
    entries, heads = trail(2)
    resumed = Chain.resume("r-0", heads[b"r-0"])
    entries.append((b"3-0", resumed.append({"decision": "after restart"})))

    assert verify(entries, {b"r-0": resumed.head_value.encode()}).ok


# -- against the marks of checkpoints ------------------------------------------------------------


def test_a_trail_that_passes_its_checkpoint_verifies() -> None:
    entries, heads = trail(5)

    report = verify(entries, heads, marks=[("checkpoint #1", mark_after(entries[:3]))])

    assert report.ok


def test_a_trail_truncated_below_its_checkpoint_is_found() -> None:
    entries, _ = trail(5)
    mark = mark_after(entries[:4])
    fresh_heads = {b"r-0": b"1:" + entries[0][1][b"h"]}  # the heads rewritten to match

    problems = verify(entries[:1], fresh_heads, marks=[("checkpoint #1", mark)]).problems

    assert problems == [
        "checkpoint #1 counts 4 entries up to entry 4-0, the trail 1: entries below it were "
        "removed",
        "replica r-0: entries #2..#4, covered by checkpoint #1, are missing",
    ]


def test_a_trail_rechained_below_its_checkpoint_is_found() -> None:
    entries, _ = trail(3)
    mark = mark_after(entries)
    chain = Chain("r-0")  # a fresh chain, as long, with later ids (the old ones were trimmed)
    forged = [(f"{10 + n}-0".encode(), chain.append({"decision": "nothing"})) for n in range(3)]

    problems = verify(
        forged, {b"r-0": chain.head_value.encode()}, marks=[("checkpoint #1", mark)]
    ).problems

    assert problems[:2] == [
        "checkpoint #1 counts 3 entries up to entry 3-0, the trail 0: entries below it were "
        "removed",
        "replica r-0: entries #1..#3, covered by checkpoint #1, are missing",
    ]
    assert "entry 10-0 (replica r-0, #1): out of order: comes after #3" in problems


def test_a_trail_verifies_from_the_cut_of_its_checkpoint() -> None:
    entries, heads = trail(6)
    cut = mark_after(entries[:4])

    assert verify(entries[4:], heads, start=cut).ok
    assert verify(entries[4:], heads, start=cut, removed=4).ok


def test_entries_removed_past_the_cut_are_counted_by_the_stream_itself() -> None:
    entries, heads = trail(6)
    cut = mark_after(entries[:2])

    problems = verify(entries[4:], heads, start=cut, removed=4).problems

    assert problems[-1] == (
        "4 entries were removed from the stream, and the control plane cut 2 at 2-0: the "
        "trail was trimmed by someone else"
    )
    assert verify(entries, heads, removed=1).problems == [
        "1 entries were removed from the stream, and the control plane made no cut: the trail "
        "was trimmed by someone else"
    ]


def test_a_checkpoint_is_signed_by_the_anchor_and_nobody_else() -> None:
    anchor, other = new_anchor(), new_anchor()
    entries, _ = trail(3)
    checkpoint = Checkpoint("default/alice", "t1", 1, 1_800_000_000_000, mark_after(entries), START)
    signed = checkpoint.sign(anchor)

    parsed, kid = parse_checkpoint(signed, {anchor.kid: anchor.public_key})
    forged = orjson.loads(signed)
    forged["checkpoint"]["head"]["total"] = 1

    assert (parsed, kid) == (checkpoint, anchor.kid)
    assert parsed.following(head=START, cut=START, now_ms=0).number == 2
    assert checkpoint.label == "checkpoint #1 (2027-01-15T08:00:00Z)"
    with pytest.raises(CheckpointError, match="not a trusted anchor"):
        parse_checkpoint(checkpoint.sign(other), {anchor.kid: anchor.public_key})
    with pytest.raises(CheckpointError, match="does not verify"):
        parse_checkpoint(orjson.dumps(forged), {anchor.kid: anchor.public_key})
    with pytest.raises(CheckpointError, match="not a well-formed"):
        parse_checkpoint(b'{"checkpoint": {}}', None)


# -- the archive's format ------------------------------------------------------------------------


def test_an_entry_comes_back_from_its_document_exactly() -> None:
    entries, _ = trail(1)
    odd = dict(entries[0][1]) | {F_EVENT: b'{"b": 1, "a": 2}'}  # not as a sidecar writes it
    broken = dict(entries[0][1]) | {F_EVENT: b"\xff not json"}

    for fields in (entries[0][1], odd, broken):
        document = orjson.loads(orjson.dumps(entry_document(b"7-1", fields)))
        assert entry_fields(document) == (b"7-1", fields)
    assert "raw" not in entry_document(b"7-1", entries[0][1])
    assert base64.b64decode(entry_document(b"7-1", odd)["raw"]) == odd[F_EVENT]


def test_segments_are_read_back_in_stream_order(tmp_path: Path) -> None:
    entries, _ = trail(5)
    directory = trail_directory(tmp_path, "default/alice", "t1")
    write_segment(directory, (3, 0), entries[3:], b'{"last": 2}')
    write_segment(directory, (0, 0), entries[:3], b'{"last": 1}')

    segments = read_segments(directory)

    assert directory == tmp_path / "default" / "alice" / "t1"
    assert [(s.after, list(s.entries()), s.checkpoint) for s in segments] == [
        ((0, 0), entries[:3], b'{"last": 1}'),
        ((3, 0), entries[3:], b'{"last": 2}'),
    ]
    assert segments[0].path.stat().st_mode & 0o777 == 0o600
    assert read_segments(tmp_path / "nothing") == []
