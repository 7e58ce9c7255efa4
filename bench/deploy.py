"""What the benchmark runs against: the gateway policy, credentials and sidecar processes.

Two modes share one compiled policy document, told apart by agent names:

* ``on`` (agents ``on-*`` and ``scale-*``): every gateway check — rules (an allow rule by
  target capability and message type, a deny rule that never matches), a per-replica rate limit
  far above the load, DLP with every built-in detector, signing required (each sidecar gets an
  identity issued by a bench trust anchor), audit of every decision;
* ``off`` (agents ``off-*``): one rule allowing everything, no rate limit, no DLP, no signing
  (the sidecars get no credentials). Audit entries are still written: the sidecar always audits.

:func:`start_sidecars` starts the processes in parallel and waits for each to be ready. Used by
:mod:`bench.cli`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from mas_cli.local.processes import SidecarProcess
from mas_control.provision import ensure_functions, publish_policy, register_agent
from mas_core.identity.credentials import create_anchor, issue_agent_credentials, load_anchor
from mas_core.policy.dlp import BUILTIN_DETECTORS
from mas_core.policy.document import CompiledPolicy, GatewayPolicySpec, compile_policies

SINK_CAPABILITY = "bench-sink"
_DLP_ACTIONS = {
    "email": "redact",
    "phone": "log",
    "jwt": "redact",
    "medical_record_number": "redact",
}


def checks_on(agents: list[str]) -> dict[str, Any]:
    """The ``spec`` of a GatewayPolicy with every check on, for the senders ``agents``."""
    return {
        "agents": agents,
        "rules": [
            {
                "name": "bench",
                "action": "allow",
                "to": {"capabilities": [SINK_CAPABILITY]},
                "types": ["bench.*"],
            },
            {"name": "no-admin", "action": "deny", "types": ["admin.*"]},
        ],
        "rateLimits": [{"name": "generous", "rate": 1_000_000, "burst": 1_000_000}],
        "dlp": {
            "enabled": True,
            "detectors": {name: _DLP_ACTIONS.get(name, "block") for name in BUILTIN_DETECTORS},
        },
        "signing": {"required": True},
        "audit": {"payloads": "hash"},
    }


def bench_policy() -> CompiledPolicy:
    on = GatewayPolicySpec.model_validate(checks_on(["on-*", "scale-*"]))
    off = GatewayPolicySpec.model_validate(
        {
            "agents": ["off-*"],
            "rules": [{"name": "anything", "action": "allow"}],
            "signing": {"required": False},
        }
    )
    return compile_policies([("default", "bench-on", on), ("default", "bench-off", off)])


def publish(redis_url: str, cluster: bool) -> None:
    """Empty the database and publish the bench policy."""
    client: redis.Redis = (
        redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
    )
    try:
        client.flushall()
        publish_policy(client, bench_policy())
    finally:
        client.close()


@dataclass
class Pair:
    """A sending agent's sidecar and a receiving agent's sidecar."""

    sender: SidecarProcess
    sink: SidecarProcess


class Fleet:
    """The sidecar processes of one benchmark section; stops them all."""

    def __init__(self, redis_url: str, workdir: Path, *, cluster: bool = False) -> None:
        self.redis_url = redis_url.replace("redis://", "redis+cluster://") if cluster else redis_url
        self._admin_url = redis_url
        self._cluster = cluster
        self.workdir = workdir
        self.sidecars: list[SidecarProcess] = []
        anchor_dir = workdir / "anchor"
        self._anchor = load_anchor(anchor_dir) if anchor_dir.exists() else create_anchor(anchor_dir)

    def sidecar(self, name: str, *, sink: bool) -> SidecarProcess:
        """A sidecar (not started) for ``default/<name>``, signed unless it is an ``off`` one."""
        agent_id = f"default/{name}"
        capabilities = [SINK_CAPABILITY] if sink else []
        admin = (redis.RedisCluster if self._cluster else redis.Redis).from_url(self._admin_url)
        with admin:  # what the control plane provides: the functions and the registry entry
            ensure_functions(admin)
            register_agent(admin, agent_id, capabilities, [])
        env = {"MAS_CAPABILITIES": ",".join(capabilities), "MAS_LOG_LEVEL": "WARNING"}
        if not name.startswith("off-"):
            directory = self.workdir / "credentials" / name
            issue_agent_credentials(self._anchor, directory, agent_id=agent_id)
            env["MAS_CREDENTIALS_DIR"] = str(directory)
        process = SidecarProcess(
            agent_id, self.redis_url, env=env, log_path=self.workdir / "logs" / f"{name}.log"
        )
        self.sidecars.append(process)
        return process

    def start(self, processes: list[SidecarProcess]) -> None:
        """Start ``processes`` together, then wait for each to answer ``/readyz``."""
        for process in processes:
            process.start(wait=False)
        for process in processes:
            process.wait_ready(timeout=60)

    def stop(self) -> None:
        for process in self.sidecars:
            process.stop()
        self.sidecars = []


def start_mode(
    fleet: Fleet, mode: str, senders: int
) -> tuple[list[SidecarProcess], SidecarProcess]:
    """``senders`` sending sidecars and one sink for ``mode`` (``on`` or ``off``), started."""
    sink = fleet.sidecar(f"{mode}-sink-1", sink=True)
    sending = [fleet.sidecar(f"{mode}-send-{i}", sink=False) for i in range(1, senders + 1)]
    fleet.start([sink, *sending])
    return sending, sink


def start_pairs(fleet: Fleet, pairs: int) -> list[Pair]:
    """``pairs`` sender/sink pairs with every check on, started."""
    made = [
        Pair(
            fleet.sidecar(f"scale-send-{i}", sink=False),
            fleet.sidecar(f"scale-sink-{i}", sink=True),
        )
        for i in range(1, pairs + 1)
    ]
    fleet.start([process for pair in made for process in (pair.sender, pair.sink)])
    return made
