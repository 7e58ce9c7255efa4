"""An A2A agent outside mas for the tests: the example's glossary on loopback, recording its calls.

The glossary (``examples/a2a/glossary.py``) is an ``a2a-sdk`` server with no mas code, served by
uvicorn in the test's loop; a recorder in front of it keeps each call it gets (the JSON-RPC method
and the Authorization header). Used by tests/test_outbound_a2a.py and
tests/test_operator_handlers.py (a sidecar built from the operator's pod calling it).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from waiting import eventually

from mas_cli.local.redis_server import free_port

EXAMPLE = Path(__file__).parent.parent / "examples" / "a2a" / "glossary.py"
TOKEN = "glossary-token-0123456789abcdef"


def _glossary() -> ModuleType:
    spec = importlib.util.spec_from_file_location("glossary", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Remote:
    url: str
    calls: list[tuple[str, str | None]] = field(default_factory=list)  # (method, Authorization)


class Recorder(BaseHTTPMiddleware):
    def __init__(self, app: Any, remote: Remote) -> None:
        super().__init__(app)
        self.remote = remote

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method == "POST":
            method = orjson.loads(await request.body()).get("method")
            self.remote.calls.append((method, request.headers.get("authorization")))
        return await call_next(request)


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    """The glossary, expecting the bearer token :data:`TOKEN`."""
    port = free_port()
    found = Remote(f"http://127.0.0.1:{port}/")
    app = _glossary().build_app(found.url, TOKEN)
    app.add_middleware(Recorder, remote=found)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, "the glossary serves")
    yield found
    server.should_exit = True
    await serving
