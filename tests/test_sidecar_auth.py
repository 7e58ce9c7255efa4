"""A sidecar serves its own agent only: every request but the probes carries the agent's token.

Real sidecar processes on loopback, called over HTTP as another local process would: with no
token, another agent's token, a made-up one, another scheme. Each is refused with
``401 unauthenticated_client`` before anything is done; the right token works. A sidecar started
by hand refuses to start without a token unless told to serve everyone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
import redis
from api import Api
from conftest import Sidecars
from streams import waiting_for
from test_sidecar_limits import RawClient, authorized
from waiting import eventually

from mas.client import SidecarClient
from mas.errors import SidecarError
from mas_cli.local.processes import ChildProcess, sidecar_args
from mas_cli.local.redis_server import free_port
from mas_sidecar.api.openapi import build_openapi

PROBES = {"/healthz", "/readyz"}


def every_route() -> list[tuple[str, str]]:
    """``(method, path)`` of every operation the sidecar serves, ids filled in."""
    paths = build_openapi()["paths"]
    routes = [(method.upper(), path) for path, operations in paths.items() for method in operations]
    return [(method, path.replace("{id}", "1-0")) for method, path in routes]


def made_up(character: str) -> str:
    """A token character other than ``character``."""
    return "B" if character == "A" else "A"


async def test_every_route_but_the_probes_refuses_a_caller_without_the_agents_token(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    bob = sidecars.start("default/bob")
    alice = sidecars.start("default/alice")
    body = {"to": "bob", "type": "stolen", "payload": {}, "messages": [], "state": {}}
    callers = {
        "no token": Api(http, alice, token=""),
        "another agent's token": Api(http, alice, token=bob.token),
        # One character changed, never to itself (a token ending in "A" stayed the same).
        "a made-up token": Api(http, alice, token=alice.token[:-1] + made_up(alice.token[-1])),
    }
    for who, caller in callers.items():
        for method, path in every_route():
            status, answer = await caller.call(method, path, None if method == "GET" else body)
            if path in PROBES:
                assert status == 200, (who, path)
            else:
                assert status == 401, (who, method, path, answer)
                assert answer["error"]["code"] == "unauthenticated_client"
    for header in (f"Basic {alice.token}", alice.token, f"Bearer {alice.token} extra"):
        status, _ = await Api(http, alice, token="").call(
            "GET", "/v1/self", headers={"Authorization": header}
        )
        assert status == 401, header
    async with http.get(alice.url + "/v1/self") as refused:
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")

    assert waiting_for(redis_client, "default/bob") == []  # nothing was sent
    own = Api(http, alice)
    assert (await own.call("GET", "/v1/self"))[0] == 200
    status, _ = await Api(http, alice, token="").call(
        "GET", "/v1/self", headers={"Authorization": f"bearer {alice.token}"}
    )
    assert status == 200  # the scheme is case-insensitive (RFC 7235)
    await own.send("bob", "allowed")
    assert [d["type"] for d in await Api(http, bob).collect(1)] == ["allowed"]


async def test_a_refused_request_is_answered_before_its_body_is_read(
    sidecars: Sidecars,
) -> None:
    sidecar = sidecars.start("default/alice", MAS_BODY_TIMEOUT_MS="600000")
    client = RawClient(sidecar.port)
    client.send(
        b"POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n{"
    )  # the body never comes: an answer now was given without reading it
    status, headers, _ = client.answer()
    client.close()
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    authorized_client = RawClient(sidecar.port)
    authorized_client.send(
        b"GET /v1/self HTTP/1.1\r\nHost: sidecar\r\n" + authorized(sidecar) + b"\r\n"
    )
    assert authorized_client.answer()[0] == 200
    authorized_client.close()


async def test_the_sdk_presents_the_token_from_the_environment_or_a_file(
    sidecars: Sidecars, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    alice = sidecars.start("default/alice")
    monkeypatch.setenv("MAS_SIDECAR_URL", alice.url)
    monkeypatch.delenv("MAS_SIDECAR_TOKEN", raising=False)
    async with SidecarClient() as anonymous:
        with pytest.raises(SidecarError) as refused:
            await anonymous.self_info()
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated_client")

    token_file = tmp_path / "token"
    token_file.write_text(alice.token + "\n")
    monkeypatch.setenv("MAS_SIDECAR_TOKEN_FILE", str(token_file))
    async with SidecarClient() as from_file:
        assert (await from_file.self_info())["id"] == "default/alice"
    monkeypatch.delenv("MAS_SIDECAR_TOKEN_FILE")
    monkeypatch.setenv("MAS_SIDECAR_TOKEN", alice.token)
    async with SidecarClient() as from_env:
        assert (await from_env.self_info())["id"] == "default/alice"


async def test_a_sidecar_started_by_hand_needs_a_token_or_an_explicit_insecure_setting(
    redis_url: str, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    port = free_port()
    settings = {"MAS_REDIS_URL": redis_url}
    refused = ChildProcess(
        sidecar_args("default/alice", port), env=settings, log_path=tmp_path / "refused.log"
    )
    refused.start()
    assert refused.process is not None
    assert await asyncio.to_thread(refused.process.wait, 60) == 2
    refused.stop()
    assert "needs its agent's token" in (tmp_path / "refused.log").read_text()

    insecure = ChildProcess(
        sidecar_args("default/alice", port),
        env={**settings, "MAS_SIDECAR_INSECURE_NO_TOKEN": "true"},
        log_path=tmp_path / "insecure.log",
    )
    insecure.start()
    try:

        async def served() -> bool:
            try:
                async with http.get(f"http://127.0.0.1:{port}/v1/self") as answer:
                    return answer.status == 200
            except aiohttp.ClientConnectionError:
                return False

        assert await eventually(served, "served without a token")
    finally:
        insecure.stop()
    assert "any local process may use" in (tmp_path / "insecure.log").read_text()
