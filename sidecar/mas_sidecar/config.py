"""The sidecar's settings: one typed object built from the command line and ``MAS_*`` variables.

Used by :mod:`mas_sidecar.main`; every component receives the parts it needs. The variables are
read with the parser the operator uses too (:mod:`mas.settings`); bad values, ``MAS_LOG_LEVEL``,
``MAS_LOG_FORMAT`` and the ``OTEL_*`` tracing settings (:mod:`mas_core.telemetry.tracing`)
included, fail at start-up with :class:`~mas_sidecar.errors.ConfigError` naming the variable,
never later.

Secrets come from files where the control plane can put them there: the Redis URL (which carries
the agent's ACL password) from ``MAS_REDIS_URL_FILE`` (or ``MAS_REDIS_URL``, or ``--redis-url``),
the API token its agent must present from ``MAS_SIDECAR_TOKEN_FILE`` (or ``MAS_SIDECAR_TOKEN``);
see :meth:`mas_core.settings.EnvSettings.secret`. A sidecar without a token refuses to start, unless
``MAS_SIDECAR_INSECURE_NO_TOKEN=true`` says that any local process may use it.

Redis Cluster: set ``MAS_REDIS_CLUSTER=true``, or give the URL the scheme ``redis+cluster://``
(``rediss+cluster://`` for TLS), naming any one node; the sidecar then connects with a cluster
client (:mod:`mas_sidecar.redis_client`). Every agent's keys share one hash slot, so the same
sidecar runs on one server and on a cluster.

Redis Sentinel: a ``redis+sentinel://user:password@host:port,host:port/<primary name>`` URL
(:mod:`mas_core.sentinel`), in the same secret file; the sidecar follows the primary across
failovers. ``MAS_REDIS_WAIT_REPLICAS=n`` makes every send wait until ``n`` replicas hold the
message (``WAIT``, at most ``MAS_REDIS_WAIT_TIMEOUT_MS``) before it answers 202, so a failover
cannot take back what was acknowledged (:mod:`mas_sidecar.writer`); it needs one primary (a
plain or Sentinel URL), not a cluster, whose client would send the ``WAIT`` to other
connections than the writes.

``MAS_METRICS_ADDRESS=host:port`` opens a second listener, for Prometheus and the kubelet's
probes, that serves ``/metrics``, ``/healthz`` and ``/readyz`` only (never the message API):
the operator sets ``0.0.0.0:9090`` in pods; unset (local mode), there is none.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mas_core import sentinel
from mas_core.a2a_remotes import REMOTES_DIR_ENV
from mas_core.extras import missing_extra
from mas_core.names import InvalidAgentIdError, namespace_of, qualify
from mas_core.settings import EnvSettings
from mas_core.sidecar_token import TOKEN_ENV, TOKEN_FILE_ENV, check_token
from mas_core.telemetry import tracing
from mas_sidecar.errors import ConfigError
from mas_sidecar.redis_client import cluster_url

if TYPE_CHECKING:
    from mas_core.manifests import A2ASpec

REPLICA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class SidecarConfig:
    """Everything a sidecar process needs to know."""

    agent_id: str
    port: int
    redis_url: str = field(repr=False)
    replica: str
    api_token: str | None = field(default=None, repr=False)  # None: serve every caller
    redis_cluster: bool = False
    capabilities: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    policy_file: Path | None = None
    credentials_dir: Path | None = None
    replay_window_ms: int = 300_000
    metadata: dict[str, Any] = field(default_factory=dict)
    lease_ms: int = 30_000
    max_attempts: int = 5
    max_inflight: int = 100
    max_body_bytes: int = 1 << 20
    idle_timeout_ms: int = 30_000
    body_timeout_ms: int = 10_000
    max_connections: int = 1024
    max_subscribers: int = 64
    registry_ttl_ms: int = 30_000  # renewed every third: one ZADD every 10 s
    policy_poll_ms: int = 10_000  # the revision is read this often even without a notice
    wait_replicas: int = 0  # 0: answer once the primary has the message
    wait_timeout_ms: int = 1000
    log_level: str = "INFO"
    log_format: str = "text"
    tracing: str | None = None  # the span exporter the OTEL_* variables ask for; None: off
    metrics_address: tuple[str, int] | None = None  # the probes' listener; None: none
    a2a: A2ASpec | None = None  # the agent's spec.a2a (MAS_A2A): its card, inbound A2A
    a2a_host: str = "127.0.0.1"  # the A2A listener's address (MAS_A2A_HOST: the pod IP)
    a2a_url: str | None = None  # the card's interface URL (MAS_A2A_URL), else from host, port
    a2a_clients_dir: Path | None = None  # one file per client, its API key (MAS_A2A_CLIENTS_DIR)
    a2a_wait_ms: int = 10_000  # how long a call waits for the reply before it answers a Task
    a2a_max_connections: int = 256  # the A2A listener's connections open at once, at most
    a2a_remotes_dir: Path | None = None  # external agents' tokens, one file each (REMOTES_DIR_ENV)

    @property
    def namespace(self) -> str:
        return namespace_of(self.agent_id)

    @classmethod
    def build(
        cls,
        *,
        agent_id: str | None,
        port: int | None,
        redis_url: str | None,
        env: Mapping[str, str] = os.environ,
    ) -> SidecarConfig:
        """Arguments win over ``MAS_AGENT_ID``, ``MAS_SIDECAR_PORT``, ``MAS_REDIS_URL`` (or
        ``MAS_REDIS_URL_FILE``)."""
        read = EnvSettings(env, ConfigError)
        raw_id = agent_id or read.raw("MAS_AGENT_ID")
        if not raw_id:
            read.fail("an agent id is required (--agent-id or MAS_AGENT_ID)")
        try:
            full_id = qualify(raw_id)
        except InvalidAgentIdError as exc:
            raise ConfigError(str(exc)) from exc
        url = redis_url or read.secret("MAS_REDIS_URL")
        if not url:
            read.fail("a Redis URL is required (MAS_REDIS_URL_FILE, MAS_REDIS_URL or --redis-url)")
        url, cluster = cluster_url(url, read.flag("MAS_REDIS_CLUSTER"))
        wait_replicas = read.integer("MAS_REDIS_WAIT_REPLICAS", 0, 0, 100)
        _check_topology(url, cluster, wait_replicas)
        max_connections = read.integer("MAS_MAX_CONNECTIONS", 1024, 2, 65_536)
        max_subscribers = read.integer("MAS_MAX_SUBSCRIBERS", 64, 1, 10_000)
        if max_subscribers >= max_connections:
            read.fail(
                f"MAS_MAX_SUBSCRIBERS={max_subscribers} leaves no connection for other requests "
                f"(MAS_MAX_CONNECTIONS={max_connections})"
            )
        api_port = port if port is not None else read.integer("MAS_SIDECAR_PORT", 8790, 1, 65535)
        metrics_address = read.address("MAS_METRICS_ADDRESS")
        if metrics_address is not None and metrics_address[1] == api_port:
            read.fail(f"MAS_METRICS_ADDRESS needs a port of its own, not the API's ({api_port})")
        return cls(
            agent_id=full_id,
            port=api_port,
            redis_url=url,
            redis_cluster=cluster,
            replica=_replica(env),
            capabilities=read.items("MAS_CAPABILITIES"),
            roles=read.items("MAS_ROLES"),
            policy_file=read.path("MAS_POLICY_FILE"),
            credentials_dir=read.path("MAS_CREDENTIALS_DIR"),
            replay_window_ms=read.integer("MAS_REPLAY_WINDOW_MS", 300_000, 1000, 86_400_000),
            metadata=read.json_object("MAS_METADATA"),
            lease_ms=read.integer("MAS_LEASE_MS", 30_000, 100, 3_600_000),
            max_attempts=read.integer("MAS_MAX_ATTEMPTS", 5, 1, 1000),
            max_inflight=read.integer("MAS_MAX_INFLIGHT", 100, 1, 10_000),
            max_body_bytes=read.integer("MAS_MAX_BODY_BYTES", 1 << 20, 1024, 64 << 20),
            idle_timeout_ms=read.integer("MAS_IDLE_TIMEOUT_MS", 30_000, 100, 3_600_000),
            body_timeout_ms=read.integer("MAS_BODY_TIMEOUT_MS", 10_000, 100, 600_000),
            max_connections=max_connections,
            max_subscribers=max_subscribers,
            registry_ttl_ms=read.integer("MAS_REGISTRY_TTL_MS", 30_000, 300, 3_600_000),
            policy_poll_ms=read.integer("MAS_POLICY_POLL_MS", 10_000, 100, 86_400_000),
            wait_replicas=wait_replicas,
            wait_timeout_ms=read.integer("MAS_REDIS_WAIT_TIMEOUT_MS", 1000, 1, 60_000),
            log_level=read.log_level(),
            log_format=read.log_format(),
            tracing=_tracing(env),
            metrics_address=metrics_address,
            api_token=_api_token(read),
            a2a=_a2a(read),
            a2a_host=read.raw("MAS_A2A_HOST") or "127.0.0.1",
            a2a_url=read.raw("MAS_A2A_URL") or None,
            a2a_clients_dir=read.path("MAS_A2A_CLIENTS_DIR"),
            a2a_wait_ms=read.integer("MAS_A2A_WAIT_MS", 10_000, 0, 600_000),
            a2a_max_connections=read.integer("MAS_A2A_MAX_CONNECTIONS", 256, 2, 65_536),
            a2a_remotes_dir=read.path(REMOTES_DIR_ENV),
        )

    @property
    def a2a_exposed(self) -> bool:
        """Whether this sidecar serves the A2A JSON-RPC binding (``spec.a2a.expose``)."""
        return self.a2a is not None and self.a2a.expose

    @property
    def a2a_endpoint(self) -> str:
        """The A2A interface URL the agent card names."""
        if self.a2a_url:
            return self.a2a_url
        port = self.a2a.port if self.a2a is not None else 0
        host = f"[{self.a2a_host}]" if ":" in self.a2a_host else self.a2a_host
        return f"http://{host}:{port}/"


def _a2a(read: EnvSettings) -> A2ASpec | None:
    """The agent's ``spec.a2a`` block from ``MAS_A2A`` (JSON), None when unset."""
    document = read.json_object("MAS_A2A")
    if not document:
        return None
    from pydantic import ValidationError  # noqa: PLC0415 - only for an agent with spec.a2a

    from mas_core.manifests import A2ASpec  # noqa: PLC0415

    try:
        return A2ASpec.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"MAS_A2A: {exc.errors()[0]['msg']}") from None


def _check_topology(url: str, cluster: bool, wait_replicas: int) -> None:
    """ConfigError for a malformed Sentinel URL, a Sentinel URL with cluster mode, or
    ``WAIT`` with a cluster."""
    if sentinel.is_sentinel_url(url):
        if cluster:
            raise ConfigError("MAS_REDIS_CLUSTER=true and a redis+sentinel:// URL contradict")
        try:
            sentinel.parse(url)
        except ValueError as exc:
            raise ConfigError(f"Redis URL: {exc}") from None
    if cluster and wait_replicas:
        raise ConfigError(
            "MAS_REDIS_WAIT_REPLICAS needs one primary (a redis:// or redis+sentinel:// URL); "
            "with a Redis Cluster the WAIT would not follow the writes to their shards"
        )


def _tracing(env: Mapping[str, str]) -> str | None:
    """The span exporter the ``OTEL_*`` variables ask for, or None (tracing off); ConfigError
    when they ask for what mas cannot do, or the ``otel`` extra is not installed."""
    try:
        exporter = tracing.exporter_from(env)
    except tracing.TracingConfigError as exc:
        raise ConfigError(str(exc)) from None
    missing = exporter and missing_extra("tracing (the OTEL_* variables ask for it)", "otel")
    if missing:
        raise ConfigError(missing)
    return exporter


def _api_token(read: EnvSettings) -> str | None:
    """The token the agent must present, or None when ``MAS_SIDECAR_INSECURE_NO_TOKEN`` says
    that any local process may use the API; ConfigError when neither is set, or both."""
    token = read.secret(TOKEN_ENV)
    insecure = read.flag("MAS_SIDECAR_INSECURE_NO_TOKEN")
    if token is not None and insecure:
        raise ConfigError(
            f"MAS_SIDECAR_INSECURE_NO_TOKEN=true and a token ({TOKEN_ENV}) contradict each other"
        )
    if token is None and not insecure:
        raise ConfigError(
            f"the API needs its agent's token: set {TOKEN_FILE_ENV} (or {TOKEN_ENV}); "
            "MAS_SIDECAR_INSECURE_NO_TOKEN=true lets any local process use it instead"
        )
    if token is None:
        return None
    try:
        return check_token(token)
    except ValueError as exc:
        raise ConfigError(f"{TOKEN_ENV}: {exc}") from None


def _replica(env: Mapping[str, str]) -> str:
    """``MAS_REPLICA_ID``, else ``<hostname>-<pid>``: letters, digits, ``.``, ``_`` and ``-``
    (it ends the names of the replica's reply streams, which end with a sender's id)."""
    replica = env.get("MAS_REPLICA_ID") or f"{socket.gethostname()}-{os.getpid()}"
    if not REPLICA.match(replica):
        raise ConfigError(
            f"replica id {replica[:80]!r} must be 1-128 letters, digits, '.', '_' or '-'"
        )
    return replica
