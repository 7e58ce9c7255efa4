"""The audit chain as a pure function: every way of tampering is found, and said where."""

from __future__ import annotations

from mas.audit import F_EVENT, Chain, verify

Entry = tuple[bytes, dict[bytes, bytes]]


def trail(count: int, replica: str = "r-0") -> tuple[list[Entry], dict[bytes, bytes]]:
    chain = Chain(replica)
    entries = [
        (f"{n + 1}-0".encode(), chain.append({"decision": "accepted", "n": n}))
        for n in range(count)
    ]
    return entries, {replica.encode(): chain.head_value.encode()}


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
    interleaved = [first[0], second[0], first[1], second[1], first[2]]

    report = verify(interleaved, first_heads | second_heads)

    assert report.ok
    assert report.chains == 2


def test_a_chain_resumes_from_its_stored_head() -> None:
    entries, heads = trail(2)
    resumed = Chain.resume("r-0", heads[b"r-0"])
    entries.append((b"3-0", resumed.append({"decision": "after restart"})))

    assert verify(entries, {b"r-0": resumed.head_value.encode()}).ok
