"""Cross-verification: what one agent's trail says it sent against what the receivers' trails
say they received, and the other way round.

A sender's sidecar records ``accepted`` for every message it writes; a receiver's sidecar
records ``received`` for the messages read together that pass its receive checks (each time it
reads one: a redelivery is recorded again), ``refused_on_receive`` for each it refuses. Each
message's record carries its id, sender, target and the payload's SHA-256, so two trails can
be compared message by message.

Checked for agent ``A`` (:func:`cross_check`):

* every message ``A`` sent to ``T``: ``T`` received it with the same digest (``matched``), or
  refused it on receive (``refused``), or it is in ``T``'s dead letters (``dead-lettered``);
  a different digest is a mismatch. A message ``T`` has no record of is **missing** (a
  mismatch) only when ``T`` recorded a *later* message from the same sender replica: a
  sender's messages to one target go into one stream, in the order of that replica's chain,
  and ``T`` reads the stream in order, so a later one read means this one was read first.
  Otherwise it is **in flight** (not read yet), which is no mismatch. A reply is read from the
  asking replica's own stream, and not at all when the request timed out first: a reply with
  no record is ``reply unconfirmed``, no mismatch. The rule has one known false alarm: a
  receiver replica that dies between reading a message and recording it; the message is
  delivered again after its lease and recorded then, so the mismatch goes away on a later run.
* every message ``A`` received from ``S``: ``S``'s trail records sending it, with the same
  digest; otherwise it is a mismatch — a message written around ``S``'s sidecar (with its
  key and Redis user) that ``A`` accepted. Refusals at ``A`` are not checked: a forged message
  it refused was never sent by its claimed sender.

A trail trimmed by the control plane no longer holds its oldest records (unless its archive
is read with it): a counterpart that could lie in the trimmed part is ``not checked`` instead
of flagged — a sent message whose audit entry is not after the receiver's cut, or a received
message created (by its id's time) less than :data:`CLOCK_SLACK_MS` after the sender's cut
(the sender's clock and the server's may differ that much).

Pure; used by ``mas audit verify --cross`` (:mod:`mas_cli.audit_trails`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from mas_core.audit.chain import F_EVENT, F_REPLICA, F_SEQ, START, Entry, StreamId, parse_id
from mas_core.ids import id_time_ms

SENT, RECEIVED, REFUSED = "accepted", "received", "refused_on_receive"
CLOCK_SLACK_MS = 60_000


@dataclass(frozen=True)
class Record:
    """One audit entry about a message."""

    message_id: str
    sender: str
    target: str
    digest: str
    decision: str
    reply: bool
    entry: StreamId  # the audit entry's id
    replica: str  # the chain that recorded it
    seq: int


@dataclass(frozen=True)
class Trail:
    """What cross-verification needs of one agent's trail: its message records, the stream
    id its records begin after (the control plane's cut, or the start when the archive is read
    too), and the ids of the messages in its dead letters."""

    records: list[Record]
    begins_after: StreamId = START.at
    dead_letters: frozenset[str] = frozenset()


@dataclass
class CrossReport:
    """Counts by outcome (``sent: matched``, ``received: not checked``, ...) and mismatches."""

    counts: Counter[str] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def records(entries: Iterable[Entry]) -> list[Record]:
    """The message records among ``entries`` (other entries and malformed ones skipped): one
    per ``accepted`` or ``refused_on_receive`` entry, one per message of a ``received`` one."""
    found = []
    for raw_id, fields in entries:
        try:
            event = orjson.loads(fields[F_EVENT])
            decision = event["decision"]
            if decision not in (SENT, RECEIVED, REFUSED):
                continue
            where = (parse_id(raw_id), fields[F_REPLICA].decode(), int(fields[F_SEQ]))
            messages = event["messages"] if decision == RECEIVED else [event]
            found += [_record(message, decision, event["to"], where) for message in messages]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            continue
    return found


def _record(
    message: Mapping[str, Any], decision: str, target: str, where: tuple[StreamId, str, int]
) -> Record:
    entry, replica, seq = where
    return Record(
        message_id=str(message["message_id"]),
        sender=str(message["from"]),
        target=str(target),
        digest=str(message.get("payload_sha256", "")),
        decision=decision,
        reply=bool(message.get("reply", False)),
        entry=entry,
        replica=replica,
        seq=seq,
    )


def cross_check(agent_id: str, own: Trail, peers: Mapping[str, Trail]) -> CrossReport:
    """Compare ``agent_id``'s trail with its peers' (by agent id; one missing counts as an
    empty trail) in both directions (see the module docstring)."""
    report = CrossReport()
    sent = [r for r in own.records if r.decision == SENT and r.sender == agent_id]
    for target in sorted({r.target for r in sent}):
        peer = peers.get(target, Trail([]))
        _check_sent(report, [r for r in sent if r.target == target], agent_id, target, peer)
    received: dict[str, Record] = {}  # a redelivered message is recorded each time
    for record in own.records:
        if record.decision == RECEIVED and record.target == agent_id:
            received.setdefault(record.message_id, record)
    for sender in sorted({r.sender for r in received.values()}):
        peer = peers.get(sender, Trail([]))
        mine = [r for r in received.values() if r.sender == sender]
        _check_received(report, mine, agent_id, sender, peer)
    return report


def _check_sent(
    report: CrossReport, sent: list[Record], sender: str, target: str, peer: Trail
) -> None:
    at_target: dict[str, Record] = {}
    for record in peer.records:
        if record.sender == sender and record.target == target and record.decision != SENT:
            at_target.setdefault(record.message_id, record)
    read_up_to: dict[str, int] = {}  # per sender replica: the latest message the target read
    for record in sent:
        if not record.reply and record.message_id in at_target:
            read_up_to[record.replica] = max(read_up_to.get(record.replica, 0), record.seq)
    for record in sent:
        what = f"{sender} sent {record.message_id} ({record.replica} #{record.seq}) to {target}"
        found = at_target.get(record.message_id)
        if found is not None and found.decision == REFUSED:
            report.counts["sent: refused by the receiver"] += 1
        elif found is not None and found.digest != record.digest:
            report.mismatches.append(f"{what}: the receiver recorded another payload digest")
        elif found is not None:
            report.counts["sent: matched"] += 1
        elif record.message_id in peer.dead_letters:
            report.counts["sent: dead-lettered by the receiver"] += 1
        elif record.entry <= peer.begins_after:
            report.counts["sent: not checked (the receiver's trail is trimmed past it)"] += 1
        elif record.reply:
            report.counts["sent: reply unconfirmed (its request may have timed out)"] += 1
        elif read_up_to.get(record.replica, 0) > record.seq:
            report.mismatches.append(
                f"{what}: missing at the receiver, which recorded later messages of that replica"
            )
        else:
            report.counts["sent: in flight (the receiver read nothing later from it)"] += 1


def _check_received(
    report: CrossReport, received: list[Record], receiver: str, sender: str, peer: Trail
) -> None:
    from_sender = {
        r.message_id: r
        for r in peer.records
        if r.decision == SENT and r.sender == sender and r.target == receiver
    }
    trimmed = peer.begins_after != START.at
    for record in received:
        what = f"{receiver} received {record.message_id} from {sender}"
        found = from_sender.get(record.message_id)
        if found is not None and found.digest != record.digest:
            report.mismatches.append(f"{what}: the sender recorded another payload digest")
        elif found is not None:
            report.counts["received: matched"] += 1
        elif trimmed and _created_ms(record.message_id) <= peer.begins_after[0] + CLOCK_SLACK_MS:
            report.counts["received: not checked (the sender's trail is trimmed past it)"] += 1
        else:
            report.mismatches.append(f"{what}: the sender's trail does not record sending it")


def _created_ms(message_id: str) -> int:
    try:
        return id_time_ms(message_id)
    except ValueError:
        return 0
