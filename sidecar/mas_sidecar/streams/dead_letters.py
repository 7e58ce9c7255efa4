"""The agent's dead-letter stream: list, replay into the sender's stream, delete.

Entries are written by :mod:`mas_sidecar.streams.inbox` (the original entry's fields plus ``dl:*``
fields, ``dl:sender`` naming the sender whose stream it came from). Replaying appends the
original envelope to that sender's stream again (a new stream entry, so its attempts start over)
as the replay guard's entry of record for its message id, and removes the dead letter, in one
function call. The envelope keeps its sender's signature and identity token, and nobody else can
renew them: a dead letter that would no longer authenticate as a new entry (see
:meth:`~mas_sidecar.checks.gateway.Gateway.replay_refusal`) is not replayed but kept, and the answer
(``409 dead_letter_unauthenticated``) says that its sender must send it again. Used by the
dead-letter routes, which answer each :class:`DeadLetter` as
:func:`~mas_sidecar.api.documents.dead_letter_document`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import redis.asyncio as aioredis

from mas_core.dead_letters import DL_SENDER, DeadLetter, original_fields, parse_dead_letter
from mas_core.envelope import Envelope, EnvelopeError
from mas_core.error_codes import ErrorCode
from mas_core.keys import AgentKeys
from mas_core.telemetry.logs import message_fields
from mas_sidecar.checks.replay import ReplayGuard
from mas_sidecar.errors import Refusal
from mas_sidecar.streams.inbox import sender_id

log = logging.getLogger(__name__)
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


class DeadLetters:
    """One agent's dead letters."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: AgentKeys,
        replay: ReplayGuard,
        refusal: Callable[[Envelope], str | None],
    ) -> None:
        """``refusal``: why the receive checks would refuse an envelope entering its stream now
        (:meth:`~mas_sidecar.checks.gateway.Gateway.replay_refusal`), or None."""
        self._redis = client
        self._keys = keys
        self._replay = replay
        self._refusal = refusal

    async def list(self, limit: int) -> list[DeadLetter]:
        """The first ``limit`` dead letters, oldest first."""
        entries = await self._redis.xrange(self._keys.dlq, count=limit)
        return [parse_dead_letter(entry_id, fields) for entry_id, fields in entries]

    async def replay(self, dead_letter_id: str) -> str:
        """Put the message back in its sender's stream; its message id."""
        fields = await self._get(dead_letter_id)
        original = original_fields(fields)
        try:
            envelope = Envelope.from_entry(original)
        except EnvelopeError:
            raise Refusal(
                ErrorCode.INVALID_REQUEST,
                f"dead letter {dead_letter_id} holds no valid message; it can only be deleted",
            ) from None
        refusal = self._refusal(envelope)
        if refusal is not None:
            log.info(
                "dead letter %s not replayed: %s", dead_letter_id, refusal,
                extra=message_fields(envelope),
            )  # fmt: skip
            raise Refusal(
                ErrorCode.DEAD_LETTER_UNAUTHENTICATED,
                f"dead letter {dead_letter_id} would be refused again ({refusal}); a replay "
                f"cannot renew its sender's signature or identity token: {envelope.sender} "
                "must send the message again (delete this dead letter once it has)",
            )
        # A dead letter written before senders had streams of their own names none: it goes
        # back into the stream of the sender its envelope claims (checked again when read).
        sender = sender_id(fields.get(DL_SENDER, envelope.sender.encode()))
        if sender is None:
            raise Refusal(
                ErrorCode.INVALID_REQUEST,
                f"dead letter {dead_letter_id} names no sender; it can only be deleted",
            )
        await self._replay.requeue(original, envelope.id, sender, dead_letter_id=dead_letter_id)
        return envelope.id

    async def delete(self, dead_letter_id: str) -> None:
        if not _STREAM_ID.match(dead_letter_id) or not await self._redis.xdel(
            self._keys.dlq, dead_letter_id
        ):
            raise _not_found(dead_letter_id)

    async def _get(self, dead_letter_id: str) -> dict[bytes, bytes]:
        if _STREAM_ID.match(dead_letter_id):
            entries = await self._redis.xrange(self._keys.dlq, dead_letter_id, dead_letter_id)
            if entries:
                return dict(entries[0][1])
        raise _not_found(dead_letter_id)


def _not_found(dead_letter_id: str) -> Refusal:
    return Refusal(ErrorCode.DEAD_LETTER_NOT_FOUND, f"no dead letter {dead_letter_id[:64]!r}")
