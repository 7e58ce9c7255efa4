"""An agent's inbox backlog as the operator measures it (:mod:`mas_control.backlog`), on a real
server: what it counts, and what one round costs in Redis commands (counted by the server itself,
``INFO commandstats``)."""

from __future__ import annotations

import contextlib
from collections import Counter

import redis

from mas_control.backlog import InboxBacklog, InboxMeter
from mas_core.keys import CONSUMER_GROUP, AgentKeys

AGENT = "team/worker"
KEYS = AgentKeys(AGENT)


def send(client: redis.Redis, sender: str, count: int, *, adopted: bool = True) -> list[bytes]:
    """``count`` messages from ``sender`` to the agent, its stream adopted by the inbox's group
    (as a replica does) unless not ``adopted``."""
    stream = KEYS.inbox(sender)
    client.sadd(KEYS.senders, sender)
    ids = [client.xadd(stream, {"n": str(n)}) for n in range(count)]
    if adopted:
        with contextlib.suppress(redis.ResponseError):  # made already
            client.xgroup_create(stream, CONSUMER_GROUP, id="0")
    return ids


def deliver(client: redis.Redis, sender: str, count: int) -> list[bytes]:
    """A replica leases ``count`` messages of ``sender``'s stream."""
    read = client.xreadgroup(CONSUMER_GROUP, "replica-0", {KEYS.inbox(sender): ">"}, count=count)
    return [entry_id for entry_id, _ in read[0][1]] if read else []


def ack(client: redis.Redis, sender: str, ids: list[bytes]) -> None:
    """The replica acks: XACK + XDEL, as the sidecar does."""
    stream = KEYS.inbox(sender)
    client.xack(stream, CONSUMER_GROUP, *ids)
    client.xdel(stream, *ids)


def id_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


def commands_of(client: redis.Redis, work: InboxMeter) -> tuple[InboxBacklog, Counter[str]]:
    """``work.measure(client)`` and the commands the server counted for it."""
    client.config_resetstat()
    backlog = work.measure(client)
    stats = client.info("commandstats")
    counted: Counter[str] = Counter()
    for name, values in stats.items():
        command = name.removeprefix("cmdstat_")
        if command not in ("info", "config|resetstat", "config"):
            counted[command] = values["calls"]
    return backlog, counted


def test_an_agent_nobody_wrote_to_has_no_backlog(redis_client: redis.Redis) -> None:
    backlog = InboxMeter(AGENT).measure(redis_client)
    assert backlog == InboxBacklog(messages=0, pending=0, oldest_ms=None, streams=0)
    assert backlog.oldest_age_seconds(now_ms=10**13) == 0


def test_waiting_and_leased_messages_count_until_acked(redis_client: redis.Redis) -> None:
    first = send(redis_client, "team/a", 5)
    send(redis_client, "team/b", 3)
    meter = InboxMeter(AGENT)
    waiting = meter.measure(redis_client)
    assert (waiting.messages, waiting.pending, waiting.streams) == (8, 0, 2)
    assert waiting.oldest_ms == id_ms(first[0])

    leased = deliver(redis_client, "team/a", 2)
    assert (meter.measure(redis_client).messages, meter.measure(redis_client).pending) == (8, 2)
    ack(redis_client, "team/a", leased[:1])
    after = meter.measure(redis_client)
    assert (after.messages, after.pending) == (7, 1)
    assert after.oldest_ms == id_ms(leased[1])  # the oldest not acked

    ack(redis_client, "team/a", leased[1:] + deliver(redis_client, "team/a", 10))
    ack(redis_client, "team/b", deliver(redis_client, "team/b", 10))
    assert meter.measure(redis_client) == InboxBacklog(0, 0, None, 2)


def test_a_stream_not_adopted_yet_counts_whole(redis_client: redis.Redis) -> None:
    ids = send(redis_client, "team/new", 4, adopted=False)
    backlog = InboxMeter(AGENT).measure(redis_client)
    assert (backlog.messages, backlog.pending, backlog.oldest_ms) == (4, 0, id_ms(ids[0]))


def test_the_age_is_never_negative() -> None:
    future = InboxBacklog(messages=1, pending=0, oldest_ms=2_000_000, streams=1)
    assert future.oldest_age_seconds(now_ms=1_000_000) == 0
    assert future.oldest_age_seconds(now_ms=2_061_000) == 61


def test_a_round_costs_one_command_per_idle_stream_and_three_at_most_per_busy_one(
    redis_client: redis.Redis,
) -> None:
    for n in range(10):
        send(redis_client, f"team/s{n}", 1)
        ack(redis_client, f"team/s{n}", deliver(redis_client, f"team/s{n}", 1))
    meter = InboxMeter(AGENT)
    idle, counted = commands_of(redis_client, meter)
    assert idle.messages == 0 and idle.streams == 10
    assert counted == Counter({"sscan": 1, "xinfo|groups": 10})

    for n in range(4):  # two with leased messages, two with waiting ones only
        send(redis_client, f"team/s{n}", 3)
        if n < 2:
            deliver(redis_client, f"team/s{n}", 1)
    busy, counted = commands_of(redis_client, meter)
    assert (busy.messages, busy.pending) == (12, 2)
    assert counted == Counter({"sscan": 1, "xinfo|groups": 10, "xpending": 2, "xrange": 2})


def test_many_senders_are_covered_over_rounds_of_bounded_work(redis_client: redis.Redis) -> None:
    senders = [f"team/s{n:03}" for n in range(300)]
    # More members than a compactly encoded set holds, so SSCAN pages through it.
    for sender in senders:
        send(redis_client, sender, 1)
    meter = InboxMeter(AGENT, max_streams=100)
    rounds = []
    for _ in range(8):
        backlog, counted = commands_of(redis_client, meter)
        rounds.append(backlog)
        assert counted["xinfo|groups"] <= 100 + 20  # a SSCAN page may run a little over
    assert rounds[-1].messages == 300 and rounds[-1].streams == 300
    assert rounds[0].streams < 300  # the first round did not visit them all

    # Senders that left the set are forgotten after a full pass.
    redis_client.srem(KEYS.senders, *senders[:200])
    for _ in range(4):
        last = meter.measure(redis_client)
    assert last.messages == 100 and last.streams == 100
