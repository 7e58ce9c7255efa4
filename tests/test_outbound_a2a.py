"""Outbound A2A: a mas agent asks an A2A agent outside mas, through its own sidecar's checks.

The remote is the example's glossary (``examples/a2a/glossary.py``, :mod:`a2a_remote`), an
``a2a-sdk`` server with no mas code, on loopback, recording each call it gets. The asking
agent's sidecar is a real process on real Valkey, registered with the ``ExternalAgent`` as the
control plane does, its token in the sidecar's remotes directory. The tests play the refusals
too: a request the policy does not allow never reaches the remote, a DLP block of the answer, a
remote that is down (an audited error, the breaker opens).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import pytest
import redis
from a2a_remote import TOKEN, Remote
from aiohttp import web
from api import Api
from policies import publish

from mas_cli.local.redis_server import free_port
from mas_control.provision import forget_agent, register_external_agent
from mas_core.a2a_remotes import credentials_file
from mas_core.keys import AgentKeys

if TYPE_CHECKING:
    from conftest import Sidecars

ASKER = "default/asker"
REMOTE = "default/glossary"
ALLOW = {"name": "ask", "action": "allow", "from": {"agents": [ASKER]},
         "to": {"agents": [REMOTE]}, "types": ["ask.*"]}  # fmt: skip


@pytest.fixture
def asker(sidecars: Sidecars, redis_client: redis.Redis, remote: Remote, tmp_path: Path) -> Any:
    """The asking agent's sidecar, with the glossary registered and its token in reach."""
    remotes = tmp_path / "a2a-remotes"
    remotes.mkdir()
    (remotes / credentials_file(REMOTE)).write_text(TOKEN)
    register_external_agent(redis_client, REMOTE, ["define"], remote.url, "Says what a word means.")
    yield sidecars.start(ASKER, MAS_A2A_REMOTES_DIR=str(remotes))
    forget_agent(redis_client, REMOTE)


async def _ask(http: aiohttp.ClientSession, sidecar: Any, text: str) -> tuple[int, Any]:
    body = {"to": REMOTE, "type": "ask.define", "payload": {"text": text}, "timeout_ms": 20_000}
    return await Api(http, sidecar).call("POST", "/v1/requests", body)


def _audit(redis_client: redis.Redis) -> list[dict[str, Any]]:
    return [orjson.loads(f[b"e"]) for _, f in redis_client.xrange(AgentKeys(ASKER).audit)]


async def _policy(
    http: aiohttp.ClientSession, sidecar: Any, client: redis.Redis, **spec: Any
) -> None:
    document = publish(client, **spec)
    await Api(http, sidecar).wait_for_revision(document.revision)


async def _answered(
    http: aiohttp.ClientSession, sidecar: Any, client: redis.Redis, text: str
) -> dict[str, Any]:
    """The reply to ``text``, asked with the policy allowing it."""
    await _policy(http, sidecar, client, rules=[ALLOW])
    status, reply = await _ask(http, sidecar, text)
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


async def test_a_request_to_an_external_agent_is_answered_as_an_ordinary_reply(
    asker: Any, remote: Remote, redis_client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    reply = await _answered(http, asker, redis_client, "what is a sidecar")
    assert reply["from"] == REMOTE and reply["type"] == "a2a.reply"
    assert reply["payload"]["text"].startswith("sidecar: a process next to an agent")
    assert reply["payload"]["state"] == "TASK_STATE_COMPLETED"
    assert remote.calls == [("SendMessage", f"Bearer {TOKEN}")]
    audit = _audit(redis_client)
    assert [(e["decision"], e["to"]) for e in audit] == [("accepted", REMOTE), ("received", ASKER)]
    # The token reaches the remote only: not the reply, the audit or the sidecar's log.
    assert asker.log_path is not None
    for text in (
        orjson.dumps(reply).decode(),
        orjson.dumps(audit).decode(),
        asker.log_path.read_text(),
    ):
        assert TOKEN[:16] not in text


async def test_a_task_is_followed_with_get_task_until_it_is_final(
    asker: Any, remote: Remote, redis_client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    reply = await _answered(http, asker, redis_client, "slowly: breaker")
    assert reply["payload"]["text"].startswith("breaker: a switch")
    assert reply["payload"]["task_id"]
    methods = [method for method, _ in remote.calls]
    assert methods[0] == "SendMessage" and set(methods[1:]) == {"GetTask"}


async def test_a_failed_task_is_an_a2a_error_reply(
    asker: Any, redis_client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    reply = await _answered(http, asker, redis_client, "fail: sidecar")
    assert reply["type"] == "a2a.error" and reply["payload"]["state"] == "TASK_STATE_FAILED"


async def test_a_request_the_policy_does_not_allow_never_reaches_the_remote(
    asker: Any, remote: Remote, redis_client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    await _policy(http, asker, redis_client, rules=[])
    status, refused = await _ask(http, asker, "what is a sidecar")
    assert (status, refused["error"]["code"]) == (403, "forbidden")
    assert remote.calls == []
    assert [e["decision"] for e in _audit(redis_client)] == ["denied"]


async def test_an_answer_dlp_blocks_is_refused_and_audited_without_its_data(
    asker: Any, remote: Remote, redis_client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    # The question passes; the answer names a word DLP blocks ("sidecar" as a custom pattern).
    dlp = {"custom": [{"name": "glossary_term", "pattern": "process next to", "action": "block"}]}
    await _policy(http, asker, redis_client, rules=[ALLOW], dlp=dlp)
    status, refused = await _ask(http, asker, "what is a sidecar")
    assert (status, refused["error"]["code"]) == (422, "dlp_blocked"), refused
    assert remote.calls == [("SendMessage", f"Bearer {TOKEN}")]
    audit = _audit(redis_client)
    assert [e["decision"] for e in audit] == ["accepted", "dlp_blocked"]
    assert audit[1]["from"] == REMOTE
    assert "process next to" not in orjson.dumps(audit).decode()


async def test_a_remote_that_is_down_is_an_audited_error_and_opens_the_breaker(
    sidecars: Sidecars, redis_client: redis.Redis, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    down = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    register_external_agent(redis_client, REMOTE, ["define"], down, "")
    try:
        sidecar = sidecars.start(ASKER)
        breaker = {"failureThreshold": 1, "openSeconds": 600}
        await _policy(http, sidecar, redis_client, rules=[ALLOW], circuitBreaker=breaker)
        status, failed = await _ask(http, sidecar, "what is a sidecar")
        assert (status, failed["error"]["code"]) == (502, "remote_unavailable"), failed
        status, refused = await _ask(http, sidecar, "what is a breaker")
        assert (status, refused["error"]["code"]) == (503, "circuit_open")
    finally:
        forget_agent(redis_client, REMOTE)
    audit = _audit(redis_client)
    assert [e["decision"] for e in audit] == ["accepted", "remote_failed", "circuit_open"]
    assert "cannot reach it" in audit[1]["reason"]


async def test_a_fire_and_forget_message_to_an_external_agent_is_refused_not_lost(
    asker: Any, remote: Remote, redis_client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    await _policy(http, asker, redis_client, rules=[ALLOW])
    body = {"to": REMOTE, "type": "ask.define", "payload": {"text": "sidecar"}}
    status, refused = await Api(http, asker).call("POST", "/v1/messages", body)
    assert (status, refused["error"]["code"]) == (400, "invalid_request")
    assert "POST /v1/requests" in refused["error"]["message"]
    assert remote.calls == [] and _audit(redis_client) == []


async def test_a_remote_that_redirects_does_not_get_the_token_sent_elsewhere(
    sidecars: Sidecars,
    remote: Remote,
    redis_client: redis.Redis,
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    # The registered endpoint answers 307 to the glossary: following it would hand the token
    # to a server the control plane never named.
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(remote.url)

    app = web.Application()
    app.router.add_post("/", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    remotes = tmp_path / "a2a-remotes"
    remotes.mkdir()
    (remotes / credentials_file(REMOTE)).write_text(TOKEN)
    register_external_agent(redis_client, REMOTE, ["define"], f"http://127.0.0.1:{port}/", "")
    try:
        sidecar = sidecars.start(ASKER, MAS_A2A_REMOTES_DIR=str(remotes))
        await _policy(http, sidecar, redis_client, rules=[ALLOW])
        status, failed = await _ask(http, sidecar, "what is a sidecar")
    finally:
        forget_agent(redis_client, REMOTE)
        await runner.cleanup()
    assert (status, failed["error"]["code"]) == (502, "remote_unavailable"), failed
    assert "HTTP status 307" in failed["error"]["message"]
    assert remote.calls == []
