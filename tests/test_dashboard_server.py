"""The dashboard's server against a real Valkey, real sidecars and SDK agents.

Alice sends Bob notes and a ping whose payload fails Bob's model (a dead letter); a policy
denies one type. The dashboard, reading as its own user, shows both agents, the decisions,
the alice→bob edge, the dead letter and the policy; write actions are refused unless it was
started with them, and then need the token; a replay and a delete are done and audited in
the dashboard's own hash chain. ``mas status`` prints the same agents.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import redis
from pydantic import BaseModel
from waiting import eventually

from mas import Agent, AgentMessage, ForbiddenError
from mas_cli.dashboard_setup import dashboard_url
from mas_control.provision import publish_policy
from mas_core.audit.chain import F_EVENT, verify
from mas_core.keys import DASHBOARD_AUDIT, DASHBOARD_AUDIT_HEADS
from mas_core.policy.document import GatewayPolicySpec, Signing, compile_policies
from mas_core.policy.rules import Rule
from mas_dashboard.server import DashboardSettings, serving

if TYPE_CHECKING:
    from conftest import Sidecars

TOKEN = "test-write-token"
POLICY = compile_policies(
    [
        (
            "default",
            "notes",
            GatewayPolicySpec(
                agents=["*/*"],
                rules=[
                    Rule(name="no-admin", action="deny", types=["admin.*"]),
                    Rule(name="anything", action="allow"),
                ],
                signing=Signing(required=False),
            ),
        )
    ]
)


class Note(BaseModel):
    text: str


class Bob(Agent):
    @Agent.on("note", model=Note)
    async def note(self, message: AgentMessage, payload: Note) -> None:
        pass


@pytest.fixture
async def traffic(
    redis_client: redis.Redis, sidecars: Sidecars, started: Callable[[Agent[Any]], Any]
) -> None:
    """Two notes and a malformed one from alice to bob, and a denied admin message."""
    publish_policy(redis_client, POLICY)
    alice_sidecar = sidecars.start("default/alice")
    bob_sidecar = sidecars.start("default/bob", capabilities=["notes"])
    alice = await started(Agent(sidecar_url=alice_sidecar.url, sidecar_token=alice_sidecar.token))
    await started(Bob(sidecar_url=bob_sidecar.url, sidecar_token=bob_sidecar.token))
    await alice.send("bob", "note", {"text": "one"})
    await alice.send("bob", "note", {"text": "two"})
    await alice.send("bob", "note", {"wrong": "secret payload text"})
    with pytest.raises(ForbiddenError):
        await alice.send("bob", "admin.wipe", {})


async def _dashboard(redis_url: str, token: str | None) -> AsyncIterator[str]:
    url, _ = dashboard_url(redis_url, writes=token is not None)
    async with serving(DashboardSettings(url, write_token=token, refresh=0.05)) as where:
        yield where


@pytest.fixture
async def reader(redis_url: str, traffic: None) -> AsyncIterator[str]:
    async for where in _dashboard(redis_url, None):
        yield where


@pytest.fixture
async def writer(redis_url: str, traffic: None) -> AsyncIterator[str]:
    async for where in _dashboard(redis_url, TOKEN):
        yield where


async def page_when(
    http: aiohttp.ClientSession, base: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async def document() -> dict[str, Any] | None:
        async with http.get(f"{base}api/page") as response:
            page: dict[str, Any] = await response.json()
        return page if ready(page) else None

    found: dict[str, Any] = await eventually(document, "the page document")
    return found


def _dead(page: dict[str, Any]) -> bool:
    return len(page["dead_letters"]) == 1


async def test_the_page_shows_agents_decisions_graph_dead_letters_and_policies(
    http: aiohttp.ClientSession, reader: str
) -> None:
    page = await page_when(http, reader, _dead)

    agents = {row["id"]: row for row in page["agents"]}
    assert set(agents) == {"default/alice", "default/bob"}
    assert agents["default/bob"]["capabilities"] == ["notes"]
    assert agents["default/bob"]["dead_letters"] == 1
    assert agents["default/alice"]["replicas_live"] == 1
    assert agents["default/alice"]["policy_revisions"] == [POLICY.revision]
    assert all(row["audit_intact"] for row in agents.values())
    kinds = [(d["kind"], d["type"]) for d in page["decisions"] if d["trail"] == "default/alice"]
    assert ("denied", "admin.wipe") in kinds
    assert kinds.count(("accepted", "note")) == 3
    [edge] = [e for e in page["graph"]["edges"] if e["from"] == "default/alice"]
    assert (edge["to"], edge["accepted"], edge["refused"]) == ("default/bob", 3, 1)
    [letter] = page["dead_letters"]
    assert (letter["agent"], letter["sender"], letter["type"]) == (
        "default/bob",
        "default/alice",
        "note",
    )
    [policy] = page["policies"]["policies"]
    assert page["policies"]["revision"] == POLICY.revision
    assert (policy["name"], policy["status"]) == ("default/notes", "applied")
    assert len(policy["enforcing"]) == 2
    assert "secret payload text" not in json.dumps(page)


async def test_the_event_stream_sends_the_page_at_once(
    http: aiohttp.ClientSession, reader: str
) -> None:
    async with http.get(f"{reader}api/events") as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert await response.content.readline() == b"event: page\n"
        data = await response.content.readline()
    assert json.loads(data.removeprefix(b"data: "))["agents"]


async def act(
    http: aiohttp.ClientSession, base: str, dead_letter: str, action: str, token: str | None
) -> tuple[int, dict[str, Any]]:
    """POST a write action on one of bob's dead letters; the status and the answer."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    url = f"{base}api/agents/default/bob/dead-letters/{dead_letter}/{action}"
    async with http.post(url, headers=headers) as response:
        return response.status, await response.json()


async def test_write_actions_are_refused_when_not_enabled(
    http: aiohttp.ClientSession, reader: str, redis_client: redis.Redis
) -> None:
    [letter] = (await page_when(http, reader, _dead))["dead_letters"]

    status, answer = await act(http, reader, letter["id"], "replay", TOKEN)

    assert (status, answer["error"]["code"]) == (403, "writes_disabled")
    assert redis_client.xlen("mas:{default/bob}:dlq") == 1


async def test_a_write_action_needs_the_token(
    http: aiohttp.ClientSession, writer: str, redis_client: redis.Redis
) -> None:
    [letter] = (await page_when(http, writer, _dead))["dead_letters"]

    for token in (None, "guess"):
        status, answer = await act(http, writer, letter["id"], "delete", token)
        assert (status, answer["error"]["code"]) == (401, "unauthorized")
    assert redis_client.xlen("mas:{default/bob}:dlq") == 1


async def test_a_replay_puts_the_message_back_and_is_audited(
    http: aiohttp.ClientSession, writer: str, redis_client: redis.Redis
) -> None:
    [letter] = (await page_when(http, writer, _dead))["dead_letters"]

    status, answer = await act(http, writer, letter["id"], "replay", TOKEN)

    assert (status, answer["message_id"]) == (200, letter["message_id"])
    # Bob fails it again: a new dead letter for the same message.
    page = await page_when(
        http, writer, lambda p: _dead(p) and p["dead_letters"][0]["id"] != letter["id"]
    )
    assert page["dead_letters"][0]["message_id"] == letter["message_id"]
    [(_, fields)] = redis_client.xrange(DASHBOARD_AUDIT)
    event = json.loads(fields[F_EVENT])
    assert event["decision"] == "dead_letter_replayed"
    assert (event["agent"], event["dead_letter"], event["outcome"]) == (
        "default/bob",
        letter["id"],
        "done",
    )
    trail, heads = redis_client.xrange(DASHBOARD_AUDIT), redis_client.hgetall(DASHBOARD_AUDIT_HEADS)
    assert verify(trail, heads).ok


async def test_a_delete_removes_the_dead_letter(
    http: aiohttp.ClientSession, writer: str, redis_client: redis.Redis
) -> None:
    [letter] = (await page_when(http, writer, _dead))["dead_letters"]

    status, _ = await act(http, writer, letter["id"], "delete", TOKEN)

    assert status == 200
    assert redis_client.xlen("mas:{default/bob}:dlq") == 0


async def test_a_delete_of_an_unknown_dead_letter_is_refused_and_audited(
    http: aiohttp.ClientSession, writer: str, redis_client: redis.Redis
) -> None:
    status, answer = await act(http, writer, "1-1", "delete", TOKEN)

    assert (status, answer["error"]["code"]) == (404, "dead_letter_not_found")
    [(_, fields)] = redis_client.xrange(DASHBOARD_AUDIT)
    assert json.loads(fields[F_EVENT])["outcome"] == "refused"


async def test_another_hosts_name_is_refused(http: aiohttp.ClientSession, reader: str) -> None:
    async with http.get(f"{reader}api/page", headers={"Host": "evil.example"}) as response:
        assert response.status == 421
        assert (await response.json())["error"]["code"] == "wrong_host"


async def test_the_page_and_its_assets_are_served_from_the_package(
    http: aiohttp.ClientSession, reader: str
) -> None:
    async with http.get(reader) as response:
        assert "text/html" in response.headers["Content-Type"]
        assert '<script src="/static/app.js"' in await response.text()
    async with http.get(f"{reader}static/app.js") as response:
        assert response.status == 200
    async with http.get(f"{reader}nothing") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_mas_status_prints_the_agents(
    http: aiohttp.ClientSession, reader: str, redis_url: str
) -> None:
    await page_when(http, reader, _dead)
    mas = [sys.executable, "-m", "mas_cli"]
    table = subprocess.run(
        [*mas, "status", "--redis-url", redis_url], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert table[0].split()[:3] == ["AGENT", "LIVE", "CAPABILITIES"]
    assert [line.split()[0] for line in table[1:]] == ["default/alice", "default/bob"]
    rows = json.loads(
        subprocess.run(
            [*mas, "status", "--redis-url", redis_url, "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {row["id"]: row["dead_letters"] for row in rows} == {
        "default/alice": 0,
        "default/bob": 1,
    }


async def test_a_tampered_audit_trail_shows_as_broken_where_it_breaks(
    http: aiohttp.ClientSession, reader: str, redis_client: redis.Redis
) -> None:
    """The attack: an entry appended to alice's trail without its chain (as a hostile sidecar
    with write access to its own audit stream could)."""
    await page_when(http, reader, _dead)
    trail = "mas:{default/alice}:audit"
    [(_, last)] = redis_client.xrevrange(trail, count=1)
    replica, seq = last[b"r"], int(last[b"n"])
    redis_client.xadd(trail, {"r": replica, "n": seq + 5, "p": "0" * 64, "h": "f" * 64, "e": "{}"})

    def agents_of(page: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in page["agents"]}

    page = await page_when(
        http, reader, lambda p: not agents_of(p)["default/alice"]["audit_intact"]
    )

    alice = agents_of(page)["default/alice"]
    assert alice["audit_broken_at"] == seq + 5  # the first entry that does not follow
    assert "altered" in alice["audit_problem"]
    assert agents_of(page)["default/bob"]["audit_intact"]


def test_mas_up_refuses_dashboard_writes_without_a_dashboard(tmp_path: Path) -> None:
    folder = Path(__file__).resolve().parent.parent / "examples" / "quickstart"
    mas = [sys.executable, "-m", "mas_cli"]
    run = subprocess.run(
        [*mas, "up", str(folder), "--no-dashboard", "--dashboard-writes"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert "--dashboard-writes is for the dashboard" in run.stderr
