"""The agent's persisted state: one JSON document with a revision, compare-and-set in Redis.

``mas:{agent}:state`` is a hash of ``doc`` (JSON object) and ``rev`` (integer, 0 before the
first write). Writes go through one call of the ``mas_state_cas`` function
(:mod:`mas_core.functions`), which checks the expected revision and writes atomically, so
concurrent replicas never lose an update silently: the loser gets ``revision_conflict``.

Beside the document, the agent records which messages it handled, one key with an expiry per
message (``mas:{agent}:completed:<id>``): what an SDK handler marked idempotent checks before
it runs and records before it acks, so a message redelivered after that is acked without
running again. One key each (not a part of the document) keeps the document small and lets
Redis forget each record on time. Used by the state routes.
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

from mas_core.error_codes import ErrorCode
from mas_core.keys import AgentKeys
from mas_sidecar.errors import Refusal

_PATCH_RETRIES = 20


class StateStore:
    """Read, replace and merge-patch one agent's state document; record handled messages."""

    def __init__(self, client: aioredis.Redis, keys: AgentKeys) -> None:
        self._redis = client
        self._keys = keys
        self._key = keys.state

    async def completed(self, message_id: str) -> bool:
        """Whether the agent recorded ``message_id`` as handled (and the record has not expired)."""
        return bool(await self._redis.exists(self._keys.completed(message_id)))

    async def complete(self, message_id: str, ttl_ms: int) -> None:
        """Record ``message_id`` as handled, for ``ttl_ms`` (recording it again restarts it)."""
        await self._redis.set(self._keys.completed(message_id), b"1", px=ttl_ms)

    async def read(self) -> tuple[dict[str, Any], int]:
        doc, rev = await self._redis.hmget(self._key, ["doc", "rev"])
        return (orjson.loads(doc) if doc else {}), int(rev or 0)

    async def replace(self, state: dict[str, Any], expected: int | None) -> int:
        """Write ``state`` if the revision is still ``expected`` (any when None); new revision."""
        ok, revision = await self._redis.fcall(
            "mas_state_cas", 1, self._key, "" if expected is None else expected, orjson.dumps(state)
        )
        if not ok:
            raise Refusal(
                ErrorCode.REVISION_CONFLICT,
                f"state is at revision {revision}, not {expected}; read it again and retry",
            )
        return int(revision)

    async def patch(
        self, changes: dict[str, Any], expected: int | None
    ) -> tuple[dict[str, Any], int]:
        """Apply a JSON merge patch; retried on concurrent writes unless ``expected`` is given."""
        for _ in range(_PATCH_RETRIES):
            state, revision = await self.read()
            if expected is not None and expected != revision:
                raise Refusal(
                    ErrorCode.REVISION_CONFLICT,
                    f"state is at revision {revision}, not {expected}; read it again and retry",
                )
            merged = merge_patch(state, changes)
            try:
                return merged, await self.replace(merged, revision)
            except Refusal:
                if expected is not None:
                    raise
        raise Refusal(ErrorCode.REVISION_CONFLICT, "state kept changing under this patch; retry")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
