"""The second listener (``MAS_METRICS_ADDRESS``): Prometheus and the kubelet reach ``/metrics``,
``/healthz`` and ``/readyz`` there without a token, and nothing else — not with the agent's own
token either. Real sidecar processes, the listener on a loopback port."""

from __future__ import annotations

import aiohttp
import orjson
import pytest
import redis
from conftest import Sidecars
from streams import waiting_for
from test_sidecar_auth import every_route
from test_sidecar_limits import HEAD, RawClient, authorized

from mas_cli.local.redis_server import free_port
from mas_core.sidecar_token import authorization
from mas_sidecar.api.probes import MAX_CONNECTIONS
from mas_sidecar.config import SidecarConfig
from mas_sidecar.errors import ConfigError

SIDECAR = {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "redis://r:6379", "MAS_SIDECAR_TOKEN": "t" * 32}
PROBES = {"/metrics", "/healthz", "/readyz"}


def config(**env: str) -> SidecarConfig:
    return SidecarConfig.build(agent_id=None, port=8790, redis_url=None, env={**SIDECAR, **env})


def test_the_listener_is_off_unless_an_address_is_given() -> None:
    assert config().metrics_address is None
    assert config(MAS_METRICS_ADDRESS="0.0.0.0:9090").metrics_address == ("0.0.0.0", 9090)
    assert config(MAS_METRICS_ADDRESS="[::]:9091").metrics_address == ("::", 9091)


@pytest.mark.parametrize(
    "address", ["9090", "0.0.0.0", "pod:9090", "0.0.0.0:0", "0.0.0.0:70000", "0.0.0.0:x", ":9090"]
)
def test_a_bad_address_stops_the_sidecar_at_start_up(address: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config(MAS_METRICS_ADDRESS=address)
    assert str(refused.value).endswith(
        "must be an IP address and a port, such as 0.0.0.0:9090 or [::]:9090"
    )


def test_the_listener_needs_a_port_of_its_own() -> None:
    with pytest.raises(ConfigError, match="a port of its own, not the API's"):
        config(MAS_METRICS_ADDRESS="0.0.0.0:8790")


async def test_metrics_and_probes_answer_there_without_a_token(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    sidecars.start("default/alice", MAS_METRICS_ADDRESS=f"127.0.0.1:{port}")
    for path in sorted(PROBES):
        async with http.get(f"http://127.0.0.1:{port}{path}") as answer:
            assert answer.status == 200, path
            if path == "/metrics":
                assert answer.content_type == "text/plain"
                assert "mas_http_requests_total" in await answer.text()


async def test_no_route_of_the_message_api_is_served_there_whatever_the_token(
    sidecars: Sidecars, http: aiohttp.ClientSession, redis_client: redis.Redis
) -> None:
    sidecars.start("default/bob")
    port = free_port()
    alice = sidecars.start("default/alice", MAS_METRICS_ADDRESS=f"127.0.0.1:{port}")
    body = orjson.dumps({"to": "bob", "type": "stolen", "payload": {}, "ids": ["1-0"]})
    tokens = {"no token": {}, "the agent's own": {"Authorization": authorization(alice.token)}}
    for who, headers in tokens.items():
        for method, path in every_route():
            if path in PROBES and method == "GET":
                continue
            async with http.request(
                method, f"http://127.0.0.1:{port}{path}", data=body,
                headers={**headers, "Content-Type": "application/json"},
            ) as answer:  # fmt: skip
                error = (await answer.json())["error"]
                expected = (405, "method_not_allowed") if path in PROBES else (404, "not_found")
                assert (answer.status, error["code"]) == expected, (who, method, path)
                assert "serves only /metrics, /healthz and /readyz" in error["message"]
    assert waiting_for(redis_client, "default/bob") == []  # nothing was sent


async def test_a_request_for_the_api_there_is_answered_before_its_body_is_read(
    sidecars: Sidecars,
) -> None:
    port = free_port()
    alice = sidecars.start("default/alice", MAS_METRICS_ADDRESS=f"127.0.0.1:{port}")
    client = RawClient(port)
    client.send(
        b"POST /v1/messages HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        + authorized(alice)
        + b"Content-Length: 100000\r\n\r\n{"
    )  # the body never comes: an answer now was given without waiting for it
    status, _, raw = client.answer()
    client.close()
    assert status == 404 and orjson.loads(raw)["error"]["code"] == "not_found"


async def test_connections_beyond_the_listeners_few_are_refused_and_the_api_is_not_affected(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    alice = sidecars.start(
        "default/alice", MAS_METRICS_ADDRESS=f"127.0.0.1:{port}", MAS_IDLE_TIMEOUT_MS="600000"
    )
    held: list[RawClient] = []
    refused: tuple[int, dict[str, str], bytes] | None = None
    while refused is None:  # open and use connections, keeping them, until one is refused
        client = RawClient(port)
        client.send(HEAD)
        answer = client.answer()
        if answer[0] == 200:
            held.append(client)
        else:
            refused = answer
            client.close()
    status, _, body = refused
    assert status == 503
    assert orjson.loads(body)["error"]["code"] == "too_many_connections"
    assert len(held) == MAX_CONNECTIONS
    async with http.get(
        alice.url + "/v1/self", headers={"Authorization": authorization(alice.token)}
    ) as answer:
        assert answer.status == 200  # the API has its own connections
    for client in held:
        client.close()
