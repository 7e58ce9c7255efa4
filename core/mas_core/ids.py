"""Globally unique, time-sortable message ids (ULID layout, Crockford base32, 26 characters).

48 bits of milliseconds since the epoch followed by 80 random bits: ids sort by creation time
across processes and machines, and collide with negligible probability. Used by the sidecar when
it builds envelopes.
"""

from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now_ms: int | None = None) -> str:
    """A new 26-character id; ``now_ms`` fixes the timestamp part (for tests)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def id_time_ms(message_id: str) -> int:
    """The creation time, in milliseconds since the epoch, encoded in ``message_id``."""
    value = 0
    for char in message_id[:10]:
        value = value * 32 + _ALPHABET.index(char)
    return value
