"""``python -m bench.audit_memory``: Redis memory per acked message, audit retention off and on.

Both settings run in one process, one after the other, each on an emptied database of the same
server: one sender and one sink sidecar with every gateway check on (:func:`bench.deploy.
start_mode`, mode ``on``: signed, DLP, audit), ``--messages`` one-way messages sent in batches,
every one acked by the sink. With retention on, this process plays the control plane: every
``--every`` seconds a round of the audit keeper (:func:`mas_control.audit_keeper.keep_trail`) for
both agents, keeping ``--keep`` entries in Redis and archiving the rest to a directory of the run.
The messages go in two halves; after each (and, with retention, a last round) it reads the
server's ``used_memory`` and the ``MEMORY USAGE`` of the two audit streams. The difference from
before the first message, divided by the messages, is the figure; the second half alone shows
what each further message costs once the retention is reached (a receiver's entry records a
whole read batch, so its trail reaches a retention counted in entries later than its
sender's). Memory the server keeps per message either way (the replay guard's record of each
message id, for its window) is in both figures; the audit streams' share is reported apart.
The ratio compares the two settings of the same run.

Prints a Markdown table for docs/benchmarks.md and, with ``--json``, writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import redis

from bench import deploy, load
from mas_cli.local.redis_server import RedisServer
from mas_control.audit_keeper import keep_trail
from mas_core.identity.credentials import load_anchor
from mas_core.keys import AgentKeys
from mas_core.policy.document import AuditRetention

BATCH, WINDOW = 100, 4  # messages per batch send, batch sends in flight (as python -m bench)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_memory", description=__doc__)
    for flag, kind, default, what in (
        ("--messages", int, 100_000, "one-way messages, sent in two halves"),
        ("--keep", int, 1_000, "audit entries each trail keeps in Redis with retention on"),
        ("--every", float, 1.0, "seconds between rounds of the audit keeper"),
    ):
        parser.add_argument(flag, type=kind, default=default, help=f"{what} ({default:,})")
    parser.add_argument("--redis-server", help="server binary (default: the embedded Valkey)")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def _progress(text: str) -> None:
    print(f"[bench.audit_memory] {text}", flush=True)


async def _keeper(
    url: str,
    workdir: Path,
    agents: list[str],
    retention: AuditRetention,
    *,
    every: float,
    stop: asyncio.Event,
) -> int:
    """Rounds of the audit keeper until ``stop``, then a last one; entries archived."""
    anchor = load_anchor(workdir / "anchor")
    client = redis.Redis.from_url(url)

    def round_() -> int:
        done = 0
        for agent_id in agents:
            kept = keep_trail(
                client, agent_id, anchor, retention=retention, archive=workdir / "archive"
            )
            if kept.problem is not None:
                raise RuntimeError(f"{agent_id}: {kept.problem}")
            done += kept.archived
        return done

    archived = 0
    try:
        while not stop.is_set():
            archived += await asyncio.to_thread(round_)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
        return archived + await asyncio.to_thread(round_)
    finally:
        client.close()


def _memory(client: redis.Redis, agents: list[str]) -> tuple[int, int]:
    """The server's ``used_memory`` and the audit streams' ``MEMORY USAGE``, in bytes."""
    streams = sum(
        int(client.memory_usage(AgentKeys(agent).audit, samples=0) or 0) for agent in agents
    )
    return int(client.info("memory")["used_memory"]), streams


async def _setting(
    url: str, workdir: Path, args: argparse.Namespace, retention: AuditRetention | None
) -> dict[str, Any]:
    """One setting: the messages in two halves, memory measured before, between and after
    (each time after a last round of the keeper, when there is one)."""
    client = redis.Redis.from_url(url)
    fleet = deploy.Fleet(url, workdir)
    halves = [args.messages // 2, args.messages - args.messages // 2]
    memory, rates, archived = [], [], 0
    try:
        deploy.publish(url, cluster=False)
        senders, sink = deploy.start_mode(fleet, "on", 1)
        agents = [senders[0].agent_id, sink.agent_id]
        memory.append(_memory(client, agents))
        started = time.perf_counter()
        for half in halves:
            stop = asyncio.Event()
            keeper = None
            if retention is not None:
                keeper = asyncio.create_task(
                    _keeper(url, workdir, agents, retention, every=args.every, stop=stop)
                )
            rates.append(await load.one_way(senders, sink, half, WINDOW, batch=BATCH))
            stop.set()
            archived += await keeper if keeper is not None else 0
            memory.append(_memory(client, agents))
        elapsed = time.perf_counter() - started
        lengths = [int(client.xlen(AgentKeys(agent).audit)) for agent in agents]
    finally:
        fleet.stop()
        client.close()
    archive_bytes = sum(p.stat().st_size for p in (workdir / "archive").rglob("*") if p.is_file())
    (before, _), (middle, middle_streams), (after, streams) = memory
    return {
        "retention": retention.entries if retention is not None else None,
        "messages": args.messages,
        "msgs_per_s": sum(halves) / sum(n / rate for n, rate in zip(halves, rates, strict=True)),
        "seconds": elapsed,
        "bytes_per_message": (after - before) / args.messages,
        "audit_bytes_per_message": streams / args.messages,
        "second_half_bytes_per_message": (after - middle) / halves[1],
        "second_half_audit_bytes_per_message": (streams - middle_streams) / halves[1],
        "audit_entries_in_redis": lengths,
        "archived_entries": archived,
        "archive_bytes": archive_bytes,
    }


def table(off: dict[str, Any], on: dict[str, Any]) -> str:
    rows = [
        "| audit retention | Redis bytes per acked message | of which audit streams "
        "| the second half alone | of which audit streams "
        "| audit entries left in Redis (sender, sink) | archived | archive on disk |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in (off, on):
        keep = result["retention"]
        rows.append(
            f"| {'off' if keep is None else f'{keep:,} entries'} "
            f"| {result['bytes_per_message']:,.0f} | {result['audit_bytes_per_message']:,.0f} "
            f"| {result['second_half_bytes_per_message']:,.0f} "
            f"| {result['second_half_audit_bytes_per_message']:,.0f} "
            f"| {', '.join(f'{n:,}' for n in result['audit_entries_in_redis'])} "
            f"| {result['archived_entries']:,} | {result['archive_bytes'] / 1e6:,.1f} MB |"
        )
    ratio = on["bytes_per_message"] / off["bytes_per_message"]
    audit_ratio = on["audit_bytes_per_message"] / off["audit_bytes_per_message"]
    rows.append("")
    rows.append(
        f"Retention on / off, same run: {ratio:.2f} times the Redis memory per acked message, "
        f"{audit_ratio:.3f} times the audit streams' memory."
    )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="mas-bench-audit-") as tmp,
        RedisServer(args.redis_server) as server,
    ):
        for name, retention in (("off", None), ("on", AuditRetention(entries=args.keep))):
            _progress(f"retention {name}: {args.messages:,} messages")
            workdir = Path(tmp) / name
            workdir.mkdir()
            results[name] = asyncio.run(_setting(server.url, workdir, args, retention))
            _progress(f"retention {name}: {results[name]['bytes_per_message']:,.0f} B/message")
    print(table(results["off"], results["on"]))
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
