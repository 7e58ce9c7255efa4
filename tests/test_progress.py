"""Progress reports: a request's handler tells the requester what it is doing, before its reply.

The handler is an ordinary SDK agent (``message.progress(...)``) behind a real sidecar; the
requester asks through its own sidecar's ``POST /v1/requests``; both on a real Valkey. A report
goes the way the reply goes, through the same checks (audit, DLP), and never answers the
request: the reply does. What an A2A client sees of them is in ``tests/test_a2a.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import pytest
import redis
from api import Api
from policies import publish
from prometheus import scrape

from mas import Agent, AgentMessage
from mas.errors import SidecarError
from mas_cli.local.processes import SidecarProcess
from mas_core.keys import AgentKeys

if TYPE_CHECKING:
    from conftest import Sidecars

WORKER = "default/worker"
SSN = "123-45-6789"  # what the DLP detector us_ssn blocks


class Worker(Agent):
    """Reports each of ``payload["steps"]`` as progress (``{ssn}`` in one: a number DLP
    blocks), then replies to a request and tries one report too many; ``outcomes`` says how
    each report went."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        super().__init__(sidecar_url=sidecar.url, sidecar_token=sidecar.token)
        self.sidecar = sidecar
        self.outcomes: list[str] = []
        self.done = asyncio.Event()

    async def _report(self, message: AgentMessage, text: str) -> None:
        try:
            await message.progress(text, data={"step": text})
        except SidecarError as exc:
            self.outcomes.append(exc.code)
        else:
            self.outcomes.append("sent")

    @Agent.on("work")
    async def work(self, message: AgentMessage) -> None:
        for step in message.payload["steps"]:
            await self._report(message, step.format(ssn=SSN))
        if message.correlation_id is None and message.payload.get("reply", True):
            await message.reply("done", {"steps": len(message.payload["steps"])})
            await self._report(message, "after the reply")
        self.done.set()


@pytest.fixture
async def worker(sidecars: Sidecars, started: Callable[[Agent[Any]], Any]) -> Worker:
    return await started(Worker(sidecars.start(WORKER)))  # type: ignore[no-any-return]


@pytest.fixture
def asker(sidecars: Sidecars, http: aiohttp.ClientSession) -> Api:
    return Api(http, sidecars.start("default/asker"))


def _audit(redis_client: redis.Redis) -> list[dict[str, Any]]:
    return [orjson.loads(f[b"e"]) for _, f in redis_client.xrange(AgentKeys(WORKER).audit)]


async def _ask(asker: Api, steps: list[str]) -> dict[str, Any]:
    status, reply = await asker.call(
        "POST", "/v1/requests", {"to": "worker", "type": "work", "payload": {"steps": steps}}
    )
    assert status == 200, reply
    return reply  # type: ignore[no-any-return]


async def _enforce(
    asker: Api,
    worker: Worker,
    redis_client: redis.Redis,
    extra_rules: Sequence[dict[str, Any]] = (),
    **spec: Any,
) -> None:
    """Publish a policy that allows anything but ``extra_rules`` deny, with ``spec``; until the
    worker's sidecar enforces it."""
    rules = [{"name": "anything", "action": "allow"}, *extra_rules]
    document = publish(redis_client, agents=["*/*"], rules=rules, **spec)
    await Api(asker.session, worker.sidecar).wait_for_revision(document.revision)


async def test_progress_reports_go_through_the_checks_and_only_the_reply_answers(
    worker: Worker, asker: Api, redis_client: redis.Redis
) -> None:
    reply = await _ask(asker, ["reading", "writing"])
    assert (reply["type"], reply["payload"]) == ("done", {"steps": 2})
    await asyncio.wait_for(worker.done.wait(), 60)
    assert worker.outcomes == ["sent", "sent", "already_replied"]
    accepted = [
        (entry["type"], entry.get("progress"), entry.get("reply"))
        for entry in _audit(redis_client)
        if entry["decision"] == "accepted"
    ]
    assert accepted == [("mas.progress", True, None)] * 2 + [("done", None, True)]
    # Read before the reply, in the order sent: nobody listens to a plain request's reports.
    seen = await scrape(asker.session, asker.base_url + "/metrics", **asker.headers)
    assert seen.value("mas_progress_reports_total", {"outcome": "unheard"}) == 2
    assert seen.value("mas_replies_total") == 1


async def test_a_progress_report_dlp_blocks_is_refused_and_the_request_still_answered(
    worker: Worker, asker: Api, redis_client: redis.Redis
) -> None:
    await _enforce(asker, worker, redis_client, dlp={"detectors": {"us_ssn": "block"}})
    reply = await _ask(asker, ["found {ssn}", "almost done"])
    assert reply["type"] == "done"
    await asyncio.wait_for(worker.done.wait(), 60)
    assert worker.outcomes == ["dlp_blocked", "sent", "already_replied"]
    blocked = [entry for entry in _audit(redis_client) if entry["decision"] == "dlp_blocked"]
    assert [entry["type"] for entry in blocked] == ["mas.progress"]
    assert SSN not in orjson.dumps(_audit(redis_client)).decode()


async def test_a_message_that_is_not_a_request_takes_no_progress_report(
    worker: Worker, asker: Api
) -> None:
    await asker.send("worker", "work", {"steps": ["reading"], "reply": False})
    await asyncio.wait_for(worker.done.wait(), 60)
    assert worker.outcomes == ["not_a_request"]


async def test_the_progress_route_answers_an_error_code_per_failure(asker: Api) -> None:
    status, body = await asker.call("POST", "/v1/deliveries/nope/progress", {"text": "x"})
    assert (status, body["error"]["code"]) == (404, "delivery_not_found")
    status, body = await asker.call("POST", "/v1/deliveries/nope/progress", {"text": ""})
    assert (status, body["error"]["code"]) == (400, "invalid_request")


async def test_a_deny_rule_refuses_progress_reports_like_replies(
    worker: Worker, asker: Api, redis_client: redis.Redis
) -> None:
    quiet = {"name": "quiet", "action": "deny", "from": {"agents": ["worker"]},
             "types": ["mas.progress"]}  # fmt: skip
    await _enforce(asker, worker, redis_client, extra_rules=[quiet])
    reply = await _ask(asker, ["reading"])
    assert reply["type"] == "done"
    await asyncio.wait_for(worker.done.wait(), 60)
    assert worker.outcomes == ["forbidden", "already_replied"]
    denied = [entry for entry in _audit(redis_client) if entry["decision"] == "denied"]
    assert [entry["type"] for entry in denied] == ["mas.progress"]
    assert "quiet" in denied[0]["reason"]
