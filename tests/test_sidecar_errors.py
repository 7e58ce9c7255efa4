"""Bad input gets a 4xx with a stable code and a human message, and never harms the sidecar."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from api import Api
from conftest import Sidecars
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mas_cli.local.processes import SidecarProcess
from mas_cli.local.redis_server import RedisServer
from mas_control.provision import ensure_functions
from mas_core.error_codes import ErrorCode
from mas_core.sidecar_token import authorization

CODES = {code.value for code in ErrorCode}


def assert_error(status: int, body: Any, expected_status: int, code: str) -> None:
    assert status == expected_status, body
    assert body["error"]["code"] == code
    assert body["error"]["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "x"}, "invalid_request"),  # no target
        ({"to": "bob"}, "invalid_request"),  # no type
        ({"to": 42, "type": "x"}, "invalid_request"),  # not coerced
        ({"to": "bob", "type": "has space"}, "invalid_request"),
        ({"to": "bob", "type": "x" * 129}, "invalid_request"),
        ({"to": "bob", "type": "x", "surprise": 1}, "invalid_request"),
        ({"to": "bob", "type": "x", "ttl_ms": 0}, "invalid_request"),
        ({"to": "bob", "type": "x", "ttl_ms": "10"}, "invalid_request"),
        ({"to": "Bob_Upper", "type": "x"}, "invalid_agent_id"),
        ({"to": "a/b/c", "type": "x"}, "invalid_agent_id"),
        ({"to": "/bob", "type": "x"}, "invalid_agent_id"),
        ([1, 2, 3], "invalid_json"),
        ("just a string", "invalid_json"),
    ],
)
async def test_a_malformed_message_is_refused_with_400_and_its_code(
    sidecars: Sidecars, http: aiohttp.ClientSession, body: Any, code: str
) -> None:
    sidecars.start("default/bob")
    alice = Api(http, sidecars.start("default/alice"))

    status, answer = await alice.call("POST", "/v1/messages", body)

    assert_error(status, answer, 400, code)


async def test_bodies_that_are_not_json_are_refused(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))
    url = alice.base_url + "/v1/messages"
    json_header = {"Content-Type": "application/json"}

    cases = [
        (b"{not json", json_header, 400, "invalid_json"),
        (b"\xff\xfe\x00", json_header, 400, "invalid_json"),
        (b'{"to": "bob", "type": "x", "payload": NaN}', json_header, 400, "invalid_json"),
        (b"to=bob&type=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
         "unsupported_media_type"),
        (b"[" * 100_000 + b"]" * 100_000, json_header, 400, "invalid_request"),
        # Broken and too deep: the depth is what the answer names, whatever the parser.
        (b"[" * 100 + b"x", json_header, 400, "invalid_request"),
        # Brackets inside a string do not nest.
        (b'["' + b"[" * 100 + b'"', json_header, 400, "invalid_json"),
        (b'["\\\\"' + b"[" * 100, json_header, 400, "invalid_request"),  # an escaped backslash
    ]  # fmt: skip
    for data, headers, expected, code in cases:
        async with http.post(url, data=data, headers={**alice.headers, **headers}) as answer:
            assert_error(answer.status, await answer.json(), expected, code)


async def test_deeply_nested_json_within_the_parser_limit_is_refused_not_crashed(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    sidecars.start("default/bob")
    alice = Api(http, sidecars.start("default/alice"))
    nested: Any = "leaf"
    for _ in range(80):  # 160 levels: past the sidecar's 64, within the encoders' 255
        nested = {"k": [nested]}
    for path, method in (("/v1/messages", "POST"), ("/v1/state", "PUT")):
        status, answer = await alice.call(
            method, path, {"to": "bob", "type": "x", "payload": nested, "state": {"a": nested}}
        )
        assert_error(status, answer, 400, "invalid_request")
    assert "deeper" in answer["error"]["message"]


async def test_a_body_over_the_limit_gets_413_and_the_sidecar_carries_on(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    sidecars.start("default/bob")
    alice = Api(http, sidecars.start("default/alice"))
    ten_megabytes = orjson.dumps({"to": "bob", "type": "x", "payload": "a" * (10 << 20)})

    async with http.post(
        alice.base_url + "/v1/messages",
        data=ten_megabytes,
        headers={**alice.headers, "Content-Type": "application/json"},
    ) as answer:
        assert_error(answer.status, await answer.json(), 413, "body_too_large")
    assert await alice.send("bob", "still-works") != ""


async def test_unknown_routes_methods_and_ids_get_404_or_405_with_codes(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))

    cases = [
        ("GET", "/v2/anything", None, 404, "not_found"),
        ("DELETE", "/v1/messages", None, 405, "method_not_allowed"),
        ("POST", "/v1/deliveries/01NOPE/ack", None, 404, "delivery_not_found"),
        ("POST", "/v1/deliveries/01NOPE/nack", {"delay_ms": 5}, 404, "delivery_not_found"),
        ("POST", "/v1/deliveries/01NOPE/extend", None, 404, "delivery_not_found"),
        ("POST", "/v1/deliveries/01NOPE/reply", {"type": "r"}, 404, "delivery_not_found"),
        ("POST", "/v1/deliveries/01NOPE/reject", {"reason": "r"}, 404, "delivery_not_found"),
        ("POST", "/v1/deliveries/01NOPE/reject", {}, 400, "invalid_request"),
        ("POST", "/v1/deliveries/x/nack", {"delay_ms": -1}, 400, "invalid_request"),
        ("POST", "/v1/dead-letters/1-1/replay", None, 404, "dead_letter_not_found"),
        ("POST", "/v1/dead-letters/not-an-id/replay", None, 404, "dead_letter_not_found"),
        ("DELETE", "/v1/dead-letters/99999999999999999999999-1", None, 404,
         "dead_letter_not_found"),
        ("GET", "/v1/dead-letters?limit=0", None, 400, "invalid_request"),
        ("GET", "/v1/dead-letters?limit=abc", None, 400, "invalid_request"),
        ("PUT", "/v1/state", {"state": [1]}, 400, "invalid_request"),
        ("PUT", "/v1/self", {"metadata": "x"}, 400, "invalid_request"),
        ("GET", "/v1/agents?" + "&".join(["capability=x"] * 40), None, 400, "invalid_request"),
    ]  # fmt: skip
    for method, path, body, expected, code in cases:
        status, answer = await alice.call(method, path, body)
        assert_error(status, answer, expected, code)


async def test_health_readiness_metrics_and_openapi_are_served(
    sidecars: Sidecars, http: aiohttp.ClientSession
) -> None:
    alice = Api(http, sidecars.start("default/alice"))

    assert (await alice.call("GET", "/healthz"))[0] == 200
    assert (await alice.call("GET", "/readyz"))[0] == 200
    status, spec = await alice.call("GET", "/v1/openapi.json")
    assert status == 200
    assert spec["openapi"].startswith("3.")
    assert "/v1/messages" in spec["paths"]
    assert set(spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
               ["code"]["enum"]) == CODES  # fmt: skip
    async with http.get(alice.base_url + "/metrics", headers=alice.headers) as answer:
        text = await answer.text()
    assert "mas_http_requests_total" in text


async def test_readiness_fails_with_503_while_redis_is_down(
    http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    server = RedisServer()
    server.start()
    with redis.Redis.from_url(server.url) as admin:
        ensure_functions(admin)
    sidecar = SidecarProcess("default/alice", server.url, log_path=tmp_path / "alice.log")
    sidecar.start()
    try:
        server.stop()
        alice = Api(http, sidecar)
        status, answer = await alice.call("GET", "/readyz")
        assert_error(status, answer, 503, "redis_unavailable")
        status, answer = await alice.call("GET", "/v1/state")
        assert_error(status, answer, 503, "redis_unavailable")
        assert (await alice.call("GET", "/healthz"))[0] == 200
    finally:
        sidecar.stop()
        server.stop()


# -- property: no request body yields a 5xx -------------------------------------------------


def encode(value: Any) -> bytes:
    """Standard-library JSON: unlike orjson it writes integers of any size."""
    return json.dumps(value).encode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["to", "type", "payload", "correlation_id", "ttl_ms", "delay_ms", "reason", "state",
     "metadata", "timeout_ms"]
)  # fmt: skip
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(encode),
    st.dictionaries(field_names, json_values, max_size=6).map(encode),
)
routes = st.sampled_from(
    [("POST", "/v1/messages"), ("POST", "/v1/deliveries/{id}/ack"),
     ("POST", "/v1/deliveries/{id}/nack"), ("POST", "/v1/deliveries/{id}/reply"),
     ("POST", "/v1/deliveries/{id}/reject"), ("PUT", "/v1/state"), ("PATCH", "/v1/state"),
     ("PUT", "/v1/self"), ("POST", "/v1/dead-letters/{id}/replay")]
)  # fmt: skip
ids = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=30
)


@pytest.fixture(scope="module")
def fuzz_target(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SidecarProcess]:
    log_path = tmp_path_factory.mktemp("fuzz") / "sidecar.log"
    sidecar = SidecarProcess("fuzz/target", redis_server.url, log_path=log_path)
    sidecar.start()
    yield sidecar
    assert sidecar.running(), "the sidecar died under fuzzing"
    sidecar.stop()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=routes, delivery_id=ids, body=bodies, content_type=st.sampled_from(
    ["application/json", "text/plain", ""]))  # fmt: skip
def test_no_request_body_yields_a_server_error(
    fuzz_target: SidecarProcess,
    route: tuple[str, str],
    delivery_id: str,
    body: bytes,
    content_type: str,
) -> None:
    method, path = route
    url = fuzz_target.url + path.replace("{id}", urllib.request.quote(delivery_id, safe=""))
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", authorization(fuzz_target.token))
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    assert status < 500, raw
    if status >= 400:
        assert orjson.loads(raw)["error"]["code"] in CODES
