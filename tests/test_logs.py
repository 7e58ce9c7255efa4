"""Log lines of the sidecar, the operator and ``mas up``: ``MAS_LOG_FORMAT=json`` makes one JSON
object per line; a line about a message names the agent, the message and its trace in either
format; a format that does not exist stops the program at start.

The lines checked are the real output of real sidecar processes, about a message one agent
sends another, which dead-letters it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from waiting import eventually

from mas_cli.local.processes import SidecarProcess
from mas_core.telemetry import logs
from mas_operator.config import OperatorConfig

if TYPE_CHECKING:
    from conftest import Sidecars

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def _dead_lettered_message(sidecars: Sidecars, **env: str) -> tuple[SidecarProcess, str]:
    """Alice sends Bob a message in a trace; Bob's agent rejects it. Bob's sidecar, and the
    message's id."""
    alice = sidecars.start("default/alice", **env)
    bob = sidecars.start("default/bob", **env)
    headers = {"Authorization": f"Bearer {alice.token}", "traceparent": TRACEPARENT}
    async with aiohttp.ClientSession() as http:
        sent = await http.post(
            f"{alice.url}/v1/messages",
            json={"to": "bob", "type": "note", "payload": {}},
            headers=headers,
        )
        assert sent.status == 202, await sent.text()
        message_id = (await sent.json())["id"]
    async with bob.client() as client:
        async for delivery in client.deliveries():
            assert delivery["id"] == message_id
            await client.reject(message_id, "not for me")
            break
    return bob, message_id


def _lines(sidecar: SidecarProcess, needle: str) -> list[str]:
    assert sidecar.log_path is not None
    return [line for line in sidecar.log_path.read_text().splitlines() if needle in line]


async def test_json_logs_are_one_object_per_line_naming_agent_message_and_trace(
    sidecars: Sidecars,
) -> None:
    bob, message_id = await _dead_lettered_message(sidecars, MAS_LOG_FORMAT="json")

    lines = await eventually(lambda: _lines(bob, "dead-lettered"), "the dead-letter line")
    line = json.loads(lines[0])
    assert line["level"] == "INFO"
    assert line["logger"] == "mas_sidecar.streams.inbox"
    assert "rejected: not for me" in line["message"]
    assert (line["agent_id"], line["message_id"], line["trace_id"]) == (
        "default/bob",
        message_id,
        TRACE_ID,
    )
    assert bob.log_path is not None
    every = [json.loads(text) for text in bob.log_path.read_text().splitlines() if text]
    assert every and all(entry["agent_id"] == "default/bob" for entry in every)


async def test_text_logs_carry_the_same_fields_as_key_value_pairs(sidecars: Sidecars) -> None:
    bob, message_id = await _dead_lettered_message(sidecars)

    lines = await eventually(lambda: _lines(bob, "dead-lettered"), "the dead-letter line")
    assert lines[0].endswith(f"agent_id=default/bob message_id={message_id} trace_id={TRACE_ID}"), (
        lines[0]
    )


def test_a_sidecar_with_an_unknown_log_format_stops_at_start_naming_it(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MAS_LOG_FORMAT": "xml",
        "MAS_SIDECAR_INSECURE_NO_TOKEN": "true",
        "MAS_REDIS_URL": "redis://127.0.0.1:1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "mas_sidecar", "--agent-id", "default/a", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "MAS_LOG_FORMAT='xml' must be one of text, json" in result.stderr


def test_the_operator_reads_the_log_format_in_any_case() -> None:
    env = {"MAS_REDIS_URL": "redis://127.0.0.1:6379", "MAS_LOG_FORMAT": "JSON"}
    assert OperatorConfig.from_env(env).log_format == "json"


def test_mas_up_refuses_an_unknown_log_format(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mas_cli", "up", str(tmp_path)],
        env={**os.environ, "MAS_LOG_FORMAT": "xml"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "MAS_LOG_FORMAT='xml' must be one of text, json" in result.stderr


def test_an_exception_stays_inside_its_json_line() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("mas_test.json")
    logger.addHandler(logs.handler("json", {"agent_id": "default/a"}, stream))
    logger.propagate = False
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("it failed", extra={"message_id": "m-1"})
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert (entry["message"], entry["agent_id"], entry["message_id"]) == (
        "it failed",
        "default/a",
        "m-1",
    )
    assert "RuntimeError: boom" in entry["exception"]
