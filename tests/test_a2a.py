"""A2A interoperability: the official ``a2a-sdk`` client against a mas agent behind its sidecar.

The agent is an ordinary SDK agent handling ``a2a.message`` and ``a2a.cancel``; its sidecar
(a real process, real Valkey on loopback) is exposed on an A2A port with two named clients,
``partner`` (allowed by the policy) and ``stranger`` (no rule names it). Every call goes
through the gateway checks, so the tests also play the refusals: no key, a wrong key, a
principal the policy does not allow, a DLP block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import orjson
import pytest
import redis
from a2a.client import ClientConfig, create_client
from a2a.client.card_resolver import A2ACardResolver
from a2a.client.errors import A2AClientError
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError, UnsupportedOperationError
from api import Api
from policies import publish
from prometheus import scrape
from waiting import eventually

from mas import Agent, AgentMessage
from mas.errors import SidecarError
from mas_cli.local.processes import SidecarProcess
from mas_cli.local.redis_server import free_port
from mas_core.keys import AgentKeys

if TYPE_CHECKING:
    from conftest import Sidecars

KEYS = {"partner": "partner-key-0123456789abcdef", "stranger": "stranger-key-0123456789abcd"}
AGENT = "default/echo"
SSN = "123-45-6789"  # what the DLP detector us_ssn blocks


class Echo(Agent):
    """Answers ``echo: <text>``; a text starting with ``wait`` is held until ``release``. One
    starting with ``steps`` is held until ``release`` too, then each word after it is reported
    as progress (``{ssn}`` in it: a number DLP blocks), but ``hold``, which waits for
    ``finish``."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.release = asyncio.Event()
        self.finish = asyncio.Event()
        self.asked: list[AgentMessage] = []
        self.cancelled: list[str] = []
        self.reported: list[str] = []  # each progress report: "sent" or its error code

    @Agent.on("a2a.message")
    async def ask(self, message: AgentMessage) -> None:
        self.asked.append(message)
        text = message.payload["text"]
        if text.startswith(("wait", "steps")):
            await self.release.wait()
        if text.startswith("steps"):
            for step in text.split()[1:]:
                if step == "hold":
                    await self.finish.wait()
                    continue
                try:
                    await message.progress(step.format(ssn=SSN), data={"step": len(self.reported)})
                except SidecarError as exc:
                    self.reported.append(exc.code)
                else:
                    self.reported.append("sent")
        await message.reply("a2a.reply", {"text": f"echo: {text}"})

    @Agent.on("a2a.cancel")
    async def cancel(self, message: AgentMessage) -> None:
        self.cancelled.append(message.payload["task_id"])


@dataclass
class Exposed:
    agent: Echo
    sidecar: SidecarProcess
    url: str


def _a2a_block(port: int) -> dict[str, Any]:
    return {
        "description": "Echoes what it is told.",
        "version": "2.1.0",
        "expose": True,
        "port": port,
        "skills": [{"id": "echo", "description": "Repeats the text.", "examples": ["hello"]}],
        "clients": [
            {"name": name, "secretKeyRef": {"name": "a2a-clients", "key": name}} for name in KEYS
        ],
    }


@pytest.fixture
def settings() -> dict[str, str]:
    """``MAS_*`` settings of the exposed agent's sidecar beyond the test's own."""
    return {}


@pytest.fixture
async def exposed(
    sidecars: Sidecars,
    redis_client: redis.Redis,
    tmp_path: Path,
    started: Callable[[Agent[Any]], Any],
    settings: dict[str, str],
) -> AsyncIterator[Exposed]:
    clients = tmp_path / "a2a-clients"
    clients.mkdir()
    for name, key in KEYS.items():
        (clients / name).write_text(key)
    publish(
        redis_client,
        rules=[
            {
                "name": "partner",
                "action": "allow",
                "from": {"agents": ["external/partner"]},
                "to": {"agents": [AGENT]},
                "types": ["a2a.*"],
            },
        ],
        dlp={"detectors": {"us_ssn": "block"}},
    )
    port = free_port()
    sidecar = sidecars.start(
        AGENT,
        capabilities=["echo"],
        MAS_A2A=orjson.dumps(_a2a_block(port)).decode(),
        MAS_A2A_HOST="127.0.0.1",
        MAS_A2A_CLIENTS_DIR=str(clients),
        **settings,
    )
    agent = await started(Echo(sidecar))
    yield Exposed(agent, sidecar, f"http://127.0.0.1:{port}")


def _client_http(client: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {KEYS[client]}"} if client else {}
    return httpx.AsyncClient(headers=headers, timeout=30)


async def _client(exposed: Exposed, client: str | None = "partner", *, streaming: bool = False):  # type: ignore[no-untyped-def]
    config = ClientConfig(streaming=streaming, httpx_client=_client_http(client))
    return await create_client(exposed.url, client_config=config)


def _message(text: str) -> a2a.SendMessageRequest:
    return a2a.SendMessageRequest(
        message=a2a.Message(message_id=f"m-{text}", role=a2a.ROLE_USER, parts=[a2a.Part(text=text)])
    )


async def _responses(client: Any, request: a2a.SendMessageRequest) -> list[a2a.StreamResponse]:
    return [response async for response in client.send_message(request)]


async def _streamed(exposed: Exposed, text: str) -> list[a2a.StreamResponse]:
    """The events of a ``SendStreamingMessage`` of ``text``; the agent is released once the
    task, the first event, came."""
    client = await _client(exposed, streaming=True)
    events: list[a2a.StreamResponse] = []
    async for event in client.send_message(_message(text)):
        events.append(event)
        if event.WhichOneof("payload") == "task":
            exposed.agent.release.set()
    return events


async def test_the_agent_card_is_served_and_read_by_the_official_client(
    exposed: Exposed,
) -> None:
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, exposed.url).get_agent_card()
    assert card.name == AGENT
    assert card.description == "Echoes what it is told."
    assert card.version == "2.1.0"
    assert [(s.id, s.description, list(s.examples)) for s in card.skills] == [
        ("echo", "Repeats the text.", ["hello"])
    ]
    interface = card.supported_interfaces[0]
    assert (interface.url, interface.protocol_binding, interface.protocol_version) == (
        f"{exposed.url}/",
        "JSONRPC",
        "1.0",
    )
    assert card.security_schemes["bearer"].http_auth_security_scheme.scheme == "Bearer"
    assert card.capabilities.streaming and not card.capabilities.push_notifications


async def test_discovery_returns_agent_cards(exposed: Exposed, http: aiohttp.ClientSession) -> None:
    async with http.get(
        f"{exposed.sidecar.url}/v1/agents",
        params={"format": "a2a-card"},
        headers={"Authorization": f"Bearer {exposed.sidecar.token}"},
    ) as response:
        cards = (await response.json())["cards"]
    assert [(card["name"], [s["id"] for s in card["skills"]]) for card in cards] == [
        (AGENT, ["echo"])
    ]


async def test_send_message_is_answered_with_the_agents_reply_as_a_message(
    exposed: Exposed, redis_client: redis.Redis
) -> None:
    client = await _client(exposed)
    (response,) = await _responses(client, _message("hello"))
    assert response.WhichOneof("payload") == "message"
    assert response.message.role == a2a.ROLE_AGENT
    assert [part.text for part in response.message.parts] == ["echo: hello"]
    (asked,) = exposed.agent.asked
    assert asked.sender == "external/partner"  # delivered as from the external principal
    audit = [orjson.loads(f[b"e"]) for _, f in redis_client.xrange(AgentKeys(AGENT).audit)]
    accepted = [e for e in audit if e["decision"] == "accepted" and e["type"] == "a2a.message"]
    assert accepted and accepted[0]["principal"] == "external/partner"


async def test_a_long_answer_is_a_task_that_get_task_completes(exposed: Exposed) -> None:
    client = await _client(exposed)
    request = _message("wait for it")
    request.configuration.return_immediately = True
    (response,) = await _responses(client, request)
    task = response.task
    assert task.status.state == a2a.TASK_STATE_WORKING
    exposed.agent.release.set()

    async def completed() -> a2a.Task | None:
        got = await client.get_task(a2a.GetTaskRequest(id=task.id))
        return got if got.status.state == a2a.TASK_STATE_COMPLETED else None

    done = await eventually(completed, "the task completed")
    assert [part.text for part in done.artifacts[0].parts] == ["echo: wait for it"]


async def test_send_streaming_message_streams_the_task_then_its_completion(
    exposed: Exposed,
) -> None:
    events = await _streamed(exposed, "wait and stream")
    kinds = [event.WhichOneof("payload") for event in events]
    assert kinds == ["task", "status_update"]
    final = events[-1].status_update.status
    assert final.state == a2a.TASK_STATE_COMPLETED
    assert [part.text for part in final.message.parts] == ["echo: wait and stream"]


async def test_cancel_task_reaches_the_handler(exposed: Exposed) -> None:
    client = await _client(exposed)
    request = _message("wait forever")
    request.configuration.return_immediately = True
    (response,) = await _responses(client, request)
    canceled = await client.cancel_task(a2a.CancelTaskRequest(id=response.task.id))
    assert canceled.status.state == a2a.TASK_STATE_CANCELED
    await eventually(lambda: exposed.agent.cancelled == [response.task.id], "the cancel handled")
    exposed.agent.release.set()


async def test_another_clients_task_is_not_found(exposed: Exposed) -> None:
    client = await _client(exposed)
    request = _message("wait a moment")
    request.configuration.return_immediately = True
    (response,) = await _responses(client, request)
    other = await _client(exposed, "partner")
    other_task = response.task.id
    stranger = await _client(exposed, "stranger")
    with pytest.raises(TaskNotFoundError):
        await stranger.get_task(a2a.GetTaskRequest(id=other_task))
    assert (await other.get_task(a2a.GetTaskRequest(id=other_task))).id == other_task
    exposed.agent.release.set()


@pytest.mark.parametrize("client", [None, "wrong"])
async def test_a_call_without_a_valid_key_is_refused(exposed: Exposed, client: str | None) -> None:
    headers = {"Authorization": "Bearer not-a-key-of-anyone-at-all"} if client else {}
    config = ClientConfig(streaming=False, httpx_client=httpx.AsyncClient(headers=headers))
    unauthenticated = await create_client(exposed.url, client_config=config)
    with pytest.raises(A2AClientError, match="401"):
        await _responses(unauthenticated, _message("hello"))
    assert exposed.agent.asked == []


async def test_no_api_key_reaches_the_sidecars_log(exposed: Exposed) -> None:
    for client in ("partner", "stranger"):
        with contextlib.suppress(A2AClientError):
            await _responses(await _client(exposed, client), _message("hello"))
    headers = {"Authorization": f"Bearer {KEYS['partner']}x"}
    config = ClientConfig(streaming=False, httpx_client=httpx.AsyncClient(headers=headers))
    with pytest.raises(A2AClientError):
        await _responses(await create_client(exposed.url, client_config=config), _message("x"))
    assert exposed.sidecar.log_path is not None
    log = exposed.sidecar.log_path.read_text()
    assert "A2A call refused" in log
    assert not any(key[:16] in log for key in KEYS.values())


async def test_a_principal_the_policy_does_not_allow_is_refused_and_audited(
    exposed: Exposed, redis_client: redis.Redis
) -> None:
    stranger = await _client(exposed, "stranger")
    with pytest.raises(A2AClientError, match="JSON-RPC Error -32000") as refused:
        await _responses(stranger, _message("hello"))
    assert "external/stranger" in str(refused.value)
    audit = [orjson.loads(f[b"e"]) for _, f in redis_client.xrange(AgentKeys(AGENT).audit)]
    assert [e["principal"] for e in audit if e["decision"] == "denied"] == ["external/stranger"]
    assert exposed.agent.asked == []


@pytest.mark.parametrize("scope", ["replica", "agent"])
async def test_each_client_has_rate_limit_buckets_of_its_own(
    exposed: Exposed, redis_client: redis.Redis, http: aiohttp.ClientSession, scope: str
) -> None:
    both = {"name": "both", "action": "allow", "types": ["a2a.*"],
            "from": {"agents": ["external/partner", "external/stranger"]}}  # fmt: skip
    document = publish(
        redis_client,
        rules=[both],
        rateLimits=[{"name": "slow", "rate": 0.001, "burst": 2, "scope": scope}],
    )
    await Api(http, exposed.sidecar).wait_for_revision(document.revision)
    partner = await _client(exposed)
    for text in ("one", "two"):
        (answer,) = await _responses(partner, _message(text))
        assert answer.message.parts[0].text == f"echo: {text}"
    with pytest.raises(A2AClientError, match="JSON-RPC Error -32000: rate limit slow"):
        await _responses(partner, _message("three"))
    # The stranger's bucket is full: its call is admitted (the agent's own two replies emptied
    # the agent's, so it is not answered in time: a task).
    request = _message("four")
    request.configuration.return_immediately = True
    (task,) = await _responses(await _client(exposed, "stranger"), request)
    assert task.task.status.state == a2a.TASK_STATE_WORKING


async def test_a_dlp_block_is_answered_as_an_a2a_error(exposed: Exposed) -> None:
    client = await _client(exposed)
    with pytest.raises(InvalidParamsError) as refused:
        await _responses(client, _message(f"my SSN is {SSN}"))
    assert refused.value.data == {"code": "dlp_blocked"}
    assert SSN not in str(refused.value)
    assert exposed.agent.asked == []


async def test_the_0_3_method_names_are_served_to_clients_without_a_version_header(
    exposed: Exposed, http: aiohttp.ClientSession
) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "message/send",
        "params": {
            "message": {
                "kind": "message",
                "messageId": "m1",
                "role": "user",
                "parts": [{"kind": "text", "text": "old client"}],
            },
        },
    }
    headers = {"Authorization": f"Bearer {KEYS['partner']}"}
    async with http.post(f"{exposed.url}/", json=call, headers=headers) as response:
        answer = await response.json()
    assert answer["id"] == 7
    result = answer["result"]
    assert (result["kind"], result["role"], result["parts"]) == (
        "message",
        "agent",
        [{"kind": "text", "text": "echo: old client"}],
    )


async def test_unsupported_optional_methods_answer_the_specs_errors(
    exposed: Exposed, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {KEYS['partner']}", "A2A-Version": "1.0"}
    codes = {}
    for method in ("CreateTaskPushNotificationConfig", "ListTasks", "Nonsense", "GetTask"):
        call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"id": "none"}}
        async with http.post(f"{exposed.url}/", json=call, headers=headers) as response:
            codes[method] = (await response.json())["error"]["code"]
    assert codes == {
        "CreateTaskPushNotificationConfig": -32003,
        "ListTasks": -32004,
        "Nonsense": -32601,
        "GetTask": -32001,
    }


def _texts(message: a2a.Message) -> list[str]:
    return [part.text for part in message.parts if part.text]


async def test_a_stream_sends_each_progress_report_as_a_status_update_then_the_result(
    exposed: Exposed,
) -> None:
    events = await _streamed(exposed, "steps reading writing")
    assert [event.WhichOneof("payload") for event in events] == ["task"] + ["status_update"] * 3
    statuses = [event.status_update.status for event in events[1:]]
    assert [(status.state, _texts(status.message)) for status in statuses] == [
        (a2a.TASK_STATE_WORKING, ["reading"]),
        (a2a.TASK_STATE_WORKING, ["writing"]),
        (a2a.TASK_STATE_COMPLETED, ["echo: steps reading writing"]),
    ]
    data = [part.data for part in statuses[0].message.parts if part.HasField("data")]
    assert [dict(value.struct_value) for value in data] == [{"step": 0}]


async def test_a_progress_report_dlp_blocks_never_reaches_the_client(exposed: Exposed) -> None:
    events = await _streamed(exposed, "steps reading {ssn} writing")
    assert exposed.agent.reported == ["sent", "dlp_blocked", "sent"]
    texts = [_texts(event.status_update.status.message) for event in events[1:]]
    assert texts == [["reading"], ["writing"], ["echo: steps reading {ssn} writing"]]
    assert SSN not in str(events)


async def test_get_task_shows_the_latest_progress_while_the_handler_works(
    exposed: Exposed,
) -> None:
    client = await _client(exposed)
    request = _message("steps reading writing hold")
    request.configuration.return_immediately = True
    (response,) = await _responses(client, request)
    exposed.agent.release.set()

    async def reported() -> a2a.Task | None:
        task = await client.get_task(a2a.GetTaskRequest(id=response.task.id))
        return task if _texts(task.status.message) == ["writing"] else None

    working = await eventually(reported, "the last progress report in the task")
    assert working.status.state == a2a.TASK_STATE_WORKING
    assert not working.artifacts
    exposed.agent.finish.set()

    async def completed() -> a2a.Task | None:
        task = await client.get_task(a2a.GetTaskRequest(id=response.task.id))
        return task if task.status.state == a2a.TASK_STATE_COMPLETED else None

    done = await eventually(completed, "the task completed")
    assert _texts(done.status.message) == ["echo: steps reading writing hold"]


async def test_subscribe_to_task_follows_a_working_task_to_its_end(exposed: Exposed) -> None:
    client = await _client(exposed)
    request = _message("steps reading hold writing")
    request.configuration.return_immediately = True
    (response,) = await _responses(client, request)
    events: list[a2a.StreamResponse] = []
    streaming = await _client(exposed, streaming=True)
    async for event in streaming.subscribe(a2a.SubscribeToTaskRequest(id=response.task.id)):
        events.append(event)
        if event.WhichOneof("payload") == "task":
            exposed.agent.release.set()
        elif _texts(event.status_update.status.message) == ["reading"]:
            exposed.agent.finish.set()
    assert events[0].task.id == response.task.id
    texts = [_texts(event.status_update.status.message) for event in events[1:]]
    assert texts == [["reading"], ["writing"], ["echo: steps reading hold writing"]]
    with pytest.raises(UnsupportedOperationError):  # it has finished: nothing to follow
        await _responses_of(streaming.subscribe(a2a.SubscribeToTaskRequest(id=response.task.id)))


async def _responses_of(stream: AsyncIterator[a2a.StreamResponse]) -> list[a2a.StreamResponse]:
    return [response async for response in stream]


async def test_progress_after_the_task_was_canceled_is_dropped_and_counted(
    exposed: Exposed, http: aiohttp.ClientSession
) -> None:
    client = await _client(exposed)
    request = _message("steps reading writing")
    request.configuration.return_immediately = True
    (response,) = await _responses(client, request)
    await client.cancel_task(a2a.CancelTaskRequest(id=response.task.id))
    exposed.agent.release.set()
    sidecar = exposed.sidecar
    metrics = f"{sidecar.url}/metrics"

    async def dropped() -> bool:
        seen = await scrape(http, metrics, Authorization=f"Bearer {sidecar.token}")
        return seen.value("mas_progress_reports_total", {"outcome": "late"}) == 2

    await eventually(dropped, "both reports dropped as late")
    assert exposed.agent.reported == ["sent", "sent"]  # accepted by the handler's sidecar
    task = await client.get_task(a2a.GetTaskRequest(id=response.task.id))
    assert task.status.state == a2a.TASK_STATE_CANCELED


CAP = 3


async def _stream_open(
    http: aiohttp.ClientSession, exposed: Exposed, text: str
) -> aiohttp.ClientResponse:
    """A ``SendStreamingMessage`` on a connection of its own, once its first event came."""
    call = {
        "jsonrpc": "2.0", "id": text, "method": "SendStreamingMessage",
        "params": {"message": {"messageId": text, "role": "ROLE_USER", "parts": [{"text": text}]}},
    }  # fmt: skip
    headers = {"Authorization": f"Bearer {KEYS['partner']}", "A2A-Version": "1.0"}
    response = await http.post(f"{exposed.url}/", json=call, headers=headers)
    assert response.status == 200
    assert (await response.content.readline()).startswith(b"data: ")  # the task
    return response


@pytest.mark.parametrize("settings", [{"MAS_A2A_MAX_CONNECTIONS": str(CAP)}])
async def test_the_a2a_listener_refuses_connections_over_its_cap_and_the_api_still_answers(
    exposed: Exposed, http: aiohttp.ClientSession
) -> None:
    streams = [await _stream_open(http, exposed, f"wait {n}") for n in range(CAP)]
    async with http.get(f"{exposed.url}/.well-known/agent-card.json") as refused:
        assert (refused.status, refused.headers["Retry-After"]) == (503, "1")
        answer = await refused.json()
    assert answer["error"]["code"] == -32000
    assert answer["error"]["data"][0]["metadata"] == {"code": "too_many_connections"}
    assert "MAS_A2A_MAX_CONNECTIONS" in answer["error"]["message"]
    # The agent's own API, capped apart, answers.
    sidecar = exposed.sidecar
    headers = {"Authorization": f"Bearer {sidecar.token}"}
    async with http.get(f"{sidecar.url}/v1/self", headers=headers) as me:
        assert me.status == 200
    seen = await scrape(http, f"{sidecar.url}/metrics", **headers)
    assert seen.value("mas_a2a_connections_refused_total") == 1
    # The streams end with their tasks; their places are free again.
    exposed.agent.release.set()
    for stream in streams:
        events = [line async for line in stream.content if line.startswith(b"data: ")]
        assert b"TASK_STATE_COMPLETED" in events[-1]
        stream.release()

    async def served() -> bool:
        async with http.get(f"{exposed.url}/.well-known/agent-card.json") as card:
            return card.status == 200

    await eventually(served, "a connection served again")
