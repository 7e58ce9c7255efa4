"""Rate limits on this agent's sends: token buckets per policy limit.

``replica`` scope keeps the bucket in this process (no Redis round trip); ``agent`` scope keeps
it in Redis under the agent's hash tag, updated by one call of the ``mas_bucket_take`` function
(:mod:`mas_core.functions`) with the server's clock, so all replicas share it. An external
client calling the agent (inbound A2A) has buckets of its own under the same limits, so it
cannot spend the agent's. Used by the gateway checks on the send path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from mas_core.keys import AgentKeys
from mas_core.policy.document import RateLimit


@dataclass
class Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst``."""

    rate: float
    burst: int
    tokens: float = -1.0
    at: float = 0.0

    def take(self, now: float) -> float:
        """Take a token; 0 when granted, else the seconds until one is available."""
        if self.tokens < 0:
            self.tokens, self.at = float(self.burst), now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """The buckets of one agent, rebuilt when a limit's settings change."""

    def __init__(self, client: aioredis.Redis, keys: AgentKeys) -> None:
        self._redis = client
        self._keys = keys
        self._local: dict[tuple[RateLimit, str | None], Bucket] = {}

    async def check(
        self, limits: tuple[RateLimit, ...], principal: str | None = None
    ) -> tuple[RateLimit, float] | None:
        """The first limit that refuses a send now, with seconds to wait; None when all allow.
        ``principal``: the external client the send is for (its own buckets)."""
        now = time.monotonic()
        for limit in limits:
            if limit.scope == "replica":
                bucket = self._local.setdefault((limit, principal), Bucket(limit.rate, limit.burst))
                wait = bucket.take(now)
            else:
                name = limit.name if principal is None else f"{limit.name}:{principal}"
                key = self._keys.ratelimit(name)
                wait = float(
                    await self._redis.fcall("mas_bucket_take", 1, key, limit.rate, limit.burst)
                )
            if wait > 0:
                return limit, wait
        return None
