"""Least-privilege Redis ACL users: the rules themselves, what a sidecar's user can and cannot
do against a real server, and the whole message path run by sidecars under their own users."""

from __future__ import annotations

import asyncio
import fnmatch
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
from api import Api
from conftest import Sidecars
from hypothesis import given
from hypothesis import strategies as st
from policies import publish
from test_signing import SIGNED, Identities
from waiting import eventually

from mas_control.provision import apply_acl_user, delete_acl_user
from mas_core import functions
from mas_core.acl import (
    acl_username,
    agent_redis_url,
    generate_password,
    masked_url,
    sidecar_acl_rules,
)
from mas_core.audit import chain as audit
from mas_core.keys import (
    POLICY_CHANGES,
    POLICY_DOCUMENT,
    POLICY_ENFORCERS,
    POLICY_REVISION,
    REGISTRY_AGENTS,
    REGISTRY_LEASES,
    AgentKeys,
    audit_checkpoint,
    audit_keeper,
)
from mas_core.names import InvalidAgentIdError

ALICE = AgentKeys("default/alice")
BOB = AgentKeys("default/bob")
ANYONE = AgentKeys("*")
NoPermission = redis.exceptions.NoPermissionError
SHARED_READ = {REGISTRY_AGENTS, REGISTRY_LEASES, POLICY_DOCUMENT, POLICY_REVISION, POLICY_CHANGES}
SHARED_WRITE = {REGISTRY_LEASES, POLICY_ENFORCERS}
FORBIDDEN_COMMANDS = {
    "keys", "scan", "flushall", "flushdb", "config", "acl", "debug", "shutdown", "module",
    "monitor", "eval", "evalsha", "eval_ro", "evalsha_ro", "script", "script|load",
    "script|flush", "script|kill", "function", "function|load", "migrate", "restore",
    "save", "bgsave", "replicaof", "slaveof", "cluster", "client", "client|kill", "select",
    "swapdb", "rename", "move", "sort", "publish", "subscribe",
}  # fmt: skip


# -- the rules ------------------------------------------------------------------------------


def parsed_rules(agent_id: str) -> list[tuple[set[str], list[str]]]:
    """(commands, key patterns) of the root rules and of each selector."""
    rules = sidecar_acl_rules(agent_id)
    root = [rule for rule in rules if not rule.startswith("(")]
    selectors = [rule[1:-1].split() for rule in rules if rule.startswith("(")]
    return [
        (
            {token[1:] for token in tokens if token.startswith("+")},
            [token for token in tokens if "~" in token],
        )
        for tokens in [root, *selectors]
    ]


def test_rules_reset_first_and_grant_no_category_all_keys_or_admin_command() -> None:
    rules = sidecar_acl_rules("default/alice")
    tokens = [token for rule in rules for token in rule.strip("()").split()]

    assert rules[:2] == ["reset", "on"]
    assert not [t for t in tokens if "@" in t or t in {"allkeys", "allcommands", "nopass"}]
    assert not [t for t in tokens if t.startswith(("~*", "%R~*", "%W~*", "%RW~*", "&"))]
    assert not [t for t in tokens if t.startswith(">") or t.startswith("-")]
    granted = {token[1:] for token in tokens if token.startswith("+")}
    assert not granted & FORBIDDEN_COMMANDS
    assert "fcall" in granted


def test_full_access_is_limited_to_the_agents_own_prefix() -> None:
    for commands, patterns in parsed_rules("default/alice"):
        for pattern in patterns:
            mode, _, key = pattern.partition("~")
            if mode == "":  # read and write (a script's keys: its commands are checked apart)
                assert key.startswith(ALICE.prefix) or commands == {"fcall"}, pattern
            elif mode == "%R":
                own_stream, metadata = ANYONE.inbox(ALICE.agent_id), ANYONE.metadata
                assert key in SHARED_READ or key in {own_stream, metadata}, pattern
                assert key != own_stream or commands == {"xlen"}, "its stream: length only"
                assert key != metadata or commands == {"get"}, "metadata: read only"
            else:
                assert mode == "%W", pattern
                assert key in SHARED_WRITE or key.startswith("mas:{*}:"), pattern
    root_commands, root_patterns = parsed_rules("default/alice")[0]
    assert f"~{ALICE.prefix}*" in root_patterns
    assert not {"del", "xdel", "xtrim", "hdel", "pexpire", "expire"} & root_commands


def test_other_agents_keys_are_write_only_and_streams_carry_the_agents_own_id() -> None:
    for commands, patterns in parsed_rules("default/alice"):
        other = [p for p in patterns if "mas:{*}:" in p and not p.startswith("%R~")]
        if other and commands != {"fcall"}:  # a function's commands are checked one by one
            assert all(p.startswith("%W~") for p in other)
            assert commands <= {"xadd", "sadd"}
        for pattern in other:  # its own streams, or how a new sender makes itself known
            key = pattern.partition("~")[2]
            assert key.endswith(":default/alice") or key in {ANYONE.ring, ANYONE.senders}, key


@st.composite
def agent_ids(draw: st.DrawFn) -> str:
    """Agent ids made to collide: short labels of few letters, often prefixes of each other."""
    label = st.from_regex(r"\A[abi-n]([-abi-n]{0,3}[abin])?\Z")
    return f"{draw(label)}/{draw(label)}"


replicas = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,6}\Z")


def writable_by(agent_id: str, key: str) -> bool:
    """Whether a key pattern of ``agent_id``'s rules that reaches other agents' keys grants a
    write of ``key`` (Redis glob: ids hold no glob character, so ``*`` is the only one)."""
    return any(
        fnmatch.fnmatchcase(key, pattern.partition("~")[2])
        for _, patterns in parsed_rules(agent_id)
        for pattern in patterns
        if "mas:{*}:" in pattern and not pattern.startswith("%R~")
    )


@given(receiver=agent_ids(), sender=agent_ids(), other=agent_ids(), replica=replicas)
def test_no_agent_can_write_another_senders_streams_whatever_the_names(
    receiver: str, sender: str, other: str, replica: str
) -> None:
    keys = AgentKeys(receiver)
    assert writable_by(sender, keys.inbox(sender))
    assert writable_by(sender, keys.replies(replica, sender))
    if other != sender:
        assert not writable_by(sender, keys.inbox(other))
        assert not writable_by(sender, keys.replies(replica, other))
    shared = {keys.ring, keys.senders}
    for key in (
        keys.dlq, keys.state, keys.audit, keys.audit_heads, keys.seen, keys.seen_by_time,
        keys.metadata, keys.ratelimit("in"), keys.reply_bell(replica),
    ):  # fmt: skip
        assert key not in shared and not writable_by(sender, key), key


def test_user_names_are_stable_distinct_and_need_no_escaping_in_a_url() -> None:
    assert acl_username("default/alice") == "mas-agent.default.alice"
    assert acl_username("a-b/c") != acl_username("a/b-c")
    assert sidecar_acl_rules("default/alice") == sidecar_acl_rules("default/alice")
    with pytest.raises(InvalidAgentIdError):
        acl_username("alice")
    with pytest.raises(InvalidAgentIdError):
        sidecar_acl_rules("default/*")

    url = agent_redis_url("redis://127.0.0.1:6379/0", "default/alice", "p/w:@")
    assert url == "redis://mas-agent.default.alice:p%2Fw%3A%40@127.0.0.1:6379/0"
    replaced = agent_redis_url("redis://admin:secret@127.0.0.1:1/2", "default/bob", "x")
    assert replaced == "redis://mas-agent.default.bob:x@127.0.0.1:1/2"
    assert len(generate_password()) >= 43
    assert generate_password() != generate_password()


# -- one ACL user against a real server -----------------------------------------------------


class AclUsers:
    """Creates ACL users for agents and removes them again (users outlive FLUSHALL)."""

    def __init__(self, admin: redis.Redis, redis_url: str) -> None:
        self.admin = admin
        self.redis_url = redis_url
        self.created: list[str] = []
        self.clients: list[redis.Redis] = []

    def url(self, agent_id: str, password: str | None = None) -> str:
        """The Redis URL of a new (or reset) ACL user for ``agent_id``."""
        password = password or generate_password()
        apply_acl_user(self.admin, agent_id, password)
        self.created.append(agent_id)
        return agent_redis_url(self.redis_url, agent_id, password)

    def client(self, agent_id: str) -> redis.Redis:
        client = redis.Redis.from_url(self.url(agent_id))
        self.clients.append(client)
        return client

    def denials(self) -> list[dict[str, Any]]:
        """ACL LOG entries of agent users, except redis-py's optional ``CLIENT SETINFO``."""
        entries = [
            {
                k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                for k, v in entry.items()
            }
            for entry in self.admin.acl_log(100)
        ]
        return [
            entry
            for entry in entries
            if entry["username"].startswith("mas-agent.") and entry["object"] != "client|setinfo"
        ]

    def remove(self) -> None:
        for client in self.clients:
            client.close()
        for agent_id in set(self.created):
            delete_acl_user(self.admin, agent_id)


@pytest.fixture
def acl_users(redis_client: redis.Redis, redis_url: str) -> Iterator[AclUsers]:
    redis_client.execute_command("ACL", "LOG", "RESET")
    users = AclUsers(redis_client, redis_url)
    yield users
    users.remove()


def denied(call: Callable[[], object]) -> bool:
    with pytest.raises(NoPermission):
        call()
    return True


def test_an_agent_user_appends_to_its_own_stream_into_another_agent_and_reads_nothing(
    acl_users: AclUsers, redis_client: redis.Redis
) -> None:
    alice = acl_users.client("default/alice")
    acl_users.client("default/bob")
    mine, carols = BOB.inbox("default/alice"), BOB.inbox("default/carol")
    redis_client.xgroup_create(mine, "mas", id="0", mkstream=True)
    redis_client.xadd(carols, {"e": "carol's"})
    redis_client.xadd(BOB.replies("bob-0", "default/carol"), {"e": "carol's reply"})
    redis_client.hset(BOB.state, mapping={"doc": "{}", "rev": 1})

    entry = alice.xadd(mine, {"e": "hello"})
    assert alice.sadd(BOB.senders, "default/alice") == 1  # how bob finds her stream
    alice.xadd(BOB.ring, {"n": "1"})
    alice.xadd(BOB.replies("bob-0", "default/alice"), {"e": "a reply"})

    assert redis_client.xrange(mine)[0][0] == entry
    assert alice.xlen(mine) == 1  # the circuit breaker's backlog, not the contents
    assert denied(lambda: alice.xrange(mine))
    assert denied(lambda: alice.xrevrange(mine))
    assert denied(lambda: alice.xread({mine: "0-0"}))
    assert denied(lambda: alice.xreadgroup("mas", "thief", {mine: ">"}))
    assert denied(lambda: alice.xpending(mine, "mas"))
    assert denied(lambda: alice.xautoclaim(mine, "mas", "thief", 0))
    assert denied(lambda: alice.xdel(mine, entry))
    assert denied(lambda: alice.delete(mine))
    assert denied(lambda: alice.smembers(BOB.senders))
    assert denied(lambda: alice.srem(BOB.senders, "default/carol"))
    assert denied(lambda: alice.xrange(BOB.ring))
    # another sender's streams: nothing at all, trimming and expiring included
    for stream in (carols, BOB.replies("bob-0", "default/carol")):
        assert denied(lambda stream=stream: alice.xadd(stream, {"e": "x"}))
        assert denied(lambda stream=stream: alice.xadd(stream, {"e": "x"}, maxlen=0))
        assert denied(lambda stream=stream: alice.xtrim(stream, maxlen=0))
        assert denied(lambda stream=stream: alice.pexpire(stream, 1))
        assert denied(lambda stream=stream: alice.xlen(stream))
    assert denied(lambda: alice.pexpire(BOB.replies("bob-0", "default/alice"), 1))
    assert denied(lambda: alice.xadd(BOB.reply_bell("bob-0"), {"e": "x"}))
    assert denied(lambda: alice.xrange(BOB.dlq))
    assert denied(lambda: alice.get(BOB.state))
    assert denied(lambda: alice.hgetall(BOB.state))
    assert denied(lambda: alice.hget(BOB.state, "doc"))
    assert denied(lambda: alice.hset(BOB.state, "doc", "{}"))
    assert denied(lambda: alice.xadd(BOB.audit, {"e": "forged"}))
    assert denied(lambda: alice.hset(BOB.audit_heads, "r", "1:x"))
    assert redis_client.xlen(mine) == 1
    assert redis_client.xlen(carols) == 1


@pytest.mark.parametrize(
    ("sender", "other"),
    [("a/b", "xa/b"), ("xa/b", "a/b"), ("a/b", "a/bx"), ("a/b", "a/b-c"), ("a-b/c", "a/b-c"),
     ("in/in", "in/in-in"), ("b/in", "in/b")],
)  # fmt: skip
def test_names_that_end_alike_grant_no_write_into_each_others_streams(
    acl_users: AclUsers, sender: str, other: str
) -> None:
    client = acl_users.client(sender)
    for receiver in {AgentKeys("in/in"), AgentKeys("c/in"), AgentKeys(other)} - {AgentKeys(sender)}:
        client.xadd(receiver.inbox(sender), {"e": "mine"})
        assert denied(lambda r=receiver: client.xadd(r.inbox(other), {"e": "x"}))
        assert denied(lambda r=receiver: client.xadd(r.replies("in", other), {"e": "x"}))
        assert denied(lambda r=receiver: client.xlen(r.inbox(other)))


def test_an_agent_user_cannot_write_the_policy_or_trust_keys_nor_administer(
    acl_users: AclUsers, redis_client: redis.Redis
) -> None:
    alice = acl_users.client("default/alice")
    revision = redis_client.get(POLICY_REVISION)

    assert alice.get(POLICY_REVISION) == revision
    assert denied(lambda: alice.set(POLICY_DOCUMENT, "{}"))
    assert denied(lambda: alice.set(POLICY_REVISION, "forged"))
    assert denied(lambda: alice.delete(POLICY_DOCUMENT))
    assert denied(lambda: alice.hgetall(POLICY_ENFORCERS))
    for key in ("mas:{trust}:anchors", "mas:{trust}:anchor", "mas:{identity}:anchors"):
        assert denied(partial(alice.set, key, "attacker-key"))
        assert denied(partial(alice.hset, key, "anchor", "x"))
    assert denied(lambda: alice.delete(REGISTRY_AGENTS))
    assert denied(lambda: alice.hdel(REGISTRY_AGENTS, "default/bob"))
    assert denied(lambda: alice.zrem(REGISTRY_LEASES, "default/bob"))
    assert denied(lambda: alice.keys("*"))
    assert denied(lambda: alice.scan(0))
    assert denied(alice.flushall)
    assert denied(alice.flushdb)
    assert denied(lambda: alice.config_get("*"))
    assert denied(lambda: alice.execute_command("ACL", "LIST"))
    assert denied(lambda: alice.execute_command("ACL", "SETUSER", "mine", "on", "+@all", "~*"))
    assert denied(lambda: alice.eval("return 1", 0))
    assert denied(alice.script_flush)
    assert denied(lambda: alice.publish("anything", "x"))
    assert redis_client.get(POLICY_REVISION) == revision
    assert {"flushall", "eval", POLICY_DOCUMENT} <= {d["object"] for d in acl_users.denials()}


def test_an_agent_user_reads_the_policy_notices_and_cannot_announce_or_trim_them(
    acl_users: AclUsers, redis_client: redis.Redis
) -> None:
    alice = acl_users.client("default/alice")
    notices = redis_client.xrange(POLICY_CHANGES)
    assert notices, "publishing a policy appends a notice"

    assert alice.xread({POLICY_CHANGES: "0-0"})[0][1] == notices
    assert alice.get(POLICY_REVISION) == notices[-1][1][b"revision"]
    assert denied(lambda: alice.xadd(POLICY_CHANGES, {"revision": "forged"}))
    assert denied(lambda: alice.xtrim(POLICY_CHANGES, maxlen=0))
    assert denied(lambda: alice.xdel(POLICY_CHANGES, notices[-1][0]))
    assert denied(lambda: alice.delete(POLICY_CHANGES))
    assert denied(lambda: alice.xgroup_create(POLICY_CHANGES, "mine", id="0"))
    assert denied(lambda: alice.publish(POLICY_CHANGES, "x"))
    assert redis_client.xrange(POLICY_CHANGES) == notices


def test_no_agent_user_reaches_the_checkpoints_of_audit_trails(
    acl_users: AclUsers, redis_client: redis.Redis
) -> None:
    alice = acl_users.client("default/alice")
    own, other = audit_checkpoint("default/alice"), audit_checkpoint("default/bob")
    redis_client.set(own, b"the control plane's")

    for key in (own, other, audit_keeper("default/alice")):
        assert denied(partial(alice.get, key))
        assert denied(partial(alice.set, key, "forged"))
        assert denied(partial(alice.delete, key))
        # nor through the functions it may call: they lend it no right
        append = ("FCALL", "mas_append", 1, key, "0", 1, 0, "x", "y")
        assert denied(partial(alice.execute_command, *append))
    assert redis_client.get(own) == b"the control plane's"
    assert denied(lambda: alice.xtrim(ALICE.audit, maxlen=0))  # only XADD's MAXLEN trims it


HOSTILE_LIBRARY = f"""#!lua name=hostile
redis.register_function('own', function(keys, args)
  return redis.call('HSET', keys[1], 'doc', args[1]) end)
redis.register_function('steal', function(keys) return redis.call('XRANGE', keys[1], '-', '+')
  end)
redis.register_function('sneak', function() return redis.call('XRANGE', '{BOB.inbox("x/y")}', '-',
  '+') end)
redis.register_function('trim', function(keys) return redis.call('XTRIM', keys[1], 'MAXLEN', 0)
  end)
redis.register_function('wipe', function(keys) return redis.call('DEL', keys[1]) end)
redis.register_function('spin', function() while true do end end)
"""


def test_an_agent_user_can_neither_load_nor_run_code_of_its_own(acl_users: AclUsers) -> None:
    alice = acl_users.client("default/alice")
    endless = "while true do end"

    assert denied(lambda: alice.script_load(endless))
    assert denied(lambda: alice.eval(endless, 0))
    assert denied(lambda: alice.evalsha("0" * 40, 0))
    assert denied(lambda: alice.execute_command("EVAL_RO", endless, 0))
    assert denied(lambda: alice.function_load(f"#!lua name=spin\n{endless}"))
    assert denied(lambda: alice.execute_command("FUNCTION", "DELETE", "mas"))
    assert denied(alice.function_flush)
    assert alice.fcall("mas_version", 0).decode() == functions.VERSION


def test_functions_run_with_the_callers_rights_only(
    acl_users: AclUsers, redis_client: redis.Redis
) -> None:
    alice = acl_users.client("default/alice")
    mine = BOB.inbox("default/alice")
    redis_client.xadd(mine, {"e": "secret"})
    redis_client.function_load(HOSTILE_LIBRARY, replace=True)  # what the admin might load
    refused = re.compile("perm|can't access|can't run", re.I)
    try:
        assert alice.fcall("own", 1, ALICE.state, "{}") == 1
        # Its stream into another agent may be a function's key (the writer appends that way),
        # but every command it runs there is checked: appending and reading the length pass,
        # nothing else does.
        for name in ("steal", "trim", "wipe"):
            with pytest.raises(redis.exceptions.ResponseError, match=refused):
                alice.fcall(name, 1, mine)
        with pytest.raises(redis.exceptions.ResponseError, match=refused):
            alice.fcall("sneak", 0)  # undeclared keys are checked too
        assert denied(lambda: alice.fcall("steal", 1, BOB.state))  # nor may it name other keys
        assert denied(lambda: alice.fcall("steal", 1, BOB.inbox("default/carol")))
        assert redis_client.xlen(mine) == 1
    finally:
        redis_client.function_delete("hostile")


def test_own_keys_are_readable_and_reapplying_resets_the_password(
    acl_users: AclUsers, redis_client: redis.Redis
) -> None:
    first = redis.Redis.from_url(acl_users.url("default/alice", "first-password"))
    redis_client.xadd(ALICE.inbox("default/bob"), {"e": "for alice"})

    assert [f for _, f in first.xrange(ALICE.inbox("default/bob"))] == [{b"e": b"for alice"}]
    assert first.xlen(ALICE.inbox("default/bob")) == 1
    assert first.hget(REGISTRY_AGENTS, "default/bob") is None
    first.close()

    second = acl_users.url("default/alice", "second-password")
    stale = agent_redis_url(acl_users.redis_url, "default/alice", "first-password")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(stale).ping()
    client = redis.Redis.from_url(second)
    assert client.ping()
    client.close()
    delete_acl_user(redis_client, "default/alice")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(second).ping()


# -- real sidecars under their own users ----------------------------------------------------


@pytest.fixture
def start(sidecars: Sidecars, acl_users: AclUsers) -> Callable[..., Api]:
    """``start(http, agent_id, **settings)``: a sidecar connected as the agent's own ACL user."""

    def starter(http: aiohttp.ClientSession, agent_id: str, **settings: Any) -> Api:
        sidecar = sidecars.start(agent_id, redis_url=acl_users.url(agent_id), **settings)
        return Api(http, sidecar)

    return starter


def audit_trail_ok(client: redis.Redis, keys: AgentKeys) -> audit.Report:
    report = audit.verify(client.xrange(keys.audit), client.hgetall(keys.audit_heads))
    assert report.ok, report.problems
    return report


async def test_the_whole_message_path_works_under_least_privilege(
    start: Callable[..., Api],
    sidecars: Sidecars,
    acl_users: AclUsers,
    http: aiohttp.ClientSession,
    redis_client: redis.Redis,
) -> None:
    alice = start(http, "default/alice", capabilities=["chat"])
    bob = start(http, "default/bob", capabilities=["chat", "math"], MAS_LEASE_MS="2000")

    # send, deliver, nack -> redeliver, ack
    first = await alice.send("bob", "flaky", {"n": 1})
    events = bob.deliveries()
    delivery = await anext(events)
    assert await bob.answer(delivery["id"], "nack", {"delay_ms": 100}) == 204
    again = await anext(events)
    assert (again["id"], again["attempt"]) == (first, 2)
    assert await bob.answer(again["id"], "extend") == 204
    assert await bob.answer(again["id"], "ack") == 204

    # reject -> dead letter -> replay -> delivered -> ack; delete a dead letter
    rejected = await alice.send("bob", "typed", {"age": "x"})
    delivery = await anext(events)
    assert await bob.answer(delivery["id"], "reject", {"reason": "age"}) == 204
    _, listing = await bob.call("GET", "/v1/dead-letters")
    [dead] = listing["dead_letters"]
    assert (dead["reason"], dead["message"]["id"]) == ("rejected: age", rejected)
    status, replayed = await bob.call("POST", f"/v1/dead-letters/{dead['id']}/replay")
    assert (status, replayed["id"]) == (202, rejected)
    delivery = await anext(events)
    assert (delivery["id"], delivery["attempt"]) == (rejected, 1)
    assert await bob.answer(delivery["id"], "reject", {"reason": "still"}) == 204
    _, listing = await bob.call("GET", "/v1/dead-letters")
    assert await bob.call("DELETE", f"/v1/dead-letters/{listing['dead_letters'][0]['id']}") == (
        204,
        None,
    )

    # a reply to a plain message lands in the sender's inbox
    question = await alice.send("bob", "question")
    delivery = await anext(events)
    assert (await bob.call("POST", f"/v1/deliveries/{delivery['id']}/reply", {"type": "a"}))[
        0
    ] == 202
    assert await bob.answer(delivery["id"], "ack") == 204
    [answer] = await alice.collect(1)
    assert answer["correlation_id"] == question

    # request/reply: bob writes to alice's reply stream
    async def answer_one() -> None:
        delivery = await anext(events)
        await bob.answer(
            delivery["id"], "reply", {"type": "sum", "payload": sum(delivery["payload"])}
        )
        await bob.answer(delivery["id"], "ack")

    responder = asyncio.create_task(answer_one())
    status, reply = await alice.call(
        "POST", "/v1/requests", {"to": "bob", "type": "add", "payload": [1, 2, 3]}
    )
    await responder
    assert (status, reply["payload"], reply["from"]) == (200, 6, "default/bob")
    await events.aclose()

    # state, discovery, metadata
    assert (await alice.call("PUT", "/v1/state", {"state": {"a": 1}}))[0] == 200
    status, patched = await alice.call("PATCH", "/v1/state", {"state": {"b": 2}})
    assert (status, patched) == (200, {"state": {"a": 1, "b": 2}, "revision": 2})
    _, found = await alice.call("GET", "/v1/agents?capability=math")
    assert [agent["id"] for agent in found["agents"]] == ["default/bob"]
    assert (await bob.call("PUT", "/v1/self", {"metadata": {"v": 2}}))[0] == 200
    assert (await alice.call("GET", "/healthz"))[0] == 200
    assert (await alice.call("GET", "/readyz"))[0] == 200

    users = {client["user"] for client in redis_client.client_list()}
    assert {"mas-agent.default.alice", "mas-agent.default.bob"} <= users
    sidecars.stop_all()  # clean shutdown releases leases as the agent's user too
    assert audit_trail_ok(redis_client, ALICE).entries >= 4
    assert audit_trail_ok(redis_client, BOB).entries >= 2  # its two replies
    assert acl_users.denials() == []


async def test_agent_scoped_rate_limits_and_policy_hot_reload_work_under_least_privilege(
    start: Callable[..., Api],
    acl_users: AclUsers,
    http: aiohttp.ClientSession,
    redis_client: redis.Redis,
) -> None:
    document = publish(
        redis_client,
        rules=[{"name": "all", "action": "allow"}],
        rateLimits=[{"name": "shared", "rate": 0.1, "burst": 2, "scope": "agent"}],
    )
    alice = start(http, "default/alice")
    start(http, "default/bob")

    await alice.wait_for_revision(document.revision)
    statuses = [
        (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] for _ in range(3)
    ]
    assert statuses == [202, 202, 429]
    assert redis_client.exists(f"{ALICE.prefix}ratelimit:shared")

    relaxed = publish(redis_client, rules=[{"name": "all", "action": "allow"}])
    await alice.wait_for_revision(relaxed.revision)
    assert (await alice.call("POST", "/v1/messages", {"to": "bob", "type": "x"}))[0] == 202
    enforcers = {k.decode(): v.decode() for k, v in redis_client.hgetall(POLICY_ENFORCERS).items()}
    assert relaxed.revision in enforcers.values()
    assert acl_users.denials() == []


async def test_signed_messages_and_the_replay_guard_work_under_least_privilege(
    start: Callable[..., Api],
    acl_users: AclUsers,
    http: aiohttp.ClientSession,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    publish(redis_client, **SIGNED)
    identities = Identities(tmp_path / "identity")
    alice = start(http, "default/alice", MAS_CREDENTIALS_DIR=str(identities.issue("default/alice")))
    bob = start(http, "default/bob", MAS_CREDENTIALS_DIR=str(identities.issue("default/bob")))

    message_id = await alice.send("bob", "hello", {"n": 1})
    [(_, fields)] = redis_client.xrange(BOB.inbox("default/alice"))
    events = bob.deliveries()
    delivery = await anext(events)
    assert await bob.answer(delivery["id"], "ack") == 204
    redis_client.xadd(BOB.inbox("default/alice"), fields)  # a captured copy, re-injected
    [dead] = await eventually(bob.dead_letters, "the replayed copy dead-lettered")
    await events.aclose()

    assert delivery["id"] == message_id and orjson.loads(fields[b"e"])["signature"]
    assert dead["reason"].startswith("replay: duplicate")
    assert redis_client.hget(f"{BOB.prefix}seen", message_id) is not None
    assert acl_users.denials() == []


def test_a_printed_redis_url_never_shows_its_password() -> None:
    url = agent_redis_url("redis://127.0.0.1:6379/0", "default/alice", "s3cret/pw")

    assert "s3cret" not in masked_url(url)
    assert masked_url(url) == "redis://mas-agent.default.alice:***@127.0.0.1:6379/0"
    assert masked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
