"""``mas audit verify | tail | export``: read an agent's audit trail straight from Redis.

These are operator tools: they take a Redis URL with read access to the agent's keys and to
the control plane's checkpoints (the sidecars' own credentials reach neither). Output of
``tail`` and ``export`` is JSON lines, one entry each
(:func:`mas_core.audit.archive.entry_document`).

``verify`` holds the trail and checks its hash chains (:mod:`mas_control.trail_check`) against
the control plane's last checkpoint (:mod:`mas_core.audit.checkpoints`: its signature too, given
the anchor's public key) and the stream's own count of the entries removed from it; with the
archive directory, the whole trail since it began, segment by segment; with ``--cross``, the
messages in the trail against the trails of the agents it exchanged them with
(:mod:`mas_cli.audit_cross`). Called by :mod:`mas_cli.main`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import orjson
import redis
from nacl.signing import VerifyKey

from mas_cli.audit_cross import RECEIVED, SENT, Trail, cross_check, records
from mas_control.audit_keeper import holding_trail, read_entries
from mas_control.trail_check import NO_EVIDENCE, Evidence, check_trail, stored_trail
from mas_core.audit.archive import entry_document
from mas_core.audit.chain import START, Entry, format_id
from mas_core.envelope import ENTRY_FIELD
from mas_core.identity.tokens import key_id, load_public_key_pem
from mas_core.keys import AgentKeys

__all__ = ["Evidence", "TrailHeldError", "cross_verify", "load_trust", "verify_trail"]

SHOWN_PROBLEMS = 50  # a rewritten trail can break at every entry: the first ones tell
HOLD_WAIT = 60.0  # seconds to wait for a round of the control plane to finish with a trail


def load_trust(paths: Sequence[Path]) -> dict[str, VerifyKey]:
    """Anchor public keys by key id, from PEM files and directories of ``*.pub`` files (an
    anchor directory, or an agent credentials directory's ``trust/``); KeyFormatError or
    OSError when one cannot be read."""
    keys = {}
    for path in paths:
        files = sorted(path.glob("*.pub")) if path.is_dir() else [path]
        for file in files:
            key = load_public_key_pem(file.read_bytes())
            keys[key_id(key)] = key
    return keys


def verify_trail(
    client: redis.Redis, agent_id: str, out: TextIO, evidence: Evidence = NO_EVIDENCE
) -> bool:
    """Print the verification report; True when the trail is intact. TrailHeldError when the
    control plane holds the trail for longer than :data:`HOLD_WAIT` seconds."""
    with _holding(client, agent_id):
        checked = check_trail(client, agent_id, evidence)
    if checked.unreadable is not None:
        print(f"TAMPERED the archive cannot be read: {checked.unreadable}", file=out)
        return False
    problems = checked.problems
    for problem in problems[:SHOWN_PROBLEMS]:
        print(f"TAMPERED {problem}", file=out)
    if len(problems) > SHOWN_PROBLEMS:
        print(f"TAMPERED ... and {len(problems) - SHOWN_PROBLEMS} more problems", file=out)
    verdict = "intact" if not problems else f"NOT intact: {len(problems)} problem(s)"
    print(
        f"audit trail of {agent_id}: {checked.entries} entries in {checked.chains} chain(s), "
        f"{verdict}",
        file=out,
    )
    for line in checked.said:
        print(f"  {line}", file=out)
    if checked.head is not None and checked.newer:
        print(
            f"  {checked.newer} entries after {format_id(checked.head)} are not covered by a "
            "checkpoint yet (until the next one, entries its agent appended cannot be told from "
            "its sidecar's)",
            file=out,
        )
    return not problems


class TrailHeldError(RuntimeError):
    """The control plane's keeper held the trail all the time verification waited for it."""


@contextlib.contextmanager
def _holding(client: redis.Redis, agent_id: str) -> Iterator[None]:
    """Hold the trail while it is read, so that no cut of the control plane runs meanwhile
    (a cut in the middle of a read would look like entries gone missing)."""
    with holding_trail(client, agent_id, wait=HOLD_WAIT) as held:
        if not held:
            raise TrailHeldError(
                f"the control plane has been working on the audit trail of {agent_id} for "
                f"{HOLD_WAIT:g} seconds; try again"
            )
        yield


def _dead_letters(client: redis.Redis, agent_id: str) -> frozenset[str]:
    ids = set()
    for _, fields in read_entries(client, AgentKeys(agent_id).dlq, after=START.at):
        try:
            ids.add(str(orjson.loads(fields[ENTRY_FIELD])["id"]))
        except (KeyError, TypeError, orjson.JSONDecodeError):
            continue
    return frozenset(ids)


def _trail(client: redis.Redis, agent_id: str, evidence: Evidence) -> Trail:
    with _holding(client, agent_id):
        stored = stored_trail(client, agent_id, evidence)
        found = records(stored.entries)
    return Trail(found, stored.begins_after.at, _dead_letters(client, agent_id))


def cross_verify(
    client: redis.Redis, agent_id: str, out: TextIO, evidence: Evidence = NO_EVIDENCE
) -> bool:
    """Print the cross-verification of ``agent_id``'s messages with its peers' trails; True
    when nothing is amiss. ArchiveError for an unreadable segment, TrailHeldError as for
    :func:`verify_trail`."""
    own = _trail(client, agent_id, evidence)
    peers = {
        peer: own if peer == agent_id else _trail(client, peer, evidence)
        for peer in sorted(
            {r.target for r in own.records if r.decision == SENT}
            | {r.sender for r in own.records if r.decision == RECEIVED}
        )
    }
    report = cross_check(agent_id, own, peers)
    for mismatch in report.mismatches[:SHOWN_PROBLEMS]:
        print(f"MISMATCH {mismatch}", file=out)
    if len(report.mismatches) > SHOWN_PROBLEMS:
        print(f"MISMATCH ... and {len(report.mismatches) - SHOWN_PROBLEMS} more", file=out)
    verdict = "consistent" if report.ok else f"{len(report.mismatches)} mismatch(es)"
    others = len(peers) - (agent_id in peers)
    print(f"messages of {agent_id} against {others} other trail(s): {verdict}", file=out)
    for outcome, count in sorted(report.counts.items()):
        print(f"  {outcome}: {count}", file=out)
    return report.ok


def _write(out: TextIO, entries: Iterable[Entry]) -> int:
    count = 0
    for entry_id, fields in entries:
        out.write(orjson.dumps(entry_document(entry_id, fields)).decode() + "\n")
        count += 1
    return count


def export_trail(client: redis.Redis, agent_id: str, out: TextIO) -> int:
    """Write every entry in Redis as a JSON line; how many."""
    return _write(out, read_entries(client, AgentKeys(agent_id).audit, after=START.at))


def tail_trail(client: redis.Redis, agent_id: str, out: TextIO, *, last: int, follow: bool) -> None:
    """The ``last`` entries, then (with ``follow``) new ones as they come, until interrupted."""
    keys = AgentKeys(agent_id)
    entries = list(reversed(client.xrevrange(keys.audit, count=last)))
    _write(out, entries)
    out.flush()
    cursor: bytes | str = entries[-1][0] if entries else "$"
    while follow:
        answer = client.xread({keys.audit: cursor}, count=100, block=1000)
        for _stream, new in answer or ():
            cursor = new[-1][0]
            _write(out, new)
        out.flush()
