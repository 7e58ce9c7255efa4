"""Writing into an agent's senders' streams around the sidecars, as a sender's Redis user can.

A sender's sidecar appends to its own stream into the target and announces itself in the
target's senders set and ring (one ``mas_append`` call); a test that plays a sender's user, or
the administrator, does the same with plain commands, so the target finds the stream at once;
:func:`waiting_for` looks at what waits in all of a target's senders' streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from mas_core.keys import AgentKeys


def append_as(
    client: redis.Redis,
    sender: str,
    target: str,
    fields: Mapping[bytes, bytes],
    **options: Any,
) -> bytes:
    """Append ``fields`` to ``sender``'s stream into ``target`` and announce it; the entry id
    (``options``: what redis-py's ``xadd`` takes, an explicit ``id`` for one)."""
    keys = AgentKeys(target)
    entry_id: bytes = client.xadd(keys.inbox(sender), dict(fields), **options)
    if client.sadd(keys.senders, sender):
        client.xadd(keys.ring, {"n": "1"})
    return entry_id


def waiting_for(client: redis.Redis, target: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry in ``target``'s senders' streams (what was written to it and not yet acked),
    stream after stream."""
    pattern = AgentKeys(target).inbox("*")
    return [entry for key in client.scan_iter(match=pattern) for entry in client.xrange(key)]
