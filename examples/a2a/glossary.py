"""An A2A-only agent written with the official ``a2a-sdk`` alone (no mas code): a glossary.

    A2A_TOKEN=... python glossary.py 8799

It answers ``SendMessage`` on ``http://127.0.0.1:<port>/`` (A2A 1.0, JSON-RPC) with the meaning
of the word it is sent, and refuses (401) a call without ``Authorization: Bearer <A2A_TOKEN>``.
A text starting with ``slowly`` is answered as a task that is still working, completed a moment
later (its caller follows it with ``GetTask``); ``fail`` fails the task. mas agents call it
through their sidecars as the ``ExternalAgent`` of ``glossary.yaml``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from a2a.helpers.proto_helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import a2a_pb2 as a2a
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

GLOSSARY = {
    "sidecar": "a process next to an agent that checks and carries its messages",
    "breaker": "a switch that stops calls to a target that keeps failing",
}


def meaning(text: str) -> str:
    word = text.rsplit(maxsplit=1)[-1].strip(".?!").lower() if text.split() else ""
    return f"{word}: {GLOSSARY.get(word, 'not in the glossary')}"


class Glossary(AgentExecutor):
    """Answers with the meaning of the last word of the text."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        if not text.startswith(("slowly", "fail")):
            await event_queue.enqueue_event(new_text_message(meaning(text)))
            return
        task_id, context_id = context.task_id or "", context.context_id or ""
        working = a2a.TaskStatus(state=a2a.TASK_STATE_WORKING)
        await event_queue.enqueue_event(a2a.Task(id=task_id, context_id=context_id, status=working))
        updater = TaskUpdater(event_queue, task_id, context_id)
        await asyncio.sleep(0.2)  # working on it: the caller polls GetTask meanwhile
        answer = updater.new_agent_message([a2a.Part(text=meaning(text))])
        await (updater.failed(answer) if text.startswith("fail") else updater.complete(answer))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id or "", context.context_id or "").cancel()


class AnswersTasksAtOnce(DefaultRequestHandler):
    """Answers ``SendMessage`` with the task as soon as it exists, as long-running A2A agents
    do (the caller follows it with ``GetTask``)."""

    async def on_message_send(self, params: Any, context: Any) -> Any:
        params.configuration.return_immediately = True
        return await super().on_message_send(params, context)


class Bearer(BaseHTTPMiddleware):
    """Refuses JSON-RPC calls without the bearer token (the card stays public)."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.expected = f"Bearer {token}"

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method == "POST" and request.headers.get("authorization") != self.expected:
            return JSONResponse({"error": "unauthenticated"}, status_code=401)
        return await call_next(request)


def card(url: str) -> a2a.AgentCard:
    return a2a.AgentCard(
        name="glossary",
        description="Says what a word means.",
        version="1.0.0",
        supported_interfaces=[
            a2a.AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=a2a.AgentCapabilities(streaming=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            a2a.AgentSkill(
                id="define", name="Define", description="A word's meaning.", tags=["words"]
            )
        ],
    )


def build_app(url: str, token: str) -> Starlette:
    """The glossary's A2A application at ``url``, for callers presenting ``token``."""
    the_card = card(url)
    handler = AnswersTasksAtOnce(Glossary(), InMemoryTaskStore(), the_card)
    routes = [*create_agent_card_routes(the_card), *create_jsonrpc_routes(handler, "/")]
    app = Starlette(routes=routes)
    app.add_middleware(Bearer, token=token)
    return app


def main() -> None:
    import uvicorn  # noqa: PLC0415 - only to serve it from the command line

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8799
    app = build_app(f"http://127.0.0.1:{port}/", os.environ["A2A_TOKEN"])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
