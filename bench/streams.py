"""``python -m bench.streams``: what one stream per sender costs a receiver, on a real server.

With many senders, a receiver reads one stream per sender (:mod:`mas_sidecar.streams.inbox`). This
measures, for ``--senders`` streams (default 1,000) into one receiver against one stream:

* the server's time per ``XREADGROUP`` poll over all of them (the receiver's read when nothing or
  one message waits), over a window of 100 of them (its read in turn when there are more
  streams than room) and over one, from ``INFO commandstats``, and the client's round trip;
* the server's time per reclaim tick (a pipeline of up to 128 ``XAUTOCLAIM``, one per stream);
* the memory of an empty stream with its consumer group (what an acked sender's stream keeps),
  and of a ``senders`` set member, and what each replica adds to each stream it reads (a
  consumer of its group);
* the server's time per send (one ``mas_append`` call: ``SADD``, ``XADD``, ``XLEN``), and
  without the ``SADD`` (what a send cost before senders had streams of their own).

Everything runs on a server of its own on 127.0.0.1 (the embedded Valkey, or
``--redis-server``). Used by hand; docs/benchmarks.md reports a run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from mas_cli.local.redis_server import RedisServer
from mas_control.provision import ensure_functions
from mas_core.keys import CONSUMER_GROUP, AgentKeys
from mas_sidecar.streams.inbox import RECLAIM_STREAMS

RECEIVER = AgentKeys("bench/receiver")
CALLS = 300


def _server_usec(client: redis.Redis, command: str, run: Callable[[], object]) -> float:
    """Microseconds of server time per ``command`` while ``run`` runs (``CONFIG RESETSTAT``)."""
    client.config_resetstat()
    run()
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return float(stats.get("usec_per_call", 0.0))


def _round_trip_usec(run: Callable[[], object]) -> float:
    """Median microseconds of ``CALLS`` runs of ``run``, as the client sees them."""
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def _senders(count: int) -> list[str]:
    return [f"bench/sender-{n}" for n in range(count)]


def _prepare(client: redis.Redis, senders: Sequence[str]) -> None:
    """Empty sender streams with their group, as after every message was acked."""
    for start in range(0, len(senders), 200):
        with client.pipeline(transaction=False) as pipe:
            for sender in senders[start : start + 200]:
                stream = RECEIVER.inbox(sender)
                pipe.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
                pipe.sadd(RECEIVER.senders, sender)
            pipe.execute()


def _poll(client: redis.Redis, streams: Sequence[str]) -> Callable[[], object]:
    keys = {RECEIVER.ring: ">", **dict.fromkeys(streams, ">")}
    return lambda: client.xreadgroup(CONSUMER_GROUP, "r-0", keys, count=1)


def _reclaim(client: redis.Redis, streams: Sequence[str]) -> Callable[[], object]:
    def tick() -> None:
        with client.pipeline(transaction=False) as pipe:
            for stream in streams[:RECLAIM_STREAMS]:
                pipe.xautoclaim(stream, CONSUMER_GROUP, "r-0", min_idle_time=30_000, count=1)
            pipe.execute()

    return tick


def measure(url: str, count: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.flushall()
    ensure_functions(client)
    client.xgroup_create(RECEIVER.ring, CONSUMER_GROUP, id="0", mkstream=True)
    senders = _senders(count)
    before = int(client.info("memory")["used_memory"])
    _prepare(client, senders)
    after = int(client.info("memory")["used_memory"])
    streams = [RECEIVER.inbox(sender) for sender in senders]
    results: dict[str, Any] = {
        "senders": count,
        "bytes_per_sender": (after - before) / count,
        "memory_usage_of_one_stream": client.memory_usage(streams[0]),
    }
    _poll(client, streams)()  # a replica reads every stream once: it is a consumer of each
    results["bytes_per_consumer_and_stream"] = (
        int(client.info("memory")["used_memory"]) - after
    ) / count
    window = streams[:100]  # a read in turn with room for 100 leases (MAS_MAX_INFLIGHT)
    for label, chosen in (("one", streams[:1]), ("window", window), ("all", streams)):
        poll = _poll(client, chosen)
        results[f"poll_{label}_server_usec"] = _server_usec(client, "xreadgroup", poll)
        results[f"poll_{label}_round_trip_usec"] = _round_trip_usec(poll)

    def waiting() -> object:  # one message waits in the last stream: read, ack, delete
        entry = client.xadd(streams[-1], {"e": "x"})
        answer = _poll(client, streams)()
        client.xack(streams[-1], CONSUMER_GROUP, entry)
        client.xdel(streams[-1], entry)
        return answer

    results["poll_all_one_waiting_server_usec"] = _server_usec(client, "xreadgroup", waiting)
    tick = _reclaim(client, streams)
    results["reclaim_tick_streams"] = min(count, RECLAIM_STREAMS)
    results["reclaim_tick_server_usec"] = (
        _server_usec(client, "xautoclaim", tick) * results["reclaim_tick_streams"]
    )
    results["reclaim_tick_round_trip_usec"] = _round_trip_usec(tick)
    keys = (streams[0], RECEIVER.senders, RECEIVER.ring)
    send = ("mas_append", len(keys), *keys, "l", senders[0], 1, 0, "e", "x" * 200)
    results["send_server_usec"] = _server_usec(
        client, "fcall", lambda: [client.fcall(*send) for _ in range(CALLS)]
    )
    bare = ("mas_append", 1, streams[1], "l", 1, 0, "e", "x" * 200)  # no SADD: a reply's form
    results["send_without_discovery_server_usec"] = _server_usec(
        client, "fcall", lambda: [client.fcall(*bare) for _ in range(CALLS)]
    )
    client.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streams", description=__doc__)
    parser.add_argument("--senders", type=int, default=1000, help="sender streams")
    parser.add_argument("--redis-server", help="server binary (default: the embedded Valkey)")
    args = parser.parse_args(argv)
    with RedisServer(args.redis_server) as server:
        for key, value in measure(server.url, args.senders).items():
            print(f"{key:36} {value:,.1f}" if isinstance(value, float) else f"{key:36} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
