"""Pure functions of the protocol and the sidecar: ids, agent ids, keys, envelopes, settings."""

from __future__ import annotations

import binascii
from pathlib import Path
from typing import Any

import pytest

from mas_core.envelope import ENTRY_FIELD, Envelope, EnvelopeError
from mas_core.ids import id_time_ms, new_id
from mas_core.keys import AgentKeys
from mas_core.names import InvalidAgentIdError, qualify
from mas_core.sidecar_token import new_token
from mas_sidecar.api.http import MAX_JSON_DEPTH, too_deep
from mas_sidecar.api.openapi import build_openapi
from mas_sidecar.config import SidecarConfig
from mas_sidecar.errors import ConfigError
from mas_sidecar.streams.outbox import build_envelope
from mas_sidecar.streams.state_store import merge_patch

TOKEN = new_token()


def cluster_slot(key: str) -> int:
    """Redis Cluster's slot of ``key`` (CRC16 of the hash tag, mod 16384)."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key.encode(), 0) % 16384


def test_message_ids_are_unique_26_characters_and_sort_by_time() -> None:
    ids = [new_id(now_ms=1_000 + n // 10) for n in range(1000)]

    assert len(set(ids)) == 1000
    assert all(len(i) == 26 for i in ids)
    assert [id_time_ms(i) for i in sorted(ids)] == sorted(1_000 + n // 10 for n in range(1000))
    assert id_time_ms(new_id(now_ms=1_795_000_000_123)) == 1_795_000_000_123


@pytest.mark.parametrize(
    ("agent", "namespace", "expected"),
    [("bob", "default", "default/bob"), ("bob", "team-a", "team-a/bob"),
     ("team-b/bob", "team-a", "team-b/bob"), ("a1-b2", "x", "x/a1-b2")],
)  # fmt: skip
def test_a_bare_name_is_qualified_with_the_senders_namespace(
    agent: str, namespace: str, expected: str
) -> None:
    assert qualify(agent, namespace) == expected


@pytest.mark.parametrize("bad", ["", "Bob", "a/b/c", "/bob", "bob/", "-bob", "a" * 64, "b b", "é"])
def test_agent_ids_that_are_not_dns_labels_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidAgentIdError):
        qualify(bad)


def test_all_keys_of_one_agent_share_one_cluster_slot() -> None:
    keys = AgentKeys("team-a/doctor")
    all_keys = [
        keys.inbox("team-b/nurse"), keys.senders, keys.ring, keys.dlq, keys.state,
        keys.replies("doctor-7f9c-0", "team-b/nurse"), keys.reply_bell("doctor-7f9c-0"),
        keys.seen, keys.seen_by_time, keys.ratelimit("shared"),
    ]  # fmt: skip

    assert len({cluster_slot(k) for k in all_keys}) == 1
    assert all(k.startswith(keys.prefix) for k in all_keys)
    nurse = AgentKeys("team-a/nurse")
    assert cluster_slot(nurse.inbox("team-a/doctor")) != cluster_slot(keys.inbox("team-a/nurse"))


def test_an_envelope_round_trips_through_a_stream_entry_without_its_attempt() -> None:
    envelope = build_envelope(
        sender="default/a", target="default/b", type="t", payload={"x": [1, {"y": None}]},
        correlation_id="c", reply_to="r-0", ttl_ms=1000, trace={"traceparent": "00-1-2-01"},
        now_ms=5_000,
    )  # fmt: skip
    entry = envelope.to_entry()

    assert b'"attempt"' not in entry[ENTRY_FIELD]
    decoded = Envelope.from_entry(entry, attempt=3)
    assert decoded == envelope.model_copy(update={"attempt": 3})
    assert decoded.expires_at == 6_000
    assert decoded.is_expired(6_000) and not decoded.is_expired(5_999)


ENVELOPE_JSON = (
    b'{"id": "m-1", "sender": "default/a", "target": "default/b", "type": "t",'
    b' "payload": {"x": "PAYLOAD"}, "created_at": 1}'
)


def test_the_envelope_template_of_the_next_test_is_an_envelope() -> None:
    assert Envelope.from_entry({ENTRY_FIELD: ENVELOPE_JSON}).payload == {"x": "PAYLOAD"}


@pytest.mark.parametrize(
    "fields",
    [{}, {ENTRY_FIELD: b"not json"}, {ENTRY_FIELD: b"[]"}, {ENTRY_FIELD: b'{"id": "x"}'},
     {b"other": b"x"},
     # Values orjson could not write back alike (signatures rely on it): not envelopes.
     {ENTRY_FIELD: ENVELOPE_JSON.replace(b'"PAYLOAD"', b"NaN")},
     {ENTRY_FIELD: ENVELOPE_JSON.replace(b'"PAYLOAD"', b"-Infinity")},
     {ENTRY_FIELD: ENVELOPE_JSON.replace(b'"PAYLOAD"', b'"\\ud800"')}],
)  # fmt: skip
def test_a_stream_entry_that_is_not_an_envelope_raises_envelope_error(
    fields: dict[bytes, bytes],
) -> None:
    with pytest.raises(EnvelopeError):
        Envelope.from_entry(fields)


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": None}}, {"a": {"x": 1}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": {"deep": True}}, {"a": {"deep": True}}),
        ({"a": 1}, {}, {"a": 1}),
        ({"a": 1}, {"missing": None}, {"a": 1}),
    ],
)
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


def test_json_deeper_than_the_limit_is_detected_without_recursion() -> None:
    shallow: Any = []
    for _ in range(MAX_JSON_DEPTH - 1):
        shallow = [shallow]
    deep: Any = []
    for _ in range(100_000):
        deep = {"k": deep}

    assert not too_deep(shallow)
    assert too_deep([shallow])
    assert too_deep(deep)


def test_sidecar_settings_come_from_arguments_then_environment() -> None:
    env = {
        "MAS_AGENT_ID": "team/alice",
        "MAS_REDIS_URL": "redis://127.0.0.1:1/0",
        "MAS_CAPABILITIES": "chat,search",
        "MAS_METADATA": '{"model": "x"}',
        "MAS_LEASE_MS": "1500",
        "MAS_REPLICA_ID": "alice-0",
        "MAS_MAX_CONNECTIONS": "16",
        "MAS_MAX_SUBSCRIBERS": "4",
        "MAS_IDLE_TIMEOUT_MS": "2000",
        "MAS_SIDECAR_TOKEN": TOKEN,
    }
    config = SidecarConfig.build(agent_id="bob", port=9000, redis_url=None, env=env)

    assert config.agent_id == "default/bob"
    assert config.port == 9000
    assert config.redis_url == "redis://127.0.0.1:1/0"
    assert config.capabilities == ("chat", "search")
    assert config.metadata == {"model": "x"}
    assert (config.lease_ms, config.replica, config.namespace) == (1500, "alice-0", "default")
    assert (config.max_connections, config.max_subscribers) == (16, 4)
    assert (config.idle_timeout_ms, config.body_timeout_ms) == (2000, 10_000)
    assert not config.redis_cluster
    assert config.api_token == TOKEN
    clustered = SidecarConfig.build(
        agent_id="bob", port=9000, redis_url=None, env=env | {"MAS_REDIS_CLUSTER": "TRUE"}
    )
    assert clustered.redis_cluster


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "agent id is required"),
        ({"MAS_AGENT_ID": "Alice"}, "DNS-1123"),
        ({"MAS_AGENT_ID": "a"}, "Redis URL is required"),
        ({"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", "MAS_LEASE_MS": "soon"}, "not an integer"),
        ({"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", "MAS_LEASE_MS": "5"}, "outside"),
        ({"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", "MAS_METADATA": "[1]"}, "JSON object"),
        ({"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", "MAS_METADATA": "{"}, "not valid JSON"),
        (
            {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", "MAS_REDIS_CLUSTER": "maybe"},
            "MAS_REDIS_CLUSTER must be true or false",
        ),
        (
            {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", "MAS_MAX_CONNECTIONS": "64"},
            "MAS_MAX_SUBSCRIBERS=64 leaves no connection",
        ),
        ({"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", "MAS_BODY_TIMEOUT_MS": "0"}, "outside"),
        (
            {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "redis+sentinel://s:26379"},
            "ends with /<primary name>",
        ),
        (
            {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "redis+sentinel://s/m"}
            | {"MAS_REDIS_CLUSTER": "1"},
            "contradict",
        ),
        (
            {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "redis+cluster://r"}
            | {"MAS_REDIS_WAIT_REPLICAS": "1"},
            "needs one primary",
        ),
    ],
)
def test_bad_sidecar_settings_fail_at_start_with_a_clear_message(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SidecarConfig.build(agent_id=None, port=None, redis_url=None, env=env)


def test_sidecar_secrets_come_from_files_and_never_show_in_its_settings(tmp_path: Path) -> None:
    (tmp_path / "redis-url").write_text("redis://user:s3cret@127.0.0.1:1/0\n")
    (tmp_path / "api-token").write_text(TOKEN + "\n")
    env = {
        "MAS_AGENT_ID": "a",
        "MAS_REDIS_URL_FILE": str(tmp_path / "redis-url"),
        "MAS_SIDECAR_TOKEN_FILE": str(tmp_path / "api-token"),
    }
    config = SidecarConfig.build(agent_id=None, port=None, redis_url=None, env=env)

    assert (config.redis_url, config.api_token) == ("redis://user:s3cret@127.0.0.1:1/0", TOKEN)
    assert "s3cret" not in repr(config) and TOKEN not in repr(config)
    insecure = {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", "MAS_SIDECAR_INSECURE_NO_TOKEN": "1"}
    assert (
        SidecarConfig.build(agent_id=None, port=None, redis_url=None, env=insecure).api_token
        is None
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "needs its agent's token: set MAS_SIDECAR_TOKEN_FILE"),
        ({"MAS_SIDECAR_TOKEN": "short"}, "16 to 512 characters"),
        ({"MAS_SIDECAR_TOKEN": "a" * 20 + " b"}, "may hold only"),
        ({"MAS_SIDECAR_TOKEN": TOKEN, "MAS_SIDECAR_TOKEN_FILE": "/x"}, "not both"),
        ({"MAS_SIDECAR_TOKEN_FILE": "/nonexistent/token"}, "cannot read /nonexistent/token"),
        (
            {"MAS_SIDECAR_TOKEN": TOKEN, "MAS_SIDECAR_INSECURE_NO_TOKEN": "true"},
            "contradict each other",
        ),
        ({"MAS_SIDECAR_TOKEN": TOKEN, "MAS_REDIS_URL_FILE": "/x"}, "MAS_REDIS_URL or MAS_REDIS"),
    ],
)
def test_a_sidecar_without_a_usable_token_does_not_start(
    settings: dict[str, str], message: str
) -> None:
    env = {"MAS_AGENT_ID": "a", "MAS_REDIS_URL": "r", **settings}
    with pytest.raises(ConfigError, match=message):
        SidecarConfig.build(agent_id=None, port=None, redis_url=None, env=env)


def test_the_openapi_document_describes_every_route_with_request_schemas() -> None:
    spec = build_openapi()

    send = spec["paths"]["/v1/messages"]["post"]
    assert set(send["requestBody"]["content"]["application/json"]["schema"]["required"]) == {
        "to",
        "type",
    }
    assert {"get", "put", "patch"} <= set(spec["paths"]["/v1/state"])
    assert spec["paths"]["/v1/deliveries/{id}/ack"]["post"]["parameters"][0]["name"] == "id"
