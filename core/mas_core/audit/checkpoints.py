"""Checkpoints of an agent's audit trail, taken and signed by the control plane.

A checkpoint says, for one trail (``trail``: a random id the control plane gives a trail when
it first checkpoints it, so a trail that began again — a new Redis — is told apart), two
:class:`~mas_core.audit.chain.Mark` s: ``head``, how far the control plane has checked the trail
(its entry count, last entry id and every replica's chain end there), and ``cut``, how far it has
archived and then removed entries from Redis (the trail's start, :data:`~mas_core.audit.chain.START`
until the first cut). ``number`` counts the checkpoints of the trail.

It is stored, under a key only the control plane writes (:func:`mas_core.keys.audit_checkpoint`), as
JSON ``{"checkpoint": {...}, "kid": ..., "sig": ...}``: an Ed25519 signature by the trust
anchor (``kid`` names its key) over the checkpoint's canonical JSON (sorted keys, no
whitespace). The archive keeps a copy with each segment it removed (:mod:`mas_core.audit.archive`).

    CheckpointError               not a checkpoint, or not one a trusted anchor signed

Pure; used by the control plane (:mod:`mas_control.audit_keeper`) and ``mas audit verify``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from mas_core.audit.chain import Mark
from mas_core.identity.credentials import Anchor
from mas_core.identity.tokens import b64url_decode, b64url_encode


class CheckpointError(ValueError):
    """Stored bytes are not a well-formed checkpoint, or no trusted anchor signed them."""


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of ``agent``'s trail (see the module docstring)."""

    agent: str
    trail: str
    number: int
    taken_at_ms: int
    head: Mark
    cut: Mark

    @property
    def label(self) -> str:
        """How problems name it: ``checkpoint #12 (2026-12-04T10:00:00Z)``."""
        taken = datetime.fromtimestamp(self.taken_at_ms / 1000, UTC)
        return f"checkpoint #{self.number} ({taken.isoformat(timespec='seconds')[:-6]}Z)"

    def to_document(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "trail": self.trail,
            "number": self.number,
            "taken_at_ms": self.taken_at_ms,
            "head": self.head.to_document(),
            "cut": self.cut.to_document(),
        }

    def following(self, *, head: Mark, cut: Mark, now_ms: int | None = None) -> Checkpoint:
        """The next checkpoint of the same trail."""
        taken = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        return Checkpoint(self.agent, self.trail, self.number + 1, taken, head, cut)

    def sign(self, anchor: Anchor) -> bytes:
        """The stored form, signed with ``anchor``'s key."""
        body = _canonical(self.to_document())
        signature = anchor.private_key.sign(body).signature
        return orjson.dumps(
            {"checkpoint": self.to_document(), "kid": anchor.kid, "sig": b64url_encode(signature)}
        )


def _canonical(document: Mapping[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def parse_checkpoint(raw: bytes, trust: Mapping[str, VerifyKey] | None) -> tuple[Checkpoint, str]:
    """The checkpoint stored as ``raw`` and the id of the key that signed it; with ``trust``
    (anchor keys by id) the signature must verify with one of them, without it the signature
    is not checked. :class:`CheckpointError` otherwise."""
    try:
        stored = orjson.loads(raw)
        document, kid, sig = stored["checkpoint"], str(stored["kid"]), str(stored["sig"])
        checkpoint = Checkpoint(
            agent=str(document["agent"]),
            trail=str(document["trail"]),
            number=int(document["number"]),
            taken_at_ms=int(document["taken_at_ms"]),
            head=Mark.from_document(document["head"]),
            cut=Mark.from_document(document["cut"]),
        )
        signature = b64url_decode(sig)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError("not a well-formed checkpoint") from None
    if trust is not None:
        key = trust.get(kid)
        if key is None:
            raise CheckpointError(f"signed by key {kid}, which is not a trusted anchor")
        try:
            key.verify(_canonical(document), signature)
        except (BadSignatureError, ValueError):  # ValueError: a signature that is not 64 bytes
            raise CheckpointError(f"its signature by key {kid} does not verify") from None
    return checkpoint, kid
