"""``python -m bench.profile``: where the sidecars spend their CPU on the hot path.

Starts one Redis, a sending and a receiving sidecar with every gateway check on, records both
with ``py-spy`` (a sampling profiler, if installed) during a one-way run and a request/reply
run, and prints, per sidecar, the functions with the most samples: inclusive (anywhere on the
stack) among the project's own code and libraries, and exclusive (on top of the stack).
A developer tool for the performance work behind ``docs/benchmarks.md``; not used by the
harness itself.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench import deploy, load
from mas_cli.local.redis_server import RedisServer


def _summarize(path: Path, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    exclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame.split(" (")[0] + " " + frame.rsplit("/", 1)[-1].rstrip(")")
                  for frame in stack.split(";")[1:]]  # fmt: skip
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            exclusive[frames[-1]] += count
    out = [f"  {total} samples; inclusive:"]
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    out.append("  exclusive:")
    out += [f"    {100 * n / total:5.1f}%  {name}" for name, n in exclusive.most_common(top)]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=1_000)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--mode", default="on", choices=["on", "off"])
    parser.add_argument("--batch", type=int, default=0, help="messages per batch send (0: single)")
    args = parser.parse_args()
    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed (pip install py-spy)")
        return 2
    with tempfile.TemporaryDirectory(prefix="mas-profile-") as tmp, RedisServer() as server:
        workdir = Path(tmp)
        deploy.publish(server.url, cluster=False)
        fleet = deploy.Fleet(server.url, workdir)
        try:
            [sender], sink = deploy.start_mode(fleet, args.mode, 1)
            records = {"sender": workdir / "sender.txt", "sink": workdir / "sink.txt"}
            spies = [
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(process.pid),
                        "--format",
                        "raw",
                        "--rate",
                        "250",
                        "--output",
                        str(records[name]),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for name, process in (("sender", sender), ("sink", sink))
            ]
            window = 4 if args.batch else 64
            rate = asyncio.run(
                load.one_way([sender], sink, args.messages, window, batch=args.batch)
            )
            latencies = asyncio.run(load.round_trip(sender, sink, args.requests))
            for spy_process in spies:
                spy_process.send_signal(2)  # SIGINT: py-spy writes its record and exits
                spy_process.wait(timeout=30)
        finally:
            fleet.stop()
        p50 = sorted(latencies)[len(latencies) // 2] * 1000
        print(f"one-way {rate:,.0f} msg/s; round trip p50 {p50:.2f} ms")
        for name, path in records.items():
            print(f"{name} sidecar:")
            print(_summarize(path, args.top) if path.exists() else "  (no record)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
