"""A Redis that keeps its data, restarted under running sidecars: no message that got a 202 is lost.

The server keeps an append-only file and an ACL file, as the chart's embedded Redis and
``mas up``'s do, and each agent's sidecar connects as the agent's own ACL user, made and saved
as the control plane makes them. Messages are accepted, then the server is stopped cleanly
(SIGTERM; ``appendfsync everysec``, the default) or killed (SIGKILL; ``appendfsync always``) and
started again on the same port and files. The sidecars carry on by themselves with the users
the server kept, and every accepted message is delivered; the seconds from the stop until the
sender's sidecar accepted again are reported on the terminal.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest
import redis
from api import Api
from conftest import ALLOW_ALL, Sidecars
from waiting import eventually

from mas_cli.local.redis_server import RedisServer
from mas_control.acl_file import save_acl_users
from mas_control.provision import apply_acl_user, ensure_functions, publish_policy
from mas_core.acl import agent_redis_url, generate_password

ACCEPTED = 20


def control_plane(server: RedisServer, agents: list[str]) -> dict[str, str]:
    """Functions, the policy and each agent's ACL user (saved), as the operator sets them up;
    each agent's Redis URL."""
    admin = redis.Redis.from_url(server.url)
    try:
        ensure_functions(admin)
        publish_policy(admin, ALLOW_ALL)
        urls = {}
        for agent_id in agents:
            password = generate_password()
            apply_acl_user(admin, agent_id, password)
            urls[agent_id] = agent_redis_url(server.url, agent_id, password)
        assert save_acl_users(admin)
    finally:
        admin.close()
    return urls


@pytest.mark.parametrize(
    ("appendfsync", "stop"), [("everysec", signal.SIGTERM), ("always", signal.SIGKILL)]
)
async def test_a_restarted_redis_loses_no_accepted_message_and_no_user(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    capsys: pytest.CaptureFixture[str],
    appendfsync: str,
    stop: signal.Signals,
) -> None:
    data = tmp_path / "redis"
    data.mkdir(mode=0o700)
    server = RedisServer(
        os.environ.get("MAS_TEST_REDIS_SERVER"), append_only=True, appendfsync=appendfsync,
        acl_file=True, data_dir=data,
    )  # fmt: skip
    server.start()
    sidecars = Sidecars(server.url, tmp_path / "logs")
    try:
        urls = control_plane(server, ["default/alice", "default/bob"])
        alice = Api(http, sidecars.start("default/alice", redis_url=urls["default/alice"]))
        bob = Api(http, sidecars.start("default/bob", redis_url=urls["default/bob"]))
        accepted = [await alice.send("bob", "seq", {"n": n}) for n in range(ACCEPTED)]

        assert server.process is not None
        failed_at = time.monotonic()
        server.process.send_signal(stop)
        server.process.wait()
        server.stop()
        server.start()

        async def accepted_again() -> str | None:
            status, body = await alice.call("POST", "/v1/messages", {"to": "bob", "type": "seq"})
            return str(body["id"]) if status == 202 else None

        accepted.append(await eventually(accepted_again, "the sender's sidecar accepts again"))
        working_again = time.monotonic() - failed_at
        delivered = {event["id"] for event in await bob.collect(len(accepted))}
        with capsys.disabled():
            print(
                f"\n  Redis {stop.name} ({appendfsync}): {len(set(accepted) - delivered)} of "
                f"{len(accepted)} accepted lost; the sender's sidecar accepting again "
                f"{working_again:.1f}s after it"
            )
        assert delivered == set(accepted)
    finally:
        sidecars.stop_all()
        server.stop()
