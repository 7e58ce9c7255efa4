"""This replica's audit chain: turns decisions into audit entries for the writer.

Each decision becomes one hash-chained entry (:mod:`mas_core.audit.chain`) in the agent's audit
stream, plus an update of this replica's chain head (once per pipeline: the writer sends only the
last), sent with the decision's own write when there is one (one round trip). That includes the
receiving side: one ``received`` entry for the messages read together that pass the receive
checks (:func:`receipt_event`), which ``mas audit verify --cross`` (:mod:`mas_cli.audit_cross`)
matches with their senders' ``accepted``. The receipt usually goes in the same function call as
the replay guard's check (:meth:`AuditLog.record_with`), which appends it only when the guard
accepts every message it lists. Payloads are recorded as
their SHA-256 or, when the policy asks and DLP ran, as the redacted payload — never as sent.
Used by the gateway checks, and by the registry for the metadata an agent publishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from mas_core.audit.chain import Chain
from mas_core.envelope import Envelope
from mas_core.keys import AgentKeys
from mas_sidecar.streams.errors import REDIS_ERRORS
from mas_sidecar.streams.writer import Append, Command, Latest, ReplicationTimeout, Writer


def payload_digest(payload: Any) -> str:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def decision_event(
    decision: str, envelope: Envelope, *, reason: str = "", **details: Any
) -> dict[str, Any]:
    """The audit record of one decision about ``envelope`` (payload as its digest)."""
    event: dict[str, Any] = {
        "at": time.time_ns() // 1_000_000,
        "decision": decision,
        "to": envelope.target,
        **_message(envelope),
    }
    if reason:
        event["reason"] = reason
    event.update(details)
    return event


def receipt_event(agent_id: str, envelopes: Sequence[Envelope]) -> dict[str, Any]:
    """The audit record of the messages to ``agent_id`` that passed the receive checks
    together: one entry for the batch."""
    return {
        "at": time.time_ns() // 1_000_000,
        "decision": "received",
        "to": agent_id,
        "messages": [_message(envelope) for envelope in envelopes],
    }


def _message(envelope: Envelope) -> dict[str, Any]:
    """What an audit record says of a message: its id, sender, type, payload digest, and
    ``reply`` when it is one, ``progress`` when it reports progress on a request."""
    message: dict[str, Any] = {
        "message_id": envelope.id,
        "from": envelope.sender,
        "type": envelope.type,
        "payload_sha256": payload_digest(envelope.payload),
    }
    if envelope.is_reply:
        message["reply"] = True
    elif envelope.is_progress:
        message["progress"] = True
    if envelope.principal is not None:
        message["principal"] = envelope.principal
    return message


def metadata_event(
    decision: str, agent_id: str, metadata: dict[str, Any], **details: Any
) -> dict[str, Any]:
    """The audit record of a decision about the metadata ``agent_id`` publishes in discovery
    (as its digest, like a payload)."""
    event: dict[str, Any] = {
        "at": time.time_ns() // 1_000_000,
        "decision": decision,
        "agent": agent_id,
        "metadata_sha256": payload_digest(metadata),
    }
    event.update(details)
    return event


@dataclass(frozen=True)
class EntryWrites:
    """What a function call needs to append one chained entry itself: the audit stream, the
    chain heads' hash, this replica's field there and its new value, the entry's pairs (flat)."""

    stream: str
    heads: str
    replica: str
    head_value: str
    fields: list[bytes]


class AuditLog:
    """Appends this replica's chain to its agent's audit stream."""

    def __init__(
        self, client: aioredis.Redis, keys: AgentKeys, replica: str, writer: Writer
    ) -> None:
        self._redis = client
        self._keys = keys
        self._writer = writer
        self._chain = Chain(replica)
        self._stale = False
        self._held: asyncio.Future[None] | None = None  # an entry whose write is conditional

    async def setup(self) -> None:
        """Continue this replica's chain where an earlier process with its id left it."""
        head = await self._redis.hget(self._keys.audit_heads, self._chain.replica)
        self._chain = Chain.resume(self._chain.replica, head)
        self._stale = False

    def needs_resync(self) -> None:
        """A write failed: the chain in memory may be ahead of Redis."""
        self._stale = True

    async def prepare(self) -> None:
        """Before the next entry (which must follow at once, without awaiting): wait while an
        entry whose write is conditional is out, and resume from the head in Redis after a
        failed write."""
        while True:
            if self._held is not None:
                await asyncio.shield(self._held)
            elif self._stale:
                await self.setup()
            else:
                return

    def append(self, event: dict[str, Any]) -> tuple[Append, Latest]:
        """The writes that append ``event`` (to send along with another write): the entry,
        and the chain head as the writer's latest command for this chain."""
        fields = self._chain.append(event)
        head = ("HSET", self._keys.audit_heads, self._chain.replica, self._chain.head_value)
        flat = [part for pair in fields.items() for part in pair]
        return Append(self._keys.audit, flat), {head[:2]: head}

    async def record_with(
        self, event: dict[str, Any], command: Callable[[EntryWrites], Command]
    ) -> list[Any]:
        """Append ``event`` through the function call ``command`` builds from the entry's
        writes, which appends it or not (in the writer's order, after every entry chained
        before); the call's answer, a list whose last item is 1 when it appended the entry.

        No other entry is chained until the answer is in, so an entry that was not appended is
        taken back from the chain in memory. The call must not wait for replicas (a shortfall
        would hide its answer): not for a writer that does."""
        await self.prepare()
        held: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held = held
        seq, head = self._chain.seq, self._chain.head
        try:
            fields = self._chain.append(event)
            writes = EntryWrites(
                self._keys.audit,
                self._keys.audit_heads,
                self._chain.replica,
                self._chain.head_value,
                [part for pair in fields.items() for part in pair],
            )
            [answer] = await self._writer.submit([], final=[command(writes)])
            if not answer[-1]:
                self._chain.seq, self._chain.head = seq, head
            return list(answer)
        except BaseException:
            self.needs_resync()  # written or not: resume from Redis
            raise
        finally:
            self._held = None
            held.set_result(None)

    async def record(self, event: dict[str, Any]) -> None:
        """Append ``event`` on its own (a decision that writes nothing else)."""
        await self.prepare()
        try:
            append, head = self.append(event)
            await self._writer.submit([append], head)
        except ReplicationTimeout:
            pass  # on the primary; a decision's answer does not wait for its replicas
        except REDIS_ERRORS:
            self.needs_resync()
            raise
