"""Inbound A2A calls as mas requests: every gateway check, then an ordinary delivery.

``SendMessage`` from client ``partner`` becomes a request of type ``a2a.message`` from the
principal ``external/partner`` to this agent (:func:`mas_sidecar.streams.outbox.build_envelope`
with ``principal``): authorization by the policy's rules for that principal, rate limits, DLP
over the message's parts (text, data, file names and URLs), the circuit breaker, signing with
this sidecar's key and the audit entry all run as for any request
(:meth:`mas_sidecar.checks.gateway.Gateway.admit`); the receive checks run again when the agent's
inbox reads it, and the agent gets it like any message. Its reply (through every check of the
reply route) completes the call: within ``MAS_A2A_WAIT_MS`` it is the call's ``Message``;
otherwise the call answers a ``Task``, which the reply completes later (``GetTask``, a stream).
A reply of type ``a2a.error`` fails the task. Each progress report of the handler
(:meth:`mas.AgentMessage.progress`, which passed the reply route's checks) becomes the working
task's status message, which its streams send as a status update. ``CancelTask`` sends
``a2a.cancel`` (payload ``{"task_id"}``) to the agent, through the same checks, and cancels
the task. A task not answered within ``TASK_TIMEOUT_MS`` fails.

A refusal answers a JSON-RPC error naming its mas code: a DLP block is ``-32602`` (invalid
params), any other refusal ``-32000``.

Used by :mod:`mas_sidecar.api.a2a.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from mas_core.envelope import Envelope
from mas_core.error_codes import ErrorCode
from mas_core.ids import new_id
from mas_sidecar.api.a2a.protocol import (
    INVALID_PARAMS,
    REFUSED,
    TASK_NOT_CANCELABLE,
    TASK_NOT_FOUND,
    UNSUPPORTED_OPERATION,
    Inbound,
    RpcError,
    agent_message,
    progress_parts,
    reply_parts,
)
from mas_sidecar.api.a2a.tasks import Task, Tasks
from mas_sidecar.api.errors import ApiError
from mas_sidecar.components import Components
from mas_sidecar.errors import Refusal
from mas_sidecar.streams.outbox import build_envelope
from mas_sidecar.streams.replies import MAX_TIMEOUT_MS

log = logging.getLogger(__name__)
MESSAGE_TYPE = "a2a.message"
CANCEL_TYPE = "a2a.cancel"
ERROR_TYPE = "a2a.error"  # a reply of this type fails the task
TASK_TIMEOUT_MS = MAX_TIMEOUT_MS


def rpc_error(failure: Refusal | ApiError) -> RpcError:
    """The JSON-RPC error that answers a refused call."""
    error = ApiError.of(failure)
    code = INVALID_PARAMS if error.code == ErrorCode.DLP_BLOCKED else REFUSED
    return RpcError(code, error.message, error.code)


class Calls:
    """The A2A calls of this replica, and their tasks."""

    def __init__(self, parts: Components) -> None:
        self._parts = parts
        self._tasks = Tasks()
        self._wait = parts.config.a2a_wait_ms / 1000

    def _envelope(
        self, principal: str, type: str, payload: object, *, ask: bool, trace: Mapping[str, str]
    ) -> Envelope:
        """``payload`` to this agent for ``principal``; with ``ask``, as a request."""
        me = self._parts.config.agent_id
        return build_envelope(
            sender=me, target=me, type=type, payload=payload,
            reply_to=self._parts.config.replica if ask else None,
            ttl_ms=TASK_TIMEOUT_MS if ask else None, trace=trace, principal=principal,
        )  # fmt: skip

    async def _send(self, envelope: Envelope, reply: asyncio.Future[Envelope] | None) -> None:
        """Send ``envelope`` through every check; ``reply``: the future of a request's reply
        (:meth:`~mas_sidecar.streams.replies.ReplyWaiter.expect`), forgotten if it fails."""
        parts = self._parts
        try:
            try:
                await parts.outbox.resolve(envelope.target)
                if reply is not None:
                    await parts.replies.prepare(envelope.target)
                await parts.outbox.send(envelope, "message" if reply is None else "request")
            except BaseException:
                parts.replies.forget(envelope.id)
                raise
        except (Refusal, ApiError) as failure:
            raise rpc_error(failure) from None

    async def start(self, principal: str, inbound: Inbound, trace: Mapping[str, str]) -> Task:
        """Send the client's message to the agent; the task that its reply completes, and
        that the handler's progress reports update."""
        if inbound.task_id is not None:
            raise RpcError(
                UNSUPPORTED_OPERATION, "a message cannot continue a task here",
                "unsupported_operation",
            )  # fmt: skip
        context_id = inbound.context_id or new_id()
        payload = {**inbound.payload(), "context_id": context_id}
        envelope = self._envelope(principal, MESSAGE_TYPE, payload, ask=True, trace=trace)
        task = Task(envelope.id, context_id, principal, envelope.id)
        reply = self._parts.replies.expect(
            envelope.id, envelope.target, lambda report: self._progressed(task, report)
        )
        await self._send(envelope, reply)
        self._tasks.add(task)
        expiry = asyncio.get_running_loop().call_later(
            TASK_TIMEOUT_MS / 1000, self._expire, task, reply
        )
        reply.add_done_callback(lambda done: self._answered(task, done, expiry))
        return task

    async def answer_within_call(self, task: Task) -> None:
        """Wait for ``task``'s answer as long as a call waits (``MAS_A2A_WAIT_MS``)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task.changed(), self._wait)

    def task(self, principal: str, task_id: str) -> Task:
        """``principal``'s task ``task_id``; TaskNotFound for another's, as for none."""
        task = self._tasks.get(task_id, principal)
        if task is None:
            raise RpcError(TASK_NOT_FOUND, f"no task {task_id}", "task_not_found")
        return task

    async def cancel(self, principal: str, task_id: str, trace: Mapping[str, str]) -> Task:
        """Tell the agent's handler (``a2a.cancel``) and cancel the task."""
        task = self.task(principal, task_id)
        if task.finished:
            raise RpcError(
                TASK_NOT_CANCELABLE, f"task {task_id} has finished", "task_not_cancelable"
            )
        payload = {"task_id": task.id, "context_id": task.context_id}
        await self._send(
            self._envelope(principal, CANCEL_TYPE, payload, ask=False, trace=trace), None
        )
        self._parts.replies.forget(task.request_id)
        task.settle("TASK_STATE_CANCELED", None)
        return task

    def _progressed(self, task: Task, report: Envelope) -> None:
        """A progress report of the handler (it passed the checks): the task's status message."""
        parts = progress_parts(report.payload)
        task.progress(agent_message(report.id, parts, task.context_id, task.id))

    def _answered(
        self, task: Task, reply: asyncio.Future[Envelope], expiry: asyncio.TimerHandle
    ) -> None:
        expiry.cancel()
        self._parts.replies.forget(task.request_id)
        if reply.cancelled() or reply.exception() is not None:
            return
        envelope = reply.result()
        message = agent_message(
            envelope.id, reply_parts(envelope.payload), task.context_id, task.id
        )
        state = "TASK_STATE_FAILED" if envelope.type == ERROR_TYPE else "TASK_STATE_COMPLETED"
        task.settle(state, message)

    def _expire(self, task: Task, reply: asyncio.Future[Envelope]) -> None:
        self._parts.replies.forget(task.request_id)
        text = f"no answer within {TASK_TIMEOUT_MS // 1000} s"
        if task.settle(
            "TASK_STATE_FAILED",
            agent_message(new_id(), [{"text": text}], task.context_id, task.id),
        ):
            log.info("A2A task %s failed: %s", task.id, text)
        if not reply.done():
            reply.cancel()
