"""Outbound A2A documents: the calls a sidecar makes to an external agent, and its answers.

A request to an ``ExternalAgent`` becomes ``SendMessage`` (A2A 1.0, JSON-RPC binding) whose
parts are the request's payload as :func:`~mas_sidecar.api.a2a.protocol.reply_parts` makes
them (``{"text"}`` a text part, ``{"parts"}`` those parts, anything else one data part); a
``Task`` it answers is followed with ``GetTask``. :func:`read_result` reads either answer,
in 1.0's or 0.3's shapes, as an :class:`Answer`, whose :meth:`Answer.payload` is what the
agent gets as the reply: the same shape an inbound call has (``text``, ``parts``,
``message_id``, ``context_id``) plus ``task_id`` and ``state``. A remote's JSON-RPC error or a
document that is not an answer raises :class:`RemoteError` (its text names no payload data).

Pure. Used by :mod:`mas_sidecar.api.a2a.remote`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mas_sidecar.api.a2a.protocol import (
    GET,
    SEND,
    STATES_0_3,
    TERMINAL,
    Inbound,
    RpcError,
    parse_part,
    reply_parts,
)

FAILED_STATES = frozenset({"TASK_STATE_FAILED", "TASK_STATE_REJECTED", "TASK_STATE_CANCELED"})
_STATES_1_0 = {legacy: state for state, legacy in STATES_0_3.items()}


class RemoteError(Exception):
    """The remote agent answered something that is not a usable answer."""


@dataclass(frozen=True)
class Answer:
    """The remote's answer: a final message, or a task (final or still working)."""

    state: str  # TASK_STATE_*; TASK_STATE_COMPLETED for a message
    task_id: str | None
    inbound: Inbound | None  # the agent's message, when the answer has one

    @property
    def final(self) -> bool:
        return self.state in TERMINAL

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    def payload(self) -> dict[str, Any]:
        """What the asking agent gets as the reply's payload."""
        inbound = self.inbound or Inbound("", None, self.task_id, [])
        return {**inbound.payload(), "task_id": self.task_id, "state": self.state}


def send_message(call_id: str, message_id: str, payload: Any) -> dict[str, Any]:
    """The ``SendMessage`` call carrying ``payload``."""
    message = {"messageId": message_id, "role": "ROLE_USER", "parts": reply_parts(payload)}
    return {"jsonrpc": "2.0", "id": call_id, "method": SEND, "params": {"message": message}}


def get_task(call_id: str, task_id: str) -> dict[str, Any]:
    """The ``GetTask`` call for ``task_id``."""
    return {"jsonrpc": "2.0", "id": call_id, "method": GET, "params": {"id": task_id}}


def _message(raw: Any, task_id: str | None) -> Inbound:
    if not isinstance(raw, dict) or not isinstance(raw.get("parts"), list):
        raise RemoteError("the answer's message has no parts")
    try:
        parts = [parse_part(part) for part in raw["parts"]]
    except RpcError as exc:
        raise RemoteError(f"the answer's message is invalid: {exc.message}") from None
    context = raw.get("contextId")
    return Inbound(
        str(raw.get("messageId", "")),
        context if isinstance(context, str) else None,
        task_id,
        parts,
    )


def _task(raw: dict[str, Any]) -> Answer:
    task_id = raw.get("id")
    status = raw.get("status")
    if not isinstance(task_id, str) or not isinstance(status, dict):
        raise RemoteError("the answer's task has no id or status")
    state = status.get("state")
    state = _STATES_1_0.get(state, state) if isinstance(state, str) else None
    if state is None or not state.startswith("TASK_STATE_"):
        raise RemoteError("the answer's task has no state")
    message = None
    artifacts = raw.get("artifacts")
    if isinstance(artifacts, list) and artifacts and isinstance(artifacts[-1], dict):
        message = _message(artifacts[-1], task_id)
    elif status.get("message") is not None:
        message = _message(status["message"], task_id)
    return Answer(state, task_id, message)


def read_result(document: Any) -> Answer:
    """The answer in a JSON-RPC response to SendMessage or GetTask; RemoteError otherwise."""
    if not isinstance(document, dict):
        raise RemoteError("the answer is not a JSON-RPC response")
    error = document.get("error")
    if isinstance(error, dict):
        raise RemoteError(f"JSON-RPC error {error.get('code')}: {str(error.get('message'))[:200]}")
    result = document.get("result")
    if not isinstance(result, dict):
        raise RemoteError("the answer has no result")
    if isinstance(result.get("message"), dict):
        return Answer("TASK_STATE_COMPLETED", None, _message(result["message"], None))
    if isinstance(result.get("task"), dict):
        return _task(result["task"])
    kind = result.get("kind")  # 0.3: the message or task itself
    if kind == "message":
        return Answer("TASK_STATE_COMPLETED", None, _message(result, None))
    if kind == "task" or "status" in result:
        return _task(result)
    raise RemoteError("the answer is neither a message nor a task")
