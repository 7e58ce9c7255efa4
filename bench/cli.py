"""``python -m bench``: start Redis, sidecars and agents, measure in one run, print a table.

Sections, in order: the raw redis-py baseline; the natural path (two SDK agents under ``mas up``,
sequential ``await send`` and ``await request``, every check on, with a stage breakdown from the
sidecars' ``/metrics``; :mod:`bench.natural`) next to the raw unbatched baselines measured right
before it and the original framework, mas-framework 0.3.4, measured after it when a Python ≥
3.13 with it can be found or installed (:mod:`bench.framework`; skipped, saying why, otherwise);
one-way 1→1 (SDK sends, plain HTTP sends, batch
sends with batch acks) and N→1 throughput, and request/reply round trips with every gateway
check on, then off (sidecar CPU sampled during the 1→1 runs, memory after the runs); the DLP
scanner alone; aggregate throughput of 1, 2, 4, 8 sender/sink pairs with every check on, on one
Redis and on a three-shard Redis Cluster on loopback. Everything runs on 127.0.0.1. ``--smoke``
runs tiny counts (CI checks that the harness works, not the targets); ``--json`` writes the
numbers, ``--svg`` the plot (:mod:`bench.report`); ``--natural-only`` runs the raw baselines and
the natural path alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench import deploy, framework, load, natural, raw, report
from bench.cluster import LocalCluster, cluster_binary
from bench.dlp_bench import dlp_adversarial_results, dlp_results
from bench.procstat import cpu_seconds, load_average, memory_mb
from mas_cli.local.redis_server import RedisServer


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000, help="one-way messages per run")
    parser.add_argument("--requests", type=int, default=2_000, help="sequential round trips")
    parser.add_argument("--fan-in", type=int, default=10, help="senders of the N→1 run")
    parser.add_argument("--window", type=int, default=64, help="sends in flight per sender")
    parser.add_argument("--batch", type=int, default=100, help="messages per batch send")
    parser.add_argument(
        "--batch-window", type=int, default=4, help="batch sends in flight (batched 1→1 run)"
    )
    parser.add_argument("--pairs", default="1,2,4,8", help="pair counts of the scaling runs")
    parser.add_argument("--pair-messages", type=int, default=4_000, help="messages per pair")
    parser.add_argument("--no-cluster", action="store_true", help="skip the Redis Cluster runs")
    parser.add_argument("--redis-server", help="server binary (default: the embedded Valkey)")
    parser.add_argument(
        "--natural-messages", type=int, default=3_000, help="sequential sends (natural path)"
    )
    parser.add_argument(
        "--natural-requests", type=int, default=2_000, help="sequential requests (natural path)"
    )
    parser.add_argument(
        "--natural-only", action="store_true", help="only the raw baselines and the natural path"
    )
    parser.add_argument(
        "--framework-python",
        metavar="PYTHON",
        help="a Python >= 3.13 with mas-framework 0.3.4 installed (default: find one, or install "
        "it into a virtual environment in the user's cache directory)",
    )
    parser.add_argument(
        "--no-framework", action="store_true", help="skip the original framework's rows"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny counts: does it work at all")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--svg", type=Path, help="write the plot here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.messages, args.requests, args.fan_in = 200, 40, 2
        args.pairs, args.pair_messages = "1,2", 100
        args.natural_messages, args.natural_requests = 100, 40
        args.no_framework = args.no_framework or not args.framework_python
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="mas-bench-") as tmp:
        results = run(args, Path(tmp))
    print(report.table(results))
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if args.svg:
        args.svg.write_text(report.svg(results), encoding="utf-8")
    return 0


def _progress(text: str) -> None:
    print(f"[bench] {text}", flush=True)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    pairs = [int(n) for n in args.pairs.split(",") if n]
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_before": load_average()},
        "settings": {
            "messages": args.messages, "requests": args.requests, "fan_in": args.fan_in,
            "window": args.window, "pair_messages": args.pair_messages,
            "batch": args.batch, "batch_window": args.batch_window,
            "payload_bytes": load.PAYLOAD_BYTES,
            "natural_messages": args.natural_messages,
            "natural_requests": args.natural_requests,
        },
    }  # fmt: skip
    with RedisServer(args.redis_server) as server:
        results["server"] = Path(server.binary).name
        results["natural"] = _natural(server.url, args, workdir / "natural")
        if args.natural_only:
            results["machine"]["load_after"] = load_average()
            return results
        _progress(f"raw redis-py baseline on {results['server']}")
        results["raw"] = _raw(server.url, args)
        deploy.publish(server.url, cluster=False)
        for mode in ("on", "off"):
            _progress(f"sidecars with checks {mode}")
            results[mode] = _mode(server.url, mode, args, workdir / mode)
        _progress("scaling on one server")
        results["scale_single"] = _scale(server.url, pairs, args, workdir / "single", False)
    _progress("DLP scanner")
    results["dlp"] = dlp_results(quick=args.smoke)
    results["dlp_adversarial"] = dlp_adversarial_results(quick=args.smoke)
    if args.no_cluster or cluster_binary() is None:
        results["scale_cluster"] = None
    else:
        with LocalCluster(3) as cluster:
            _progress("scaling on a three-shard cluster")
            deploy.publish(cluster.url, cluster=True)
            results["scale_cluster"] = _scale(cluster.url, pairs, args, workdir / "cluster", True)
    results["machine"]["load_after"] = load_average()
    return results


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _latency(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


def _raw(url: str, args: argparse.Namespace) -> dict[str, Any]:
    per_sender = args.messages // args.fan_in
    return {
        "one_to_one": {
            "unbatched": asyncio.run(raw.one_way(url, 1, args.messages, pipelined=False)),
            "pipelined": asyncio.run(raw.one_way(url, 1, args.messages, pipelined=True)),
        },
        "fan_in": {
            "unbatched": asyncio.run(raw.one_way(url, args.fan_in, per_sender, pipelined=False)),
            "pipelined": asyncio.run(raw.one_way(url, args.fan_in, per_sender, pipelined=True)),
        },
        "round_trip": _latency(asyncio.run(raw.round_trip(url, args.requests))),
    }


def _natural(url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The natural path, between the raw unbatched baselines of the same counts and the
    original framework (when an interpreter for it is found)."""
    messages, requests = args.natural_messages, args.natural_requests
    _progress("natural path: raw redis-py, one awaited XADD per message, and round trips")
    out: dict[str, Any] = {
        "raw_unbatched": asyncio.run(raw.one_way(url, 1, messages, pipelined=False)),
        "raw_round_trip": _latency(asyncio.run(raw.round_trip(url, requests))),
    }
    _progress("natural path: two SDK agents under mas up, every check on")
    out["mas"] = natural.summary(natural.run(url, workdir, messages, requests))
    python, said = (None, "skipped (--no-framework, or --smoke without --framework-python)")
    if not args.no_framework:
        python, said = framework.interpreter(args.framework_python)
    out["framework_said"] = said
    out["framework"] = None
    _progress(f"original framework: {said}")
    if python is not None:
        result = framework.run(python, url, messages, requests)
        out["framework"] = {
            "send_rate": messages / result["send_seconds"],
            "delivered_rate": messages / result["delivered_seconds"],
            "round_trip": _latency(result["latencies"]),
        }
    return out


def _mode(url: str, mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    fleet = deploy.Fleet(url, workdir)
    try:
        senders, sink = deploy.start_mode(fleet, mode, args.fan_in)
        pids = [process.pid or 0 for process in (senders[0], sink)]
        one, cores, wall = _sampled(
            pids, load.one_way(senders[:1], sink, args.messages, args.window)
        )
        plain, plain_cores, plain_wall = _sampled(
            pids, load.one_way(senders[:1], sink, args.messages, args.window, coalesce=False)
        )
        batched, batched_cores, batched_wall = _sampled(
            pids,
            load.one_way(senders[:1], sink, args.messages, args.batch_window, batch=args.batch),
        )
        per_sender = args.messages // args.fan_in
        fan = asyncio.run(load.one_way(senders, sink, per_sender, args.window))
        rtt = _latency(asyncio.run(load.round_trip(senders[0], sink, args.requests)))
        memory = [memory_mb(pid) for pid in pids]
        return {
            "one_to_one": one,
            "one_to_one_batched": batched,
            "one_to_one_plain": plain,
            "fan_in": fan,
            "round_trip": rtt,
            "sidecar_cores": {"sender": cores[0], "sink": cores[1]},
            "sidecar_cores_per_1k": _per_1k(cores, args.messages / wall),
            "sidecar_cores_per_1k_batched": _per_1k(batched_cores, args.messages / batched_wall),
            "sidecar_cores_per_1k_plain": _per_1k(plain_cores, args.messages / plain_wall),
            "sidecar_rss_mb": {"sender": memory[0][0], "sink": memory[1][0]},
            "sidecar_peak_rss_mb": {"sender": memory[0][1], "sink": memory[1][1]},
        }
    finally:
        fleet.stop()


def _sampled(pids: list[int], run: Coroutine[Any, Any, float]) -> tuple[float, list[float], float]:
    """Run one load; its rate, the cores each of ``pids`` used meanwhile, and the wall time."""
    cpu_before = [cpu_seconds(pid) for pid in pids]
    wall = time.perf_counter()
    rate = asyncio.run(run)
    wall = time.perf_counter() - wall
    cores = [
        (cpu_seconds(pid) - before) / wall for pid, before in zip(pids, cpu_before, strict=True)
    ]
    return rate, cores, wall


def _per_1k(cores: list[float], rate: float) -> dict[str, float]:
    """Cores per 1,000 msg/s of sender and sink. CPU is charged over the whole run (warm-up
    included), so ``rate`` is the run's own: messages over its wall time."""
    return {"sender": cores[0] / (rate / 1000), "sink": cores[1] / (rate / 1000)}


def _scale(
    url: str, pairs: list[int], args: argparse.Namespace, workdir: Path, cluster: bool
) -> dict[str, float]:
    fleet = deploy.Fleet(url, workdir, cluster=cluster)
    try:
        started = deploy.start_pairs(fleet, max(pairs))
        results: dict[str, float] = {}
        for count in pairs:
            chosen = [(p.sender, p.sink) for p in started[:count]]
            results[str(count)] = asyncio.run(
                load.many_pairs(chosen, args.pair_messages, args.window)
            )
        return results
    finally:
        fleet.stop()
