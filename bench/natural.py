"""The natural path: two SDK agents under ``mas up``, one ``await`` at a time, every check on.

:func:`run` writes a folder of manifests (a sending and a receiving agent, the programs of
:mod:`bench.natural_agents`, and a GatewayPolicy with every check: rules, a rate limit, DLP with
every detector, signing, audit) and runs ``mas up`` on it against the benchmark's server — the
supervisor users run, with its sidecars, Redis users, identities and tokens. The sending agent
measures sequential ``await agent.send(...)`` and sequential ``await agent.request(...)``
answered with ``message.reply``, and the stage timings both sidecars export on ``/metrics``
around each phase; it prints them as one ``BENCH-RESULT`` line, which ``mas up`` copies to its
output, and exits. :func:`summary` turns that into rates, latencies and the mean time of each
stage per message.

Used by :mod:`bench.cli`, which measures the raw redis-py baselines of the same run next to it.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from bench.deploy import SINK_CAPABILITY, checks_on
from bench.workload import RESULT_MARK

SENDER, SINK = "nat-sender", "nat-sink"
_PROGRAM = Path(__file__).with_name("natural_agents.py")
_TIMEOUT = 600.0


def _manifest(name: str, role: str, capabilities: list[str], env: dict[str, str]) -> str:
    document = {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "capabilities": capabilities,
            "image": f"bench/{name}:1",
            "env": [{"name": key, "value": value} for key, value in env.items()],
            "local": {"command": ["python", str(_PROGRAM), role]},
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def write_folder(folder: Path, messages: int, requests: int) -> None:
    """The manifests of the two agents and the policy."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "BENCH_MESSAGES": str(messages),
        "BENCH_REQUESTS": str(requests),
        "BENCH_SINK": f"default/{SINK}",
        "BENCH_SINK_CAPABILITY": SINK_CAPABILITY,
        "MAS_LOG_LEVEL": "WARNING",
    }
    (folder / "sender.yaml").write_text(_manifest(SENDER, "sender", [], settings))
    (folder / "sink.yaml").write_text(_manifest(SINK, "sink", [SINK_CAPABILITY], settings))
    policy = {
        "apiVersion": "mas.dev/v1alpha1",
        "kind": "GatewayPolicy",
        "metadata": {"name": "natural"},
        "spec": checks_on([SENDER, SINK]),
    }
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))


def run(redis_url: str, workdir: Path, messages: int, requests: int) -> dict[str, Any]:
    """Run ``mas up`` on the natural-path folder against ``redis_url``; the sender's result."""
    folder = workdir / "agents"
    write_folder(folder, messages, requests)
    command = [
        sys.executable, "-m", "mas_cli", "up", str(folder), "--redis-url", redis_url,
        "--state-dir", str(workdir / "state"),
    ]  # fmt: skip
    # The agents import the bench from this tree; a PYTHONPATH given stays after it.
    path = [str(_PROGRAM.parent.parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert process.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    seen: list[str] = []
    result: dict[str, Any] | None = None
    deadline = time.monotonic() + _TIMEOUT
    try:
        while result is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            seen.append(line)
            if RESULT_MARK in line:
                result = orjson.loads(line.split(RESULT_MARK, 1)[1])
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if result is None:
        tail = "\n".join(seen[-40:])
        raise RuntimeError(f"the natural-path run gave no result; mas up said:\n{tail}")
    return result


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _mean_ms(timings: dict[str, list[float]], key: str, per: float) -> float | None:
    value = timings.get(key)
    if value is None or not per:
        return None
    return value[0] * 1000 / per


# The stages of one message, in order: (label, whose sidecar, the timing's key). HTTP routes
# are timed whole by the middleware; the stages inside them by the sidecar's stage timings.
ONE_WAY_STAGES = (
    ("sender sidecar: POST /v1/messages, whole", "sender",
     'mas_http_request_duration_seconds{route="/v1/messages"}'),
    ("  HTTP in: body read, JSON, validation", "sender", 'mas_stage_seconds{stage="http_in"}'),
    ("  checks: policy, rate limit, DLP, signing, audit entry", "sender",
     'mas_stage_seconds{stage="checks"}'),
    ("  Redis write (queued to answered)", "sender", 'mas_stage_seconds{stage="redis_write"}'),
    ("sink sidecar: Redis read (read loop, per message)", "sink",
     'mas_stage_seconds{stage="redis_read"}'),
    ("sink sidecar: verify (signature, replay, authorization, audit)", "sink",
     'mas_stage_seconds{stage="verify"}'),
    ("sink sidecar: leased to written to the agent", "sink",
     'mas_stage_seconds{stage="delivery"}'),
    ("sink sidecar: POST /v1/deliveries/{id}/ack, whole", "sink",
     'mas_http_request_duration_seconds{route="/v1/deliveries/{id}/ack"}'),
)  # fmt: skip
ROUND_TRIP_STAGES = (
    ("requester sidecar: POST /v1/requests, whole", "sender",
     'mas_http_request_duration_seconds{route="/v1/requests"}'),
    ("  HTTP in: body read, JSON, validation", "sender", 'mas_stage_seconds{stage="http_in"}'),
    ("  checks of the request", "sender", 'mas_stage_seconds{stage="checks"}'),
    ("  Redis write of the request", "sender", 'mas_stage_seconds{stage="redis_write"}'),
    ("  waiting for the reply (written to resolved)", "sender",
     'mas_stage_seconds{stage="reply_wait"}'),
    ("  verify the reply", "sender", 'mas_stage_seconds{stage="verify"}'),
    ("responder sidecar: verify the request", "sink", 'mas_stage_seconds{stage="verify"}'),
    ("responder sidecar: leased to written to the agent", "sink",
     'mas_stage_seconds{stage="delivery"}'),
    ("responder agent: handler (message.reply, whole)", "handler", ""),
    ("responder sidecar: POST /v1/deliveries/{id}/reply, whole", "sink",
     'mas_http_request_duration_seconds{route="/v1/deliveries/{id}/reply"}'),
    ("  checks of the reply", "sink", 'mas_stage_seconds{stage="checks"}'),
    ("  Redis write of the reply", "sink", 'mas_stage_seconds{stage="redis_write"}'),
    ("responder sidecar: POST /v1/deliveries/{id}/ack, whole", "sink",
     'mas_http_request_duration_seconds{route="/v1/deliveries/{id}/ack"}'),
)  # fmt: skip


def _breakdown(
    stages: dict[str, Any], rows: tuple[tuple[str, str, str], ...], per: float
) -> list[dict[str, Any]]:
    out = []
    for label, side, key in rows:
        if side == "handler":
            seconds, count = stages["sink_handler"]
            value = seconds * 1000 / count if count else None
        else:
            value = _mean_ms(stages[side], key, per)
        out.append({"stage": label, "ms": value})
    return out


def _cpu_us(used: dict[str, float], per: int) -> dict[str, float]:
    """CPU µs per message of each process, and of all of them (``all``)."""
    out = {role: seconds * 1e6 / per for role, seconds in sorted(used.items())}
    return {**out, "all": sum(out.values())}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Rates, latencies, per-message stage times and CPU of one natural-path run."""
    messages, latencies = result["messages"], result["latencies"]
    return {
        "one_way_cpu_us": _cpu_us(result["one_way_cpu"], messages),
        "round_trip_cpu_us": _cpu_us(result["round_trip_cpu"], len(latencies)),
        "send_rate": messages / result["send_seconds"],
        "delivered_rate": messages / result["delivered_seconds"],
        "round_trip": {
            "p50_ms": _percentile(latencies, 0.50) * 1000,
            "p99_ms": _percentile(latencies, 0.99) * 1000,
            "mean_ms": sum(latencies) / len(latencies) * 1000,
        },
        "one_way_stages": _breakdown(result["one_way_stages"], ONE_WAY_STAGES, messages),
        "round_trip_stages": _breakdown(
            result["round_trip_stages"], ROUND_TRIP_STAGES, len(latencies)
        ),
    }
