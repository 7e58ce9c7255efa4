"""Replay protection on the receive path: a signed envelope is accepted from one inbox entry only.

A signature proves who wrote an envelope, not that this is the first time it arrives: anyone
able to append to the inbox could append a captured envelope again. :class:`ReplayGuard` runs on
every lease of an inbox entry (after the signature check) and decides with one script call per
read batch (:meth:`ReplayGuard.check_many`, the ``mas_seen_check`` function of
:mod:`mas.functions`), not one round trip per message.

Design: the guard remembers **which inbox entry** first carried each message id, in two keys under
the receiving agent's hash tag (so the function is cluster-safe, one slot, one round trip):

    mas:{ns/name}:seen          hash: message id -> id of the inbox entry that carried it first
    mas:{ns/name}:seen-by-time  sorted set: message id -> "forget after" (stream time, ms)

* An entry whose message id is unknown is a first sight: accepted when its ``created_at`` lies
  within ``window_ms`` (default 5 minutes, clock skew included) of the **entry's own timestamp**
  — the time Redis appended it to the inbox, taken from the entry id, which the sender cannot
  move backwards (explicit ids must exceed the stream's last id). The window is anchored there,
  not on this sidecar's clock, so messages that waited in the inbox while the agent was down are
  still delivered after any length of downtime.
* An entry whose message id is recorded **for this same entry id** is a redelivery (nack, lease
  expiry, crash of the replica that held it): legitimate at-least-once behaviour, accepted on any
  attempt without looking at the window again. Keying on the entry rather than on ``attempt``
  also covers a replica that crashed between reading an entry and checking it.
* An entry whose message id is recorded for **another** entry is a re-injected copy: refused
  (``duplicate``). A copy whose record was already forgotten fails the window instead, because a
  copy appended later than ``created_at + window`` carries a later entry timestamp.

Records are forgotten by stream time, not wall time: a record is dropped once an entry stamped
after ``created_at + window`` is first seen. Entries are read in stream order, so by then every
entry that could still pass the window has been read. Memory therefore holds about one window's
worth of messages however long the agent lags (a few expired records are trimmed per call).
Residual gap, accepted: a copy that was read but not yet checked when its replica crashed, and
is reclaimed only after its original's record was forgotten, passes.

Dead letters replayed by the owner are new entries carrying old envelopes; :meth:`requeue`
appends them together with their record, so they pass as the entry of record.

Used by the inbox (``check`` on each lease) and the dead-letter store (``requeue``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis

from mas.envelope import Envelope
from mas.keys import AgentKeys
from mas_sidecar.errors import SidecarError

DEFAULT_WINDOW_MS = 300_000


class ReplayError(SidecarError):
    """An inbox entry replays a message; ``reason`` is ``duplicate`` or ``outside_window``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def entry_time_ms(entry_id: bytes | str) -> int:
    """The timestamp part of a stream entry id (``<ms>-<seq>``)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


class ReplayGuard:
    """Which inbox entry first carried each recent message id of one agent."""

    def __init__(
        self, client: aioredis.Redis, keys: AgentKeys, *, window_ms: int = DEFAULT_WINDOW_MS
    ) -> None:
        self._redis = client
        self._keys = keys
        self.window_ms = window_ms
        self.seen_key = f"{keys.prefix}seen"
        self.by_time_key = f"{keys.prefix}seen-by-time"

    async def check(self, envelope: Envelope, entry_id: bytes | str) -> None:
        """Accept ``envelope`` read from inbox entry ``entry_id``, or raise :class:`ReplayError`."""
        [error] = await self.check_many([(envelope, entry_id)])
        if error is not None:
            raise error

    async def check_many(
        self, items: Sequence[tuple[Envelope, bytes | str]]
    ) -> list[ReplayError | None]:
        """Check entries read together (in stream order) with one function call: per entry, the
        :class:`ReplayError` refusing it, or None when it is accepted."""
        if not items:
            return []
        rows: list[tuple[Envelope, str, int, bool]] = []
        args: list[str | int] = []
        for envelope, entry_id in items:
            entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            stamped = entry_time_ms(entry)
            fresh = abs(envelope.created_at - stamped) <= self.window_ms
            rows.append((envelope, entry, stamped, fresh))
            args += [envelope.id, entry, stamped, envelope.created_at + self.window_ms, int(fresh)]
        answers = await self._redis.fcall(
            "mas_seen_check", 2, self.seen_key, self.by_time_key, *args
        )
        return [
            self._judge(envelope, entry, stamped, fresh, known)
            for (envelope, entry, stamped, fresh), known in zip(rows, answers, strict=True)
        ]

    def _judge(
        self, envelope: Envelope, entry: str, stamped: int, fresh: bool, known: bytes | None
    ) -> ReplayError | None:
        if known is not None:
            if known.decode() == entry:
                return None
            return ReplayError(
                "duplicate",
                f"message {envelope.id[:64]!r} was already delivered in inbox entry "
                f"{known.decode()}",
            )
        if not fresh:
            return ReplayError(
                "outside_window",
                f"message {envelope.id[:64]!r} was created at {envelope.created_at} but entered "
                f"the inbox at {stamped}, more than {self.window_ms} ms apart",
            )
        return None

    async def requeue(
        self, fields: Mapping[bytes, bytes], message_id: str, *, dead_letter_id: str
    ) -> str:
        """Append ``fields`` to the inbox as the entry of record for ``message_id`` and delete
        dead letter ``dead_letter_id``, atomically; the new entry's id."""
        pairs = [part for item in fields.items() for part in item]
        keys = [self._keys.inbox, self._keys.dlq, self.seen_key, self.by_time_key]
        new_id = await self._redis.fcall(
            "mas_seen_requeue", len(keys), *keys, message_id, dead_letter_id, self.window_ms, *pairs
        )
        return str(new_id.decode())
