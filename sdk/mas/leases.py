"""Keeping the leases of running handlers, all of an agent's in one request per tick.

The sidecar leases each delivery for ``lease_ms`` (it says how long in the delivery event): not
acked by then, the message is delivered again, maybe to another replica, while the first
handler may still be running. So while a handler runs, :class:`LeaseKeeper` renews its lease:
one renewer per :class:`mas.Agent`, which every third of the lease (less up to 20 % of jitter,
so that many agents do not renew in step) extends the leases of *all* deliveries whose handlers
are still running in one request (``POST /v1/deliveries/extend``), and stops renewing a
delivery as soon as its handler returns or raises.

A lease that cannot be renewed is lost: the sidecar answers that it no longer holds it (it ran
out, or another replica took it over), the sidecar cannot be reached on a second try shortly
after the first, or the same message is delivered to this agent again while its handler runs.
Then the keeper sets the message's ``lease_lost`` event and cancels the handler's task
(``asyncio.CancelledError`` at the handler's current ``await``); the agent neither acks nor
nacks that message, which is, or will be, another delivery's.

Used by :class:`mas.Agent` (one keeper each) and :meth:`mas.AgentMessage.extend`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mas.client import SidecarClient
from mas.errors import MasError

logger = logging.getLogger("mas.leases")

DEFAULT_LEASE_MS = 30_000  # the sidecar's default, for a sidecar that does not say
MAX_BATCH = 1000  # delivery ids per extend request (the sidecar's bound)
_JITTER = (0.8, 1.0)  # a tick comes after this share of a third of the lease
_RETRY_DELAY_S = 1.0  # a failed renewal is tried once more after this (or a sixth of the lease)
_FAILURES = (MasError, aiohttp.ClientError, TimeoutError)


@dataclass(eq=False)
class DeliveryLease:
    """One delivery's lease as the agent holds it: ``lost`` is the message's ``lease_lost``;
    ``task`` is cancelled when it is lost; ``deadline`` is the handler's ``timeout``, which
    :meth:`give` moves."""

    id: str
    lease_ms: int = DEFAULT_LEASE_MS
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = None
    deadline: asyncio.Timeout | None = None

    def lose(self, why: str) -> None:
        """The lease is gone: tell the handler (``lost``) and cancel its task."""
        if self.lost.is_set():
            return
        self.lost.set()
        logger.warning("lost the lease of delivery %s (%s): cancelling its handler", self.id, why)
        if self.task is not None and not self.task.done():
            self.task.cancel(f"lease of delivery {self.id} lost: {why}")

    def give(self, seconds: float) -> None:
        """Let the handler run at least ``seconds`` more before its ``timeout`` cancels it."""
        if self.deadline is None:
            return
        until = asyncio.get_running_loop().time() + seconds
        when = self.deadline.when()
        if when is not None and when < until:
            self.deadline.reschedule(until)


class LeaseKeeper:
    """Renews the leases it holds (:meth:`holding`) until :meth:`aclose`."""

    def __init__(self, client: SidecarClient) -> None:
        self._client = client
        self._held: dict[str, DeliveryLease] = {}
        self._holding = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def holding(self, lease: DeliveryLease) -> Iterator[None]:
        """Renew ``lease`` while inside (the handler runs)."""
        self._held[lease.id] = lease
        self._holding.set()
        if self._renewer is None:
            self._renewer = asyncio.create_task(self._renew_forever(), name="mas-leases")
        try:
            yield
        finally:
            if self._held.get(lease.id) is lease:
                del self._held[lease.id]

    def delivered_again(self, message_id: str) -> None:
        """The sidecar delivered ``message_id`` again while a handler still holds it (its
        lease ran out and this replica's sidecar took it over): that handler's lease is lost."""
        lease = self._held.get(message_id)
        if lease is not None:
            lease.lose("it was delivered again")

    async def aclose(self) -> None:
        """Stop renewing."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    async def _renew_forever(self) -> None:
        while True:
            while not self._held:
                self._holding.clear()
                await self._holding.wait()
            shortest = min(lease.lease_ms for lease in self._held.values())
            await asyncio.sleep(shortest / 3000 * random.uniform(*_JITTER))
            held = list(self._held.values())
            for start in range(0, len(held), MAX_BATCH):
                await self._renew(held[start : start + MAX_BATCH])

    async def _renew(self, leases: list[DeliveryLease]) -> None:
        """Extend ``leases`` in one request (once more if it failed); lose what is not renewed."""
        ids = [lease.id for lease in leases]
        try:
            _, unknown = await self._extend(ids, leases[0].lease_ms)
            why = "the sidecar no longer holds it"
        except _FAILURES as exc:
            unknown, why = ids, f"the sidecar could not renew it: {exc}"
        for message_id in unknown:
            lease = self._held.get(message_id)
            if lease is not None:  # else its handler is done already
                lease.lose(why)

    async def _extend(self, ids: list[str], lease_ms: int) -> tuple[list[str], list[str]]:
        try:
            return await self._client.extend_many(ids)
        except _FAILURES as exc:
            logger.warning("could not renew %d leases (%s); trying once more", len(ids), exc)
        await asyncio.sleep(min(_RETRY_DELAY_S, lease_ms / 6000))
        return await self._client.extend_many(ids)
