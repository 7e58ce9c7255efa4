"""The A2A JSON-RPC binding's documents, in protocol 1.0 and in 0.3: parse calls, build answers.

A call names its method in 1.0 (``SendMessage``, ``SendStreamingMessage``, ``GetTask``,
``CancelTask``, ``SubscribeToTask``) or, from a client that sends no ``A2A-Version`` header, in
0.3 (``message/send``, ``message/stream``, ``tasks/get``, ``tasks/cancel``,
``tasks/resubscribe``); :func:`parse_call`
tells the dialect and the method. Everything inside is kept in 1.0's shapes (parts as
``{"text"}``, ``{"data"}``, ``{"url"}`` or ``{"raw"}`` with ``filename`` and ``mediaType``;
states as ``TASK_STATE_*``) and turned into 0.3's (``kind``, lower-case states, ``file``
parts) only when answered (:func:`message_result`, :func:`task_result`, :func:`status_event`).
Optional features mas does not serve (push notifications, task lists, an extended card) answer
the spec's own errors. Every error carries a ``google.rpc.ErrorInfo`` in ``data`` whose
``metadata.code`` is mas's stable error code.

Pure. Used by :mod:`mas_sidecar.api.a2a.server` and :mod:`mas_sidecar.api.a2a.calls`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

Dialect = Literal["1.0", "0.3"]
VERSION_HEADER = "A2A-Version"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
ERROR_DOMAIN = "mas.dev"
MAX_PARTS = 64

SEND, STREAM, GET, CANCEL = "SendMessage", "SendStreamingMessage", "GetTask", "CancelTask"
SUBSCRIBE = "SubscribeToTask"
_METHODS = frozenset({SEND, STREAM, GET, CANCEL, SUBSCRIBE})
_LEGACY = {
    "message/send": SEND, "message/stream": STREAM, "tasks/get": GET, "tasks/cancel": CANCEL,
    "tasks/resubscribe": SUBSCRIBE,
}  # fmt: skip
_PUSH = frozenset(
    {
        "CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs", "DeleteTaskPushNotificationConfig",
        "tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get",
        "tasks/pushNotificationConfig/list", "tasks/pushNotificationConfig/delete",
    }
)  # fmt: skip
_EXTENDED_CARD = frozenset({"GetExtendedAgentCard", "agent/getAuthenticatedExtendedCard"})
_UNSUPPORTED = frozenset({"ListTasks", "tasks/list"})

# JSON-RPC and A2A error codes (A2A spec, "JSON-RPC error codes").
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL = (
    -32700, -32600, -32601, -32602, -32603,
)  # fmt: skip
TASK_NOT_FOUND, TASK_NOT_CANCELABLE, PUSH_NOT_SUPPORTED, UNSUPPORTED_OPERATION = (
    -32001, -32002, -32003, -32004,
)  # fmt: skip
CONTENT_TYPE_NOT_SUPPORTED, EXTENDED_CARD_NOT_CONFIGURED, VERSION_NOT_SUPPORTED = (
    -32005, -32007, -32009,
)  # fmt: skip
# A gateway check refused the call: a JSON-RPC server error, its ErrorInfo names the check.
REFUSED = -32000

STATES_0_3 = {
    "TASK_STATE_SUBMITTED": "submitted",
    "TASK_STATE_WORKING": "working",
    "TASK_STATE_COMPLETED": "completed",
    "TASK_STATE_FAILED": "failed",
    "TASK_STATE_CANCELED": "canceled",
    "TASK_STATE_REJECTED": "rejected",
}
TERMINAL = frozenset(
    {"TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_CANCELED", "TASK_STATE_REJECTED"}
)


class RpcError(Exception):
    """A call fails with the JSON-RPC ``code``; ``reason`` is mas's stable error code."""

    def __init__(self, code: int, message: str, reason: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.message = message
        self.reason = reason

    def document(self) -> dict[str, Any]:
        """The JSON-RPC ``error`` member."""
        info = {
            "@type": ERROR_INFO_TYPE,
            "reason": self.reason.upper(),
            "domain": ERROR_DOMAIN,
            "metadata": {"code": self.reason},
        }
        return {"code": self.code, "message": self.message, "data": [info]}


@dataclass(frozen=True)
class Call:
    """One JSON-RPC call: its id, dialect, 1.0 method name and params."""

    id: str | int | None
    dialect: Dialect
    method: str
    params: dict[str, Any]


def _dialect(version: str | None, method: str) -> Dialect:
    if version is None or not version.strip():
        return "1.0" if method in _METHODS else "0.3"
    major_minor = ".".join(version.strip().split(".")[:2])
    if major_minor in ("1.0", "0.3"):
        return "1.0" if major_minor == "1.0" else "0.3"
    raise RpcError(
        VERSION_NOT_SUPPORTED, f"A2A version {version[:16]!r} is not served (1.0, 0.3)",
        "version_not_supported",
    )  # fmt: skip


def request_id(document: Any) -> str | int | None:
    """The id of a request document, for its error answer (None when it has none usable)."""
    if isinstance(document, dict) and isinstance(document.get("id"), str | int):
        return document["id"]  # type: ignore[no-any-return]
    return None


def parse_call(document: Any, version: str | None) -> Call:
    """The call in a request body; RpcError for an invalid request or an unserved method."""
    if (
        not isinstance(document, dict)
        or document.get("jsonrpc") != "2.0"
        or not isinstance(document.get("method"), str)
    ):
        raise RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 request", "invalid_request")
    name: str = document["method"]
    params = document.get("params", {})
    if not isinstance(params, dict):
        raise RpcError(INVALID_PARAMS, "params must be an object", "invalid_params")
    if name in _PUSH:
        raise RpcError(
            PUSH_NOT_SUPPORTED, "push notifications are not supported", "push_not_supported"
        )
    if name in _EXTENDED_CARD:
        raise RpcError(
            EXTENDED_CARD_NOT_CONFIGURED, "this agent has no extended card",
            "extended_card_not_configured",
        )  # fmt: skip
    if name in _UNSUPPORTED:
        raise RpcError(UNSUPPORTED_OPERATION, f"{name} is not supported", "unsupported_operation")
    method = _LEGACY.get(name, name)
    if method not in _METHODS:
        raise RpcError(METHOD_NOT_FOUND, f"no method {name[:64]!r}", "method_not_found")
    return Call(request_id(document), _dialect(version, name), method, params)


# -- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    """A client's message, parts in 1.0's shapes."""

    message_id: str
    context_id: str | None
    task_id: str | None
    parts: list[dict[str, Any]]

    def payload(self) -> dict[str, Any]:
        """What the agent receives: the text parts joined, and every part."""
        texts = [part["text"] for part in self.parts if "text" in part]
        return {
            "text": "\n".join(texts),
            "parts": self.parts,
            "message_id": self.message_id,
            "context_id": self.context_id,
        }


def _invalid(message: str) -> RpcError:
    return RpcError(INVALID_PARAMS, message, "invalid_params")


def _optional_text(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 128:
        raise _invalid(f"{what} must be a string of at most 128 characters")
    return value


def parse_part(raw: Any) -> dict[str, Any]:
    """One part in 1.0's shape, from a 1.0 or 0.3 part."""
    if not isinstance(raw, dict):
        raise _invalid("a part must be an object")
    kind = raw.get("kind")
    if kind == "file" and isinstance(raw.get("file"), dict):  # 0.3
        file = raw["file"]
        part: dict[str, Any] = {}
        if "uri" in file:
            part["url"] = file["uri"]
        elif "bytes" in file:
            part["raw"] = file["bytes"]
        for key, to in (("name", "filename"), ("mimeType", "mediaType")):
            if key in file:
                part[to] = file[key]
        raw = part
    content = [key for key in ("text", "data", "url", "raw") if key in raw]
    if len(content) != 1:
        raise _invalid("a part holds exactly one of text, data, url or raw")
    key = content[0]
    if key != "data" and not isinstance(raw[key], str):
        raise _invalid(f"a part's {key} must be a string")
    part = {key: raw[key]}
    for extra in ("filename", "mediaType", "metadata"):
        if extra in raw:
            part[extra] = raw[extra]
    return part


def inbound_message(params: dict[str, Any]) -> Inbound:
    """The message of SendMessage / SendStreamingMessage params (1.0 or 0.3 shapes)."""
    message = params.get("message")
    if not isinstance(message, dict):
        raise _invalid("params.message must be an object")
    if message.get("role") not in ("ROLE_USER", "user"):
        raise _invalid("the message's role must be the user's")
    message_id = _optional_text(message.get("messageId"), "messageId")
    if message_id is None:
        raise _invalid("the message needs a messageId")
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts or len(parts) > MAX_PARTS:
        raise _invalid(f"the message needs 1 to {MAX_PARTS} parts")
    return Inbound(
        message_id,
        _optional_text(message.get("contextId"), "contextId"),
        _optional_text(message.get("taskId"), "taskId"),
        [parse_part(part) for part in parts],
    )


def task_id_param(params: dict[str, Any]) -> str:
    """The task id of GetTask / CancelTask params."""
    task_id = _optional_text(params.get("id"), "id")
    if task_id is None:
        raise _invalid("params.id must name a task")
    return task_id


def reply_parts(payload: Any) -> list[dict[str, Any]]:
    """The agent's reply payload as parts: ``{"text": ...}`` is a text part, ``{"parts":
    [...]}`` its parts as they are, anything else one data part."""
    if isinstance(payload, dict):
        if set(payload) == {"text"} and isinstance(payload["text"], str):
            return [{"text": payload["text"]}]
        if isinstance(payload.get("parts"), list) and payload["parts"]:
            try:
                return [parse_part(part) for part in payload["parts"][:MAX_PARTS]]
            except RpcError:
                pass
        return [{"data": payload}]
    if isinstance(payload, str):
        return [{"text": payload}]
    return [{"data": {"value": payload}}]


def progress_parts(payload: Any) -> list[dict[str, Any]]:
    """A progress report's payload (``{"text", "data"?}``) as parts: its text, and its data as
    a data part when it has any."""
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        return reply_parts(payload)
    parts: list[dict[str, Any]] = [{"text": payload["text"]}]
    if "data" in payload:
        data = payload["data"]
        parts.append({"data": data if isinstance(data, dict) else {"value": data}})
    return parts


def agent_message(
    message_id: str, parts: list[dict[str, Any]], context_id: str, task_id: str | None
) -> dict[str, Any]:
    """An agent's message, 1.0 shape."""
    message: dict[str, Any] = {
        "messageId": message_id,
        "contextId": context_id,
        "role": "ROLE_AGENT",
        "parts": parts,
    }
    if task_id is not None:
        message["taskId"] = task_id
    return message


def task_document(
    *,
    task_id: str,
    context_id: str,
    state: str,
    message: dict[str, Any] | None,
    at_ms: int | None = None,
) -> dict[str, Any]:
    """A task, 1.0 shape: its state, the message that goes with it, and the result artifact
    when it completed."""
    at = time.time() if at_ms is None else at_ms / 1000
    status: dict[str, Any] = {
        "state": state,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
    }
    if message is not None:
        status["message"] = message
    task: dict[str, Any] = {"id": task_id, "contextId": context_id, "status": status}
    if state == "TASK_STATE_COMPLETED" and message is not None:
        task["artifacts"] = [{"artifactId": f"{task_id}-result", "parts": message["parts"]}]
    return task


# -- answers in either dialect ------------------------------------------------------------------


def _part_0_3(part: dict[str, Any]) -> dict[str, Any]:
    if "text" in part:
        return {"kind": "text", "text": part["text"]}
    if "data" in part:
        return {"kind": "data", "data": part["data"]}
    file: dict[str, Any] = {"uri": part["url"]} if "url" in part else {"bytes": part["raw"]}
    if "filename" in part:
        file["name"] = part["filename"]
    if "mediaType" in part:
        file["mimeType"] = part["mediaType"]
    return {"kind": "file", "file": file}


def _message_0_3(message: dict[str, Any]) -> dict[str, Any]:
    converted = {
        **message,
        "kind": "message",
        "role": "agent" if message["role"] == "ROLE_AGENT" else "user",
        "parts": [_part_0_3(part) for part in message["parts"]],
    }
    return converted


def _status_0_3(status: dict[str, Any]) -> dict[str, Any]:
    converted = {**status, "state": STATES_0_3.get(status["state"], "unknown")}
    if "message" in status:
        converted["message"] = _message_0_3(status["message"])
    return converted


def _task_0_3(task: dict[str, Any]) -> dict[str, Any]:
    converted = {**task, "kind": "task", "status": _status_0_3(task["status"])}
    if "artifacts" in task:
        converted["artifacts"] = [
            {**a, "parts": [_part_0_3(p) for p in a["parts"]]} for a in task["artifacts"]
        ]
    return converted


def message_result(message: dict[str, Any], dialect: Dialect, *, wrapped: bool) -> Any:
    """A message as a result: ``{"message": ...}`` in 1.0 where ``wrapped`` (SendMessage and
    stream events), the bare 0.3 message in 0.3."""
    if dialect == "0.3":
        return _message_0_3(message)
    return {"message": message} if wrapped else message


def task_result(task: dict[str, Any], dialect: Dialect, *, wrapped: bool) -> Any:
    """A task as a result (``{"task": ...}`` in 1.0 where ``wrapped``)."""
    if dialect == "0.3":
        return _task_0_3(task)
    return {"task": task} if wrapped else task


def status_event(task: dict[str, Any], dialect: Dialect) -> Any:
    """A stream's status update for ``task``: its last event when the state is terminal."""
    if dialect == "0.3":
        return {
            "kind": "status-update",
            "taskId": task["id"],
            "contextId": task["contextId"],
            "status": _status_0_3(task["status"]),
            "final": task["status"]["state"] in TERMINAL,
        }
    return {
        "statusUpdate": {
            "taskId": task["id"],
            "contextId": task["contextId"],
            "status": task["status"],
        }
    }


def result_document(call_id: str | int | None, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "result": result}


def error_document(call_id: str | int | None, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "error": error.document()}
