"""Replay protection on the receive path: a signed envelope is accepted from one stream entry only.

A signature proves who wrote an envelope, not that this is the first time it arrives: whoever
may append to a stream could append a captured envelope again. Each sender has its own stream
into each receiver (``mas:{receiver}:in:<sender>``, written by that sender only), and the
receiver takes from it only envelopes of that sender, so a copy of another agent's envelope is
refused before it gets here (``misaddressed``, :mod:`mas_sidecar.checks.gateway`); what is left is a
sender replaying its own messages, or a copy written by the receiver itself.
:class:`ReplayGuard` runs on every lease of a stream entry (after the signature check) and
decides with one function call per read batch (:meth:`ReplayGuard.check_many`, the
``mas_seen_check`` function of :mod:`mas_core.functions`), not one round trip per message; the
same call usually also appends the receipt's audit entry (:meth:`ReplayGuard.check_and_receipt`,
``mas_seen_receipt``), only when it accepts every entry of the batch.

Design: the guard remembers **which stream entry** first carried each message id — the stream
(by its name after the agent's prefix, e.g. ``in:ns/sender``) and the entry id, since entry ids
are per stream — in two keys under the receiving agent's hash tag (so the function is
cluster-safe, one slot, one round trip):

    mas:{ns/name}:seen          hash: message id -> "<stream> <entry id>" that carried it first
    mas:{ns/name}:seen-by-time  sorted set: message id -> "forget after" (stream time, ms)

* An entry whose message id is unknown is a first sight: accepted when its ``created_at`` lies
  within ``window_ms`` (default 5 minutes, clock skew included) of the **entry's own timestamp**
  — the time Redis appended it, taken from the entry id. Only the sender (and the receiver)
  may write a sender's stream, so only the sender can date its own entries (explicit ids):
  honest senders' entries carry the server's time. The window is anchored there, not on this
  sidecar's clock, so messages that waited while the agent was down are still delivered after
  any length of downtime.
* An entry whose message id is recorded **for this same stream entry** is a redelivery (nack,
  lease expiry, crash of the replica that held it): legitimate at-least-once behaviour, accepted
  on any attempt without looking at the window again. Keying on the entry rather than on
  ``attempt`` also covers a replica that crashed between reading an entry and checking it.
* An entry whose message id is recorded for **another** entry is a re-injected copy: refused
  (``duplicate``). A copy whose record was already forgotten fails the window instead, because a
  copy appended later than ``created_at + window`` carries a later entry timestamp.

Records are forgotten by stream time, not wall time: a record is dropped once an entry stamped
after ``created_at + window`` is first seen. Memory therefore holds about one window's worth of
messages however long the agent lags (a few expired records are trimmed per call). Residual
gaps, accepted: a copy that was read but not yet checked when its replica crashed, and is
reclaimed only after its original's record was forgotten, passes; and since the receiver reads
many streams, an entry of one stream can make it forget records while another stream lags, or
a sender that future-dates its own stream can make it forget early — either way only a sender's
copy of its own message (in its own stream) can then pass, which it could as well send anew.

Dead letters replayed by the owner are new entries carrying old envelopes; :meth:`requeue`
appends them to their sender's stream together with their record, so they pass as the entry of
record.

Used by the gateway's receive checks (``check_many`` on each lease) and the dead-letter store
(``requeue``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from mas_core.envelope import Envelope
from mas_core.keys import AgentKeys
from mas_sidecar.checks.audit_log import AuditLog, EntryWrites
from mas_sidecar.errors import SidecarFailure

DEFAULT_WINDOW_MS = 300_000


class ReplayError(SidecarFailure):
    """A stream entry replays a message; ``reason`` is ``duplicate`` or ``outside_window``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def entry_time_ms(entry_id: bytes | str) -> int:
    """The timestamp part of a stream entry id (``<ms>-<seq>``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


class Read(NamedTuple):
    """An envelope as read from a stream entry: the stream, the one agent that writes it (the
    receiver aside) and the entry id."""

    envelope: Envelope
    stream: str
    sender: str
    entry_id: bytes


class ReplayGuard:
    """Which stream entry first carried each recent message id of one agent."""

    def __init__(
        self, client: aioredis.Redis, keys: AgentKeys, *, window_ms: int = DEFAULT_WINDOW_MS
    ) -> None:
        self._redis = client
        self._keys = keys
        self.window_ms = window_ms

    def record(self, stream: str, entry_id: bytes | str) -> str:
        """What the guard records for an entry: ``"<stream> <entry id>"``, the stream by its
        name after the agent's prefix."""
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return f"{self._keys.name_of(stream)} {entry}"

    async def check(self, read: Read) -> None:
        """Accept ``read``, or raise :class:`ReplayError`."""
        [error] = await self.check_many([read])
        if error is not None:
            raise error

    async def check_many(self, reads: Sequence[Read]) -> list[ReplayError | None]:
        """Check entries read together with one function call: per entry, the
        :class:`ReplayError` refusing it, or None when it is accepted."""
        if not reads:
            return []
        rows, args = self._arguments(reads)
        answers = await self._redis.fcall(
            "mas_seen_check", 2, self._keys.seen, self._keys.seen_by_time, *args
        )
        return self._judge_all(rows, answers)

    async def check_and_receipt(
        self, reads: Sequence[Read], audit: AuditLog, receipt: dict[str, Any]
    ) -> tuple[list[ReplayError | None], bool]:
        """:meth:`check_many`, and in the same function call (through ``audit``, so after
        every entry chained before) append ``receipt`` when every entry is accepted; the
        refusals, and whether the receipt was appended (else it is not in the chain)."""
        rows, args = self._arguments(reads)
        keys = (self._keys.seen, self._keys.seen_by_time)

        def command(writes: EntryWrites) -> tuple[Any, ...]:
            return (
                "FCALL", "mas_seen_receipt", 4, *keys, writes.stream, writes.heads, len(reads),
                *args, writes.replica, writes.head_value, *writes.fields,
            )  # fmt: skip

        answers, appended = await audit.record_with(receipt, command)
        return self._judge_all(rows, answers), bool(appended)

    def _arguments(
        self, reads: Sequence[Read]
    ) -> tuple[list[tuple[Envelope, str, int, bool]], list[str | int]]:
        """Per entry what judging its answer takes, and the function's arguments."""
        rows: list[tuple[Envelope, str, int, bool]] = []
        args: list[str | int] = []
        for read in reads:
            envelope, record = read.envelope, self.record(read.stream, read.entry_id)
            stamped = entry_time_ms(read.entry_id)
            fresh = abs(envelope.created_at - stamped) <= self.window_ms
            rows.append((envelope, record, stamped, fresh))
            args += [envelope.id, record, stamped, envelope.created_at + self.window_ms, int(fresh)]
        return rows, args

    def _judge_all(
        self, rows: list[tuple[Envelope, str, int, bool]], answers: Sequence[bytes | None]
    ) -> list[ReplayError | None]:
        return [
            self._judge(envelope, record, stamped, fresh, known)
            for (envelope, record, stamped, fresh), known in zip(rows, answers, strict=True)
        ]

    def _judge(
        self, envelope: Envelope, record: str, stamped: int, fresh: bool, known: bytes | None
    ) -> ReplayError | None:
        if known is not None:
            if known.decode() == record:
                return None
            return ReplayError(
                "duplicate",
                f"message {envelope.id[:64]!r} was already delivered in {known.decode()}",
            )
        if not fresh:
            return ReplayError(
                "outside_window",
                f"message {envelope.id[:64]!r} was created at {envelope.created_at} but entered "
                f"its stream at {stamped}, more than {self.window_ms} ms apart",
            )
        return None

    async def requeue(
        self, fields: Mapping[bytes, bytes], message_id: str, sender: str, *, dead_letter_id: str
    ) -> str:
        """Append ``fields`` to ``sender``'s stream as the entry of record for ``message_id``
        and delete dead letter ``dead_letter_id``, atomically; the new entry's id."""
        pairs = [part for item in fields.items() for part in item]
        stream = self._keys.inbox(sender)
        keys = self._keys
        names = [stream, keys.dlq, keys.seen, keys.seen_by_time, keys.senders]
        new_id = await self._redis.fcall(
            "mas_seen_requeue", len(names), *names, message_id, dead_letter_id, self.window_ms,
            sender, keys.name_of(stream), *pairs,
        )  # fmt: skip
        return str(new_id.decode())
