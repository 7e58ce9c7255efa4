"""One writer per sidecar: every message and audit write goes through it, batched and in order.

Requests submit stream appends and await the answers; a single task takes everything queued so
far and sends it as one pipeline (one round trip), then the next batch. So concurrent sends share
round trips, a message and its audit entry go out together, and audit entries reach Redis in the
order their chain was computed.

Within a pipeline, the appends to one stream go as one call of the ``mas_append`` function
(:mod:`mas_core.functions`, up to ``APPENDS_PER_CALL`` entries each, in submission order): a batch
of 100 messages to one target costs one call for this sender's stream into the target and one
for the audit stream, not 200 commands whose packing and answers the sidecar would handle one by
one. A call to a sender's stream into a target also adds the sender to the target's senders set
(and, when it was not there yet, rings the target's ring, see :mod:`mas_sidecar.streams.inbox`), and
answers the stream's length, which every append in it gets: the circuit breaker reads from it
this sender's backlog at the target. A call runs atomically, so its entries appear together,
and a sender is never listed without its stream.

A submission may also carry *latest* commands, keyed: writes of which only the last per key in a
pipeline matters (the audit chain's head). Each key is sent once per pipeline, after the appends,
with the last command submitted for it; every submitter of the key gets that one answer.

A submission may also carry *final* commands, sent as they are after the latest commands: a
command whose effect must follow every write submitted before it (the receive checks' function
call that appends the receipt's audit entry only when it accepts every message, see
:mod:`mas_sidecar.checks.gateway`).

With replicas to wait for (``MAS_REDIS_WAIT_REPLICAS``), each pipeline ends with ``WAIT n
timeout`` on the same connection, so its answer says how many replicas hold everything the
pipeline wrote. Fewer than ``n``: every submission of the batch fails with ``503
replication_timeout``. Such a message was written and may still be delivered (a 202 promises
delivery at least once, a 503 promises nothing either way); a client that sends it again sends
a second message, with its own id. With ``n`` equal to the number of replicas, whichever
replica Sentinel promotes holds every message that got a 202.

Used by the send path and the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from mas_core.error_codes import ErrorCode
from mas_sidecar.errors import Refusal
from mas_sidecar.streams.errors import REDIS_ERRORS

log = logging.getLogger(__name__)
Command = tuple[Any, ...]
Latest = Mapping[Hashable, Command]
NOTHING_LATEST: Latest = {}
APPENDS_PER_CALL = 256  # entries per function call: bounds how long one call holds the server
STOP_POLL_SECONDS = 1.0  # an idle writer looks at its stop event this often


@dataclass(frozen=True)
class Discovery:
    """What a sender's appends to a target also name so that the target finds its stream: the
    target's senders set and ring, and the sender's id."""

    senders: str
    ring: str
    sender: str


@dataclass(frozen=True)
class Append:
    """One entry for ``stream``: its field/value pairs, flat; ``maxlen`` trims the stream to
    about that many entries (0: never); ``measure`` asks for the stream's length (else the
    number of entries its call appended); ``existing_only`` drops the entry when the stream
    does not exist; ``discovery``: the stream is a sender's stream into a target. Appends to
    one stream share these settings (but ``measure``, asked by any)."""

    stream: str
    fields: Sequence[Any]
    maxlen: int = 0
    measure: bool = False
    existing_only: bool = False
    discovery: Discovery | None = None


class ReplicationTimeout(Refusal):
    """Written to the primary, but fewer replicas than asked confirmed it in time."""


@dataclass(frozen=True)
class Replication:
    """How many replicas must hold a batch before its submitters hear of success, and how
    long the server waits for them."""

    replicas: int
    timeout_ms: int

    def command(self) -> Command:
        return ("WAIT", self.replicas, self.timeout_ms)

    def shortfall(self, acknowledged: int) -> ReplicationTimeout:
        return ReplicationTimeout(
            ErrorCode.REPLICATION_TIMEOUT,
            f"written, but {acknowledged} of {self.replicas} replicas confirmed it within "
            f"{self.timeout_ms} ms: it may still be delivered, or be lost in a failover; "
            "sending it again sends a second message",
            1,
        )


class _Submission(NamedTuple):
    appends: Sequence[Append]
    latest: Latest
    final: Sequence[Command]
    future: asyncio.Future[list[Any]]


class Writer:
    """Batches submitted appends into pipelines, one at a time."""

    def __init__(self, client: aioredis.Redis, replication: Replication | None = None) -> None:
        self._redis = client
        self._replication = replication
        self._queue: list[_Submission] = []
        self._wake: asyncio.Future[None] | None = None  # resolved by the next submission
        self._flushing = False

    @property
    def idle(self) -> bool:
        """Whether nothing is queued nor being written: a submission now goes out at once."""
        return not self._queue and not self._flushing

    @property
    def replicated(self) -> bool:
        """Whether each pipeline waits for replicas (a shortfall fails every submission of it,
        answers unread)."""
        return self._replication is not None

    def submit(
        self,
        appends: Sequence[Append],
        latest: Latest = NOTHING_LATEST,
        final: Sequence[Command] = (),
    ) -> asyncio.Future[list[Any]]:
        """Queue ``appends``, ``latest`` and ``final`` (see the module docstring); the answers:
        for each append, its stream's length after its call when measured (else how many entries
        its call appended), then those of ``latest`` in its order, then those of ``final``."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(appends, latest, final, future))
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        return future

    async def run_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set() or self._queue:
            if not self._queue:
                await self._await_submission(STOP_POLL_SECONDS)
                continue
            batch, self._queue = self._queue, []
            self._flushing = True
            try:
                await self._flush(batch)
            finally:
                self._flushing = False

    async def _await_submission(self, seconds: float) -> None:
        """Wait for the next submission, or ``seconds`` (to look at the stop event again): on a
        future that :meth:`submit` resolves, so a lone submission is written at the loop's next
        turn, with no waiter task between it and its pipeline."""
        loop = asyncio.get_running_loop()
        wake = self._wake = loop.create_future()
        timer = loop.call_later(seconds, _settle, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    async def _flush(self, batch: list[_Submission]) -> None:
        calls: list[tuple[str, list[Append]]] = []  # (stream, its appends) per function call
        open_calls: dict[str, int] = {}  # stream -> its call still taking appends
        placed: list[list[int]] = []  # per submission: the call of each of its appends
        latest: dict[Hashable, Command] = {}
        finals: list[list[int]] = []  # per submission: the pipeline index of each final command
        final: list[Command] = []
        for submission in batch:
            indexes: list[int] = []
            for append in submission.appends:
                index = open_calls.get(append.stream)
                if index is None or len(calls[index][1]) >= APPENDS_PER_CALL:
                    index = open_calls[append.stream] = len(calls)
                    calls.append((append.stream, []))
                calls[index][1].append(append)
                indexes.append(index)
            placed.append(indexes)
            latest.update(submission.latest)
            finals.append(list(range(len(final), len(final) + len(submission.final))))
            final += submission.final
        commands = [_call(appends) for _, appends in calls]
        waits = [self._replication.command()] if self._replication else []
        try:
            answers = await self._pipeline([*commands, *latest.values(), *final, *waits])
        except REDIS_ERRORS as exc:
            _fail_all(batch, exc)
            return
        if self._replication is not None:
            acknowledged = answers.pop()
            if isinstance(acknowledged, Exception) or acknowledged < self._replication.replicas:
                if isinstance(acknowledged, Exception):
                    log.error("WAIT failed: %s", acknowledged)
                    acknowledged = 0
                _fail_all(batch, self._replication.shortfall(acknowledged))
                return
        ends = len(commands) + len(latest)
        shared = dict(zip(latest, answers[len(commands) : ends], strict=True))
        for (_, keys, _, future), indexes, ours in zip(batch, placed, finals, strict=True):
            if future.done():
                continue
            results = [answers[index] for index in indexes] + [shared[key] for key in keys]
            results += [answers[ends + index] for index in ours]
            failure = next((r for r in results if isinstance(r, Exception)), None)
            if failure is not None:
                log.error("a batched write failed: %s", failure)
                future.set_exception(failure)
            else:
                future.set_result(results)

    async def _pipeline(self, commands: list[Command]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            answers: list[Any] = await pipe.execute(raise_on_error=False)
        return answers


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _fail_all(batch: list[_Submission], failure: Exception) -> None:
    for submission in batch:
        if not submission.future.done():
            submission.future.set_exception(failure)


def _call(appends: list[Append]) -> Command:
    """The function call that appends ``appends`` (all to one stream, in order)."""
    first = appends[0]
    keys: list[str] = [first.stream]
    options = ("l" if any(append.measure for append in appends) else "") + (
        "x" if first.existing_only else ""
    )
    arguments: list[Any] = [options]
    if first.discovery is not None:
        keys += (first.discovery.senders, first.discovery.ring)
        arguments.append(first.discovery.sender)
    for append in appends:
        arguments += (len(append.fields) // 2, append.maxlen, *append.fields)
    return ("FCALL", "mas_append", len(keys), *keys, *arguments)
