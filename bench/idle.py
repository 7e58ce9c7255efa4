"""``python -m bench.idle``: what each agent costs, idle and under load, under ``mas up``.

For each agent count (1, 50 and 200 by default) it writes a folder of that many agents (the
program of :mod:`bench.idle_agents`, a ring: each sends to the next) and a GatewayPolicy with
every check on (rules, rate limit, DLP with every detector, signing, audit), starts a private
server and runs ``mas up`` on the folder against it, then measures, once every agent said it
is ready and a few seconds passed:

- **idle**: for ``--window`` seconds nothing is sent. Redis commands per second per agent from
  ``INFO commandstats`` (everything the server ran: the sidecars, and ``mas up``'s own probe
  and audit rounds, which are shown apart as far as they can be told), CPU (``/proc``, user +
  system) of each sidecar, each agent program, ``mas up`` and the server, as % of one core, and
  the memory of each sidecar and agent: resident (RSS), proportional (PSS) and private (USS,
  what one more process adds: the rest is shared libraries);
- **load**: every agent is sent ``SIGUSR1`` and sends ``--burst`` messages to the next, one
  ``await send`` at a time; the time until every agent received its burst, and the CPU and
  commands over it;
- **idle after load**: the idle window again, now that every agent reads a sender's stream.

Everything listens on 127.0.0.1. The processes are ``mas up``'s children, found in ``/proc``.
``--json`` writes the numbers. Used on its own; the figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis
import yaml

from bench.deploy import SINK_CAPABILITY, checks_on
from bench.idle_agents import READY, RECEIVED
from bench.procstat import cpu_seconds, load_average
from mas_cli.local.redis_server import RedisServer

_PROGRAM = Path(__file__).with_name("idle_agents.py")
PREFIX = "idle-"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__)
    parser.add_argument("--agents", default="1,50,200", help="agent counts, one run each")
    parser.add_argument("--window", type=float, default=30.0, help="seconds of each idle window")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before a window")
    parser.add_argument("--burst", type=int, default=20, help="messages each agent sends")
    parser.add_argument("--redis-server", help="server binary (default: the embedded Valkey)")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


def write_folder(folder: Path, count: int, burst: int) -> None:
    """``count`` agents in a ring and the policy with every check on."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{PREFIX}{index:03d}" for index in range(count)]
    for index, name in enumerate(names):
        document = {
            "apiVersion": "mas.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": {
                "capabilities": [SINK_CAPABILITY],
                "image": f"bench/{name}:1",
                "env": [
                    {"name": "BENCH_BURST", "value": str(burst)},
                    {"name": "BENCH_NEXT", "value": names[(index + 1) % count]},
                    {"name": "MAS_LOG_LEVEL", "value": "WARNING"},
                ],
                "local": {"command": ["python", str(_PROGRAM)]},
            },
        }
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    policy = {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "GatewayPolicy",
        "metadata": {"name": "idle"},
        "spec": checks_on([f"{PREFIX}*"]),
    }
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))


# -- processes ------------------------------------------------------------------------------


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent:
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def memory(pid: int) -> dict[str, float]:
    """Resident, proportional and private (unique) memory of ``pid`` in MiB."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                values[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {
        "rss": values.get("Rss", 0.0),
        "pss": values.get("Pss", 0.0),
        "uss": values.get("Private_Clean", 0.0) + values.get("Private_Dirty", 0.0),
    }


@dataclass
class Processes:
    supervisor: int
    server: int
    sidecars: list[int] = field(default_factory=list)
    agents: list[int] = field(default_factory=list)

    def find(self) -> None:
        children = _children(self.supervisor)
        self.sidecars = [pid for pid in children if "mas_sidecar" in _cmdline(pid)]
        self.agents = [pid for pid in children if _PROGRAM.name in _cmdline(pid)]

    def cpu(self) -> dict[str, Any]:
        return {
            "sidecars": [_cpu(pid) for pid in self.sidecars],
            "agents": [_cpu(pid) for pid in self.agents],
            "supervisor": _cpu(self.supervisor),
            "server": _cpu(self.server),
        }


def _cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def _calls(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(s["calls"]) for name, s in stats.items()}


# -- one run --------------------------------------------------------------------------------


class Run:
    """``mas up`` on ``count`` agents against a private server, and its measurements."""

    def __init__(self, server: RedisServer, workdir: Path, count: int, burst: int) -> None:
        self.count, self.burst = count, burst
        self.admin = redis.Redis.from_url(server.url)
        folder = workdir / "agents"
        write_folder(folder, count, burst)
        command = [
            sys.executable, "-m", "mas_cli", "up", str(folder), "--redis-url", server.url,
            "--state-dir", str(workdir / "state"), "--log-dir", str(workdir / "logs"),
        ]  # fmt: skip
        path = [str(_PROGRAM.parent.parent), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert server.process is not None and self.process.stdout is not None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=_pump, args=(self.process.stdout, self.lines), daemon=True).start()
        self.processes = Processes(self.process.pid, server.process.pid)

    def wait_for(self, mark: str, count: int, timeout: float) -> float:
        """Seconds until ``count`` output lines carried ``mark``."""
        started = time.monotonic()
        deadline = started + timeout
        got = 0
        while got < count:
            if time.monotonic() > deadline or self.process.poll() is not None:
                tail = "\n".join(self.seen[-30:])
                raise RuntimeError(f"{got} of {count} agents said {mark.strip()}:\n{tail}")
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                continue
            self.seen.append(line)
            got += mark in line
        return time.monotonic() - started

    def measure(self, seconds: float | None, action: str = "") -> dict[str, Any]:
        """Counts and CPU over ``seconds`` of idling (or over the load when ``action``)."""
        cpu_before, calls_before = self.processes.cpu(), _calls(self.admin)
        started = time.monotonic()
        if action:
            for pid in self.processes.agents:
                os.kill(pid, signal.SIGUSR1)
            self.wait_for(RECEIVED, self.count, 300 + self.count * self.burst)
        else:
            assert seconds is not None
            time.sleep(seconds)
        elapsed = time.monotonic() - started
        cpu_after, calls_after = self.processes.cpu(), _calls(self.admin)
        calls = {k: v - calls_before.get(k, 0) for k, v in calls_after.items() if k != "info"}
        calls = {k: v for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v > 0}

        def percent(kind: str) -> list[float]:
            pairs = zip(cpu_before[kind], cpu_after[kind], strict=True)
            return [100 * (after - before) / elapsed for before, after in pairs]

        sidecars, agents = percent("sidecars"), percent("agents")
        result: dict[str, Any] = {
            "seconds": elapsed,
            "commands_per_agent_s": sum(calls.values()) / elapsed / self.count,
            "commands": {k: round(v / elapsed / self.count, 3) for k, v in calls.items()},
            "sidecar_cpu_pct": _spread(sidecars),
            "agent_cpu_pct": _spread(agents),
            "supervisor_cpu_pct": 100
            * (cpu_after["supervisor"] - cpu_before["supervisor"])
            / elapsed,
            "server_cpu_pct": 100 * (cpu_after["server"] - cpu_before["server"]) / elapsed,
        }
        if action:
            result["messages_per_s"] = self.count * self.burst / elapsed
        return result

    def memory(self) -> dict[str, Any]:
        def of(pids: list[int]) -> dict[str, Any]:
            figures = [memory(pid) for pid in pids]
            return {kind: _spread([f[kind] for f in figures]) for kind in ("rss", "pss", "uss")}

        return {"sidecar": of(self.processes.sidecars), "agent": of(self.processes.agents)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=120 + self.count)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.admin.close()


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": 0.0, "max": 0.0}
    return {"mean": statistics.fmean(values), "max": max(values)}


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def run_count(count: int, args: argparse.Namespace) -> dict[str, Any]:
    """Start, idle, load, idle again, for ``count`` agents."""
    with (
        tempfile.TemporaryDirectory(prefix="mas-bench-idle-") as workdir,
        RedisServer(args.redis_server) as server,
    ):
        run = Run(server, Path(workdir), count, args.burst)
        try:
            started = run.wait_for(READY, count, 300 + 5 * count)
            run.processes.find()
            time.sleep(args.settle)
            result: dict[str, Any] = {
                "agents": count,
                "start_seconds": started,
                "sidecars_found": len(run.processes.sidecars),
                "agents_found": len(run.processes.agents),
                "memory_idle": run.memory(),
                "idle": run.measure(args.window),
            }
            result["load"] = run.measure(None, action="send")
            result["memory_after_load"] = run.memory()
            time.sleep(args.settle)
            result["idle_after_load"] = run.measure(args.window)
            result["load_average"] = load_average()
            return result
        finally:
            run.stop()


ROWS = (
    ("start, until every agent is ready (s)", "start_seconds", "num0"),
    ("sidecar RSS / PSS / USS, idle (MB, mean)", "memory_idle.sidecar", "mem"),
    ("agent RSS / PSS / USS, idle (MB, mean)", "memory_idle.agent", "mem"),
    ("sidecar RSS / PSS / USS after load (MB, mean)", "memory_after_load.sidecar", "mem"),
    ("sidecar CPU idle (% of a core; mean / max)", "idle.sidecar_cpu_pct", "pct"),
    ("agent CPU idle (% of a core; mean / max)", "idle.agent_cpu_pct", "pct"),
    ("mas up CPU idle (% of a core)", "idle.supervisor_cpu_pct", "num1"),
    ("Redis CPU idle (% of a core)", "idle.server_cpu_pct", "num1"),
    ("Redis commands per agent per s, idle", "idle.commands_per_agent_s", "num2"),
    ("load: messages per s (every agent sends its burst)", "load.messages_per_s", "num0"),
    ("load: sidecar CPU (% of a core; mean / max)", "load.sidecar_cpu_pct", "pct"),
    ("sidecar CPU idle after load (%; mean / max)", "idle_after_load.sidecar_cpu_pct", "pct"),
    ("Redis commands per agent per s, after load", "idle_after_load.commands_per_agent_s", "num2"),
)  # fmt: skip


def table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table, one column per agent count."""
    labels = [r.get("label", f"{r['agents']} agents") for r in results]
    header = "| measurement | " + " | ".join(labels) + " |"
    lines = [header, "|---|" + "---:|" * len(results)]
    for label, path, kind in ROWS:
        cells = [_cell(result, path, kind) for result in results]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(result: dict[str, Any], path: str, kind: str) -> str:
    value: Any = result
    for part in path.split("."):
        value = value[part]
    if kind == "mem":
        return _mem(value)
    if kind == "pct":
        return _pct(value)
    return f"{value:.{kind[-1]}f}"


def _mem(figures: dict[str, dict[str, float]]) -> str:
    return " / ".join(f"{figures[kind]['mean']:.0f}" for kind in ("rss", "pss", "uss"))


def _pct(spread: dict[str, float]) -> str:
    return f"{spread['mean']:.2f} / {spread['max']:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = []
    for count in (int(part) for part in args.agents.split(",")):
        print(f"{count} agents ...", flush=True)
        result = run_count(count, args)
        results.append(result)
        print(f"  idle commands by kind (per agent per s): {result['idle']['commands']}")
        print(f"  after load: {result['idle_after_load']['commands']}", flush=True)
        if args.json:
            args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
