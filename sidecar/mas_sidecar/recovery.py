"""Setting up on the Redis server, and again whenever it was restarted or replaced.

What a sidecar needs on the server — the control plane's function library, the ring's consumer
group and those of its senders' streams, its reply streams, its chain head, its registry lease,
its report of the policy revision it enforces — is lost when the server restarts without
persistence or is replaced by another one, and its ACL user is lost on any restart unless the
server keeps an ACL file. No human needs to step in: this loop looks at the server (is the
library there, in this sidecar's version? does the ring still have its group?) every
``PROBE_SECONDS`` while it is not ready, every ``HEALTHY_PROBE_SECONDS`` while it is, and at
once whenever a background loop failed or lost its connection (:meth:`Recovery.look_now`: the
blocking reads always hold connections, and a restarted or replaced server closes them, so a
lost server is noticed at once, and an idle sidecar costs the server few commands); after any
sign of a lost server (a probe
that fails — connection lost, ``WRONGPASS``/``NOAUTH``/``NOPERM`` while the control plane has not
re-created the user, no function library —, a missing group) it sets everything up again as at
start-up: each step is idempotent, so doing it once too often costs a few round trips.

Until the set-up is done, :attr:`Recovery.problem` says why (a :class:`Reason`, machine
readable, and a message): ``/readyz`` answers 503 with it and sends are refused with
``503 redis_unavailable`` (:meth:`Recovery.check_writable`), so no message gets a 202 that a
half-provisioned server would then lose. A sidecar's Redis user may not run ``INFO``, so it
does not compare the server's ``run_id`` (the control plane does, :mod:`mas_control.recovery`): a
restarted server always closes its connections, which the probe notices.

Used by the app's lifespan (the loop), the readiness route and the outbox.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
import redis.exceptions

from mas_core import functions
from mas_core.error_codes import ErrorCode
from mas_core.keys import CONSUMER_GROUP, AgentKeys
from mas_sidecar.aio import wait_event
from mas_sidecar.checks.audit_log import AuditLog
from mas_sidecar.checks.policy_store import PolicyStore
from mas_sidecar.errors import NotProvisioned, Refusal
from mas_sidecar.metrics import Metrics
from mas_sidecar.streams.errors import REDIS_ERRORS
from mas_sidecar.streams.inbox import Inbox
from mas_sidecar.streams.registry import Registry
from mas_sidecar.streams.replies import ReplyWaiter

log = logging.getLogger(__name__)
PROBE_SECONDS = 1.0  # how often the server is looked at while the sidecar is not ready
HEALTHY_PROBE_SECONDS = 30.0  # and while it is (a lost connection makes it look at once)


class Reason(StrEnum):
    """Why the sidecar cannot work on the server now (``/readyz``'s ``reason``)."""

    STARTING = "starting"  # the first set-up is not done yet
    REDIS_UNREACHABLE = "redis_unreachable"  # no connection (down, restarting, loading)
    REDIS_AUTH_FAILED = "redis_auth_failed"  # its ACL user is missing or lacks a right
    FUNCTIONS_MISSING = "functions_missing"  # no mas function library, or another version
    RECOVERING = "recovering"  # the server lost this sidecar's state: setting it up again


@dataclass(frozen=True)
class Problem:
    reason: Reason
    message: str


def problem_of(exc: BaseException) -> Problem | None:
    """What a failed Redis call says about the server: None when it is no sign of a lost or
    unprovisioned server (a bug, or a refusal that set-up cannot repair)."""
    text = str(exc)
    if isinstance(exc, NotProvisioned) or "function not found" in text.lower():
        return Problem(Reason.FUNCTIONS_MISSING, f"waiting for the control plane: {text}")
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError):
        return Problem(
            Reason.REDIS_AUTH_FAILED,
            f"the server refuses this sidecar's Redis user ({text}); the control plane "
            "re-creates it",
        )
    if isinstance(exc, REDIS_ERRORS):
        return Problem(Reason.REDIS_UNREACHABLE, f"Redis cannot be reached: {text}")
    if text.startswith("NOGROUP"):
        return Problem(Reason.RECOVERING, f"the server lost a consumer group: {text}")
    return None


async def functions_missing(client: aioredis.Redis) -> str | None:
    """Why the server cannot run this sidecar's functions (:mod:`mas_core.functions`), or None."""
    try:
        version = await client.fcall("mas_version", 0)
    except redis.exceptions.ResponseError as exc:
        return f"the server has no mas function library ({exc})"
    if version.decode() != functions.VERSION:
        return f"the server has mas functions {version.decode()}, this sidecar {functions.VERSION}"
    return None


class Recovery:
    """Sets the sidecar up on the server, and again after the server lost what it set up."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: AgentKeys,
        *,
        inbox: Inbox,
        replies: ReplyWaiter,
        audit: AuditLog,
        policies: PolicyStore,
        registry: Registry,
        metrics: Metrics,
        wake: asyncio.Event | None = None,
    ) -> None:
        """``wake``: set by the loops when they lose the server (:meth:`look_now`)."""
        self._redis = client
        self._keys = keys
        self._inbox = inbox
        self._replies = replies
        self._audit = audit
        self._policies = policies
        self._registry = registry
        self._metrics = metrics
        self.problem: Problem | None = Problem(Reason.STARTING, "setting up on the server")
        self.set_up = asyncio.Event()  # the first set-up is done
        self._lost = True  # set everything up at the next look
        self._wake = wake or asyncio.Event()

    def alarm(self, loop: str, exc: BaseException) -> None:
        """A background loop failed: look at the server now, and set up again."""
        self._lost = True
        self._wake.set()

    def look_now(self) -> None:
        """A loop lost its connection or could not reach the server: look at it now."""
        self._wake.set()

    def check_writable(self) -> None:
        """Refuse with ``redis_unavailable`` (the reason as its detail) while the sidecar cannot
        work."""
        problem = self.problem
        if problem is not None:
            raise Refusal(
                ErrorCode.REDIS_UNAVAILABLE,
                f"{problem.message}; retry later",
                1,
                detail=problem.reason.value,
            )

    async def run_until(self, stop: asyncio.Event) -> None:
        """Look at the server now and then (see the module docstring) until ``stop``."""
        while not stop.is_set():
            self._wake.clear()
            await self._look()
            healthy = self.problem is None and not self._lost
            await wait_event(self._wake, HEALTHY_PROBE_SECONDS if healthy else PROBE_SECONDS)

    async def _look(self) -> None:
        try:
            # Only ever set here while looking: a loop's alarm may come meanwhile.
            if not self._lost and not await self._intact():
                self._lost = True
            if self._lost:
                self._lost = False  # an alarm during the set-up asks for another one
                await self._restore()
        except (redis.exceptions.RedisError, NotProvisioned) as exc:
            self._lost = True
            problem = problem_of(exc) or Problem(Reason.RECOVERING, f"setting up again: {exc}")
            if problem != self.problem:
                log.warning("not ready: %s: %s", problem.reason.value, problem.message)
            self.problem = problem
            return
        if self.problem is not None:
            log.info("ready on the server (was: %s)", self.problem.reason.value)
        self.problem = None

    async def _intact(self) -> bool:
        """Whether the server still has the library and the ring's group (a server that lost
        them lost the rest too)."""
        if await functions_missing(self._redis) is not None:
            return False
        try:
            await self._redis.xpending(self._keys.ring, CONSUMER_GROUP)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return False
        return True

    async def _restore(self) -> None:
        """Everything the sidecar needs on the server, set up (again): each step idempotent."""
        missing = await functions_missing(self._redis)
        if missing is not None:  # setting up the inbox calls a function (mas_adopt)
            raise NotProvisioned(missing)
        again = self.set_up.is_set()
        if again:
            self.problem = Problem(Reason.RECOVERING, "setting up again on the server")
        await self._inbox.restore()
        await self._replies.restore()
        await self._audit.setup()
        await self._policies.restore()
        await self._registry.register(again=True)  # with the policy: it screens the metadata
        if again:
            self._metrics.recoveries.inc()
            log.warning("set up again on a restarted or replaced Redis server")
        self.set_up.set()
