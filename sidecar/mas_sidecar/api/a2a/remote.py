"""Outbound A2A: a request to an external agent, through the gateway checks, over A2A.

``POST /v1/requests`` to an ``ExternalAgent`` (its registry entry carries the endpoint) runs
every send check of the sending sidecar first (:meth:`~mas_sidecar.checks.gateway.Gateway.send`
to :meth:`~mas_sidecar.checks.gateway.Destination.remote_of`: authorization, rate limits, DLP,
the breaker, the ``accepted`` audit entry), so a refused request never reaches the remote. Then
it calls the remote's ``SendMessage`` (A2A 1.0 JSON-RPC, :mod:`.outbound`) with the external
agent's bearer token, read from its file in ``MAS_A2A_REMOTES_DIR`` at each call (so a rotated
token is used at once; never logged, never in the audit), and follows a ``Task`` answer with
``GetTask`` until it is final, the whole bounded by the request's timeout. The outcome feeds
the breaker; a failure (unreachable, an error status, a JSON-RPC error, no final answer in time)
is audited and answered ``502 remote_unavailable`` (``504 request_timeout`` for the time-out).
The answer then passes the receive checks that apply (DLP, the ``received`` audit entry) and
the agent gets it as an ordinary reply: type ``a2a.reply`` (``a2a.error`` when the task failed),
payload as :meth:`.outbound.Answer.payload`.

Imported on the first request to an external agent only (a plain sidecar never loads it); used
by :func:`mas_sidecar.api.routes.messages.send_request`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from mas_core.a2a_remotes import credentials_file
from mas_core.envelope import Envelope
from mas_core.error_codes import ErrorCode
from mas_core.ids import new_id
from mas_sidecar.api.a2a.outbound import Answer, RemoteError, get_task, read_result, send_message
from mas_sidecar.api.a2a.protocol import VERSION_HEADER
from mas_sidecar.checks.gateway import Destination
from mas_sidecar.components import Components
from mas_sidecar.streams.outbox import build_envelope

REPLY_TYPE = "a2a.reply"
ERROR_TYPE = "a2a.error"  # the remote's task failed, was rejected or canceled
MAX_ANSWER_BYTES = 4 * 1024 * 1024
FIRST_POLL_SECONDS, MAX_POLL_SECONDS = 0.05, 1.0


def bearer(directory: Path | None, agent_id: str) -> dict[str, str]:
    """The Authorization header with external agent ``agent_id``'s token; none without one."""
    if directory is None:
        return {}
    try:
        token = (directory / credentials_file(agent_id)).read_text().strip()
    except OSError:
        return {}
    return {"Authorization": f"Bearer {token}"} if token else {}


class RemoteAgents:
    """This sidecar's calls to external agents (one HTTP client, made on first use)."""

    def __init__(self, parts: Components) -> None:
        self._parts = parts
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, envelope: Envelope, url: str, timeout_ms: int) -> Envelope:
        """Check ``envelope`` (to an external agent), call the remote at ``url``, check the
        answer: the reply the agent gets; a Refusal when a check or the remote fails."""
        gateway = self._parts.gateway
        sent = await gateway.send(envelope, Destination.remote_of(envelope.target))
        headers = bearer(self._parts.config.a2a_remotes_dir, sent.target)
        try:
            answer = await asyncio.wait_for(self._ask(url, sent, headers), timeout_ms / 1000)
        except TimeoutError:
            await gateway.remote_failed(
                sent, f"no final answer within {timeout_ms} ms", ErrorCode.REQUEST_TIMEOUT
            )
        except (aiohttp.ClientError, OSError, RemoteError, orjson.JSONDecodeError) as exc:
            await gateway.remote_failed(sent, _describe(exc))
        gateway.remote_succeeded(sent)
        reply = build_envelope(
            sender=sent.target,
            target=sent.sender,
            type=ERROR_TYPE if answer.failed else REPLY_TYPE,
            payload=answer.payload(),
            correlation_id=sent.id,
            is_reply=True,
            trace=sent.trace,
        )
        return await gateway.check_answer(reply)

    async def _ask(self, url: str, envelope: Envelope, headers: Mapping[str, str]) -> Answer:
        answer = await self._call(
            url, send_message(new_id(), envelope.id, envelope.payload), headers
        )
        pause = FIRST_POLL_SECONDS
        while not answer.final:
            if answer.task_id is None:
                raise RemoteError("a task that is not final has no id")
            await asyncio.sleep(pause)  # the remote's task is still working: ask again later
            pause = min(pause * 2, MAX_POLL_SECONDS)
            answer = await self._call(url, get_task(new_id(), answer.task_id), headers)
        return answer

    async def _call(self, url: str, call: dict[str, Any], headers: Mapping[str, str]) -> Answer:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={VERSION_HEADER: "1.0", "Content-Type": "application/json"}
            )
        # No redirects: the token goes to the endpoint the control plane names, nowhere else.
        post = self._session.post(
            url, data=orjson.dumps(call), headers=headers, allow_redirects=False
        )
        async with post as response:
            if response.status != 200:
                raise RemoteError(f"HTTP status {response.status}")
            body = await response.content.read(MAX_ANSWER_BYTES + 1)
            if len(body) > MAX_ANSWER_BYTES:
                raise RemoteError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
            return read_result(orjson.loads(body))


def _describe(exc: Exception) -> str:
    """What went wrong, without anything the remote sent back but its error's summary."""
    if isinstance(exc, RemoteError):
        return str(exc)
    if isinstance(exc, orjson.JSONDecodeError):
        return "the answer is not JSON"
    return f"cannot reach it ({type(exc).__name__})"


def remotes(app_remotes: dict[str, Any], parts: Components) -> RemoteAgents:
    """The sidecar's outbound A2A client, made on first use (kept in the app, closed with it)."""
    client = app_remotes.get("client")
    if client is None:
        client = app_remotes["client"] = RemoteAgents(parts)
    assert isinstance(client, RemoteAgents)
    return client
