"""Sending again what the sidecar refused for now: rate limits and open circuits.

A send refused with :class:`mas.errors.RateLimitedError` or :class:`mas.errors.CircuitOpenError`
was not sent at all, so trying again cannot send it twice. ``retry=`` on
:meth:`mas.SidecarClient.send` / :meth:`~mas.SidecarClient.request` (and the same methods of
:class:`mas.Agent`) does that for the caller: off by default, bounded in tries and in each
wait. Any other error is raised at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from mas.errors import CircuitOpenError, RateLimitedError

T = TypeVar("T")
RETRYABLE = (RateLimitedError, CircuitOpenError)


@dataclass(frozen=True)
class Retry:
    """Up to ``attempts`` more tries after a refusal. Each waits what the sidecar asked for
    (``retry_after``), or when it named nothing ``backoff`` seconds doubling per try; never
    more than ``max_wait`` seconds, plus up to 10 % of jitter (so that refused senders do not
    all come back at once)."""

    attempts: int = 3
    backoff: float = 0.2
    max_wait: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 0 or self.backoff < 0 or self.max_wait < 0:
            raise ValueError("attempts, backoff and max_wait must not be negative")

    def wait(self, tries: int, refusal: RateLimitedError | CircuitOpenError) -> float:
        """Seconds to wait after the refusal of try ``tries`` (0 for the first)."""
        asked = refusal.retry_after
        wait = asked if asked is not None else self.backoff * 2**tries
        return min(wait, self.max_wait) * random.uniform(1.0, 1.1)


RetryOption = Retry | int | None
"""What ``retry=`` takes: a :class:`Retry`, a number of more tries with the defaults, or None
(no retry)."""


def policy_of(retry: RetryOption) -> Retry:
    """The :class:`Retry` a ``retry=`` option stands for (``Retry(attempts=0)``: none)."""
    if retry is None:
        return Retry(attempts=0)
    if isinstance(retry, Retry):
        return retry
    return Retry(attempts=retry)


async def retrying(call: Callable[[], Awaitable[T]], retry: RetryOption) -> T:
    """``call()``'s result, trying again as ``retry`` says while the sidecar refuses it with
    a rate limit or an open circuit; the last refusal is raised when the tries run out."""
    policy = policy_of(retry)
    tries = 0
    while True:
        try:
            return await call()
        except RETRYABLE as refusal:
            if tries >= policy.attempts:
                raise
            await asyncio.sleep(policy.wait(tries, refusal))
            tries += 1
