"""The dashboard's Redis users, attacked with their own credentials on a real server.

The read-only user reads what the pages show and nothing else: no message in an inbox, no
agent's state, no write of any kind, no administrative command. The writer adds the rights a
dead-letter replay needs, and no other write: it cannot touch an agent's state, audit trail,
registry or policy. ``mas dashboard`` given an administrator's URL creates its user and keeps
only that user's URL.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from test_local_mode import MAS

from mas_cli.dashboard_setup import dashboard_url
from mas_control.provision import apply_dashboard_user, register_agent
from mas_core.acl import DASHBOARD_USER, dashboard_redis_url
from mas_core.keys import (
    DASHBOARD_AUDIT,
    POLICY_DOCUMENT,
    POLICY_ENFORCERS,
    REGISTRY_AGENTS,
    REGISTRY_LEASES,
    AgentKeys,
    audit_checkpoint,
)

BOB = AgentKeys("default/bob")


@pytest.fixture
def seeded(redis_client: redis.Redis) -> redis.Redis:
    """A registry entry, an inbox stream with a message, state, a dead letter, an audit entry."""
    register_agent(redis_client, "default/bob", ["pong"], [])
    redis_client.zadd(REGISTRY_LEASES, {"default/bob": 1})
    redis_client.sadd(BOB.senders, "default/alice")
    redis_client.xadd(BOB.inbox("default/alice"), {"e": b'{"payload": "secret text"}'})
    redis_client.xgroup_create(BOB.inbox("default/alice"), "mas", "0")
    redis_client.hset(BOB.state, mapping={"doc": "{}", "rev": 1})
    redis_client.xadd(BOB.dlq, {"e": b"{}", "dl:reason": b"bad"})
    redis_client.xadd(BOB.audit, {"e": b"{}"})
    redis_client.set(audit_checkpoint("default/bob"), b"{}")
    return redis_client


def _as(redis_url: str, redis_client: redis.Redis, *, writes: bool) -> Iterator[redis.Redis]:
    apply_dashboard_user(redis_client, "dashboard-password", writes=writes)
    url = dashboard_redis_url(redis_url, "dashboard-password", writes=writes)
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def reader(redis_url: str, seeded: redis.Redis) -> Iterator[redis.Redis]:
    yield from _as(redis_url, seeded, writes=False)


@pytest.fixture
def writer(redis_url: str, seeded: redis.Redis) -> Iterator[redis.Redis]:
    yield from _as(redis_url, seeded, writes=True)


def test_the_reader_reads_what_the_pages_show(reader: redis.Redis) -> None:
    assert reader.hgetall(REGISTRY_AGENTS)
    assert reader.zrange(REGISTRY_LEASES, 0, -1)
    assert reader.get(POLICY_DOCUMENT)
    assert reader.hgetall(POLICY_ENFORCERS) == {}
    assert reader.smembers(BOB.senders) == {b"default/alice"}
    assert reader.xlen(BOB.inbox("default/alice")) == 1
    assert reader.xpending(BOB.inbox("default/alice"), "mas")["pending"] == 0
    assert reader.xrange(BOB.dlq)
    assert reader.xrevrange(BOB.audit, count=1)
    assert reader.xinfo_stream(BOB.audit)["length"] == 1
    assert reader.get(audit_checkpoint("default/bob")) == b"{}"


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(lambda c: c.xrange(BOB.inbox("default/alice")), id="read-a-message"),
        pytest.param(lambda c: c.xinfo_stream(BOB.inbox("default/alice")), id="first-entry"),
        pytest.param(lambda c: c.hgetall(BOB.state), id="read-state"),
        pytest.param(lambda c: c.get(BOB.metadata), id="read-metadata"),
        pytest.param(lambda c: c.hgetall(BOB.seen), id="read-replay-guard"),
        pytest.param(lambda c: c.xadd(BOB.inbox("default/mallory"), {"e": "x"}), id="send"),
        pytest.param(lambda c: c.xdel(BOB.dlq, "0-1"), id="delete-dead-letter"),
        pytest.param(lambda c: c.xadd(DASHBOARD_AUDIT, {"e": "x"}), id="write-own-trail"),
        pytest.param(lambda c: c.hset(REGISTRY_AGENTS, "default/x", "{}"), id="register"),
        pytest.param(lambda c: c.set(POLICY_DOCUMENT, "{}"), id="replace-policy"),
        pytest.param(lambda c: c.delete(BOB.audit), id="delete-trail"),
        pytest.param(lambda c: c.fcall("mas_version", 0), id="fcall"),
        pytest.param(lambda c: c.keys("*"), id="list-keys"),
        pytest.param(lambda c: c.acl_setuser("mallory", enabled=True), id="acl"),
        pytest.param(lambda c: c.config_get("*"), id="config"),
        pytest.param(lambda c: c.flushall(), id="flushall"),
    ],
)
def test_the_reader_is_refused_everything_else(reader: redis.Redis, attack: object) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        attack(reader)  # type: ignore[operator]


def test_the_writer_may_delete_a_dead_letter_and_append_to_its_own_trail(
    writer: redis.Redis,
) -> None:
    [(entry_id, _)] = writer.xrange(BOB.dlq)
    assert writer.xdel(BOB.dlq, entry_id) == 1
    assert writer.xadd(DASHBOARD_AUDIT, {"e": "x"})


@pytest.mark.parametrize(
    "attack",
    [
        pytest.param(lambda c: c.xrange(BOB.inbox("default/alice")), id="read-a-message"),
        pytest.param(lambda c: c.hset(BOB.state, "doc", "{}"), id="write-state"),
        pytest.param(lambda c: c.xadd(BOB.audit, {"e": "x"}), id="forge-audit-entry"),
        pytest.param(lambda c: c.xtrim(BOB.audit, maxlen=0), id="trim-trail"),
        pytest.param(lambda c: c.delete(BOB.inbox("default/alice")), id="drop-inbox"),
        pytest.param(lambda c: c.xdel(BOB.inbox("default/alice"), "0-1"), id="drop-message"),
        pytest.param(lambda c: c.xadd(BOB.dlq, {"e": "x"}), id="forge-dead-letter"),
        pytest.param(lambda c: c.hset(REGISTRY_AGENTS, "default/x", "{}"), id="register"),
        pytest.param(lambda c: c.set(POLICY_DOCUMENT, "{}"), id="replace-policy"),
        pytest.param(lambda c: c.delete(DASHBOARD_AUDIT), id="erase-own-trail"),
        pytest.param(lambda c: c.function_load("#!lua name=x\n", replace=True), id="load"),
        pytest.param(lambda c: c.acl_setuser("mallory", enabled=True), id="acl"),
    ],
)
def test_the_writer_is_refused_every_other_write(writer: redis.Redis, attack: object) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        attack(writer)  # type: ignore[operator]


def test_an_administrators_url_creates_the_dashboard_user_and_is_not_kept(
    redis_url: str, seeded: redis.Redis
) -> None:
    url, created = dashboard_url(redis_url, writes=False)

    assert created
    assert f"//{DASHBOARD_USER}:" in url
    client = redis.Redis.from_url(url)
    try:
        assert client.hgetall(REGISTRY_AGENTS)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.hgetall(BOB.state)
    finally:
        client.close()
    assert dashboard_url(url, writes=False) == (url, False)  # its own URL is used as it is


def test_setup_only_writes_the_dashboard_users_url_and_never_the_administrators(
    redis_url: str, seeded: redis.Redis, tmp_path: Path
) -> None:
    """As the chart's init container runs it: the password from a file, the URL without it."""
    parts = urlsplit(redis_url)
    assert parts.password, "the test server has an administrator password"
    password_file = tmp_path / "admin-password"
    password_file.write_text(parts.password)
    out = tmp_path / "dashboard-url"
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    env = {**os.environ, "MAS_REDIS_URL": bare, "MAS_REDIS_PASSWORD_FILE": str(password_file)}

    subprocess.run([*MAS, "dashboard", "--setup-only", str(out)], env=env, check=True)

    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    url = out.read_text()
    assert parts.password not in url
    assert urlsplit(url).username == DASHBOARD_USER
    client = redis.Redis.from_url(url)
    try:
        assert client.hgetall(REGISTRY_AGENTS)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(POLICY_DOCUMENT, "{}")
    finally:
        client.close()
