"""The operator's settings: one typed object built from ``MAS_*`` environment variables.

Read once at start-up by :mod:`mas_operator.run` (and by the kopf startup handler, which keeps it
in the operator's memo) with the parser the sidecar uses too (:mod:`mas.settings`); bad values
fail at start-up with :class:`ConfigError` naming the variable, never later.

=============================  ==================================================================
variable                       meaning (default)
=============================  ==================================================================
MAS_REDIS_URL                  Redis URL the operator uses as administrator (required):
                               ``redis://``, ``rediss://``, or ``redis+sentinel://`` naming the
                               sentinels and the primary (:mod:`mas_core.sentinel`)
MAS_REDIS_USERNAME             administrator user, overrides the URL's (``default``)
MAS_REDIS_PASSWORD             administrator password, overrides the URL's (from a Secret)
MAS_AGENT_REDIS_URL            Redis URL as the sidecars reach it, without credentials; each
                               agent's Secret gets it with the agent's ACL user (MAS_REDIS_URL
                               with its credentials removed)
MAS_SIDECAR_IMAGE              default sidecar image (``mas:0.1.0``)
MAS_REDIS_WAIT_REPLICAS        replicas every sidecar waits for before it answers 202 (``WAIT``;
                               0: none), passed on to the sidecars; set it to the number of
                               replicas under Sentinel so a failover keeps what got a 202
MAS_REDIS_WAIT_TIMEOUT_MS      how long a sidecar's ``WAIT`` may take (1000)
MAS_WATCH_NAMESPACES           comma-separated namespaces to watch (empty: all namespaces)
MAS_OPERATOR_NAMESPACE         namespace of the trust anchor Secret and policy ConfigMap
                               (``mas-system``)
MAS_ANCHOR_SECRET              the trust anchor's Secret (``mas-trust-anchor``)
MAS_POLICY_CONFIGMAP           the ConfigMap mirroring the compiled policy (``mas-gateway-policy``)
MAS_TOKEN_TTL_SECONDS          lifetime of identity tokens, renewed at half (3600; 60 to 86400)
MAS_STATUS_INTERVAL_SECONDS    how often Agent and policy status is refreshed (10)
MAS_RETRY_SECONDS              delay before a reconcile that failed (e.g. Redis down) is retried
                               (10)
MAS_HEALTH_PORT                kopf liveness endpoint ``/healthz`` (8080; 0 disables)
MAS_METRICS_PORT               Prometheus metrics (9090; 0 disables)
MAS_PEERING_NAME               kopf peering: replicas with the same name run one at a time (mas)
MAS_STANDALONE                 ``true``: no peering (one replica only, or tests)
MAS_LOG_LEVEL                  DEBUG, INFO, WARNING or ERROR (INFO)
MAS_LOG_FORMAT                 ``text`` or ``json`` (one JSON object per line) (text); the
                               sidecars it runs log the same way
MAS_OTLP_ENDPOINT              an OTLP/HTTP collector, ``http(s)://host:port`` (no credentials):
                               the sidecars and SDK agents it runs export spans to it (unset: off)
MAS_OPERATOR_SERVICE_ACCOUNT   the operator's own service account, which no Agent in its
                               namespace may run as (``mas-operator``)
MAS_ALLOW_HOST_NETWORK         ``true``: Agents may set ``spec.hostNetwork`` (false)
MAS_ALLOW_HOST_PATH            ``true``: Agents may mount ``hostPath`` volumes (false)
MAS_ALLOW_SIDECAR_IMAGE        ``true``: Agents may choose another ``spec.sidecar.image`` than
                               MAS_SIDECAR_IMAGE (false)
MAS_AUDIT_CHECKPOINT_SECONDS   how often each agent's audit trail is checkpointed (60; 1 to
                               86400): until the next checkpoint, an agent could still rewrite
                               its newest entries
MAS_AUDIT_ARCHIVE_DIR          directory (a mounted volume) where audit entries are archived
                               before a GatewayPolicy's ``audit.retention`` trims them from
                               Redis; empty: no archive, and nothing is trimmed
=============================  ==================================================================

The ``MAS_ALLOW_*`` settings open what :func:`mas_operator.builders.refusals` refuses by default:
each lets whoever may write Agents reach into the nodes (network, filesystem) or replace the
sidecar that enforces the gateway checks on what the agent sends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from mas_core import sentinel
from mas_core.acl import masked_url
from mas_core.settings import EnvSettings


class ConfigError(ValueError):
    """An operator setting is missing or invalid."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything the operator needs to know."""

    redis_url: str
    agent_redis_url: str
    sidecar_image: str = "mas:0.1.0"
    wait_replicas: int = 0
    wait_timeout_ms: int = 1000
    namespaces: tuple[str, ...] = ()
    operator_namespace: str = "mas-system"
    anchor_secret: str = "mas-trust-anchor"
    policy_configmap: str = "mas-gateway-policy"
    token_ttl_seconds: int = 3600
    status_interval_seconds: float = 10.0
    retry_seconds: float = 10.0
    health_port: int = 8080
    metrics_port: int = 9090
    peering_name: str = "mas"
    standalone: bool = False
    log_level: str = "INFO"
    log_format: str = "text"
    otlp_endpoint: str | None = None
    operator_service_account: str = "mas-operator"
    allow_host_network: bool = False
    allow_host_path: bool = False
    allow_sidecar_image: bool = False
    audit_checkpoint_seconds: float = 60.0
    audit_archive: Path | None = None

    def __repr__(self) -> str:
        return (
            f"OperatorConfig(redis_url={masked_url(self.redis_url)!r}, "
            f"agent_redis_url={masked_url(self.agent_redis_url)!r}, "
            f"sidecar_image={self.sidecar_image!r}, namespaces={self.namespaces!r})"
        )

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorConfig:
        read = EnvSettings(env, ConfigError)
        url = read.raw("MAS_REDIS_URL")
        if not url:
            read.fail("MAS_REDIS_URL is required (the Redis the agents talk through)")
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", *sentinel.SCHEMES) or not parts.hostname:
            read.fail(
                "MAS_REDIS_URL must be redis://HOST:PORT, rediss:// or "
                f"redis+sentinel://HOST:PORT,.../PRIMARY, not {masked_url(url)!r}"
            )
        if sentinel.is_sentinel_url(url):
            try:
                sentinel.parse(url)
            except ValueError as exc:
                read.fail(f"MAS_REDIS_URL: {exc}")
        admin_url = _with_credentials(
            url, env.get("MAS_REDIS_USERNAME"), env.get("MAS_REDIS_PASSWORD")
        )
        agent_url = read.raw("MAS_AGENT_REDIS_URL") or _with_credentials(url, "", "")
        if urlsplit(agent_url).password is not None:
            read.fail("MAS_AGENT_REDIS_URL must not carry credentials")
        return cls(
            redis_url=admin_url,
            agent_redis_url=agent_url,
            sidecar_image=read.text("MAS_SIDECAR_IMAGE", cls.sidecar_image),
            wait_replicas=read.integer("MAS_REDIS_WAIT_REPLICAS", 0, 0, 100),
            wait_timeout_ms=read.integer("MAS_REDIS_WAIT_TIMEOUT_MS", 1000, 1, 60_000),
            namespaces=read.items("MAS_WATCH_NAMESPACES"),
            operator_namespace=read.text("MAS_OPERATOR_NAMESPACE", cls.operator_namespace),
            anchor_secret=read.text("MAS_ANCHOR_SECRET", cls.anchor_secret),
            policy_configmap=read.text("MAS_POLICY_CONFIGMAP", cls.policy_configmap),
            token_ttl_seconds=read.integer("MAS_TOKEN_TTL_SECONDS", 3600, 60, 86_400),
            status_interval_seconds=read.number("MAS_STATUS_INTERVAL_SECONDS", 10, 0.2, 3600),
            retry_seconds=read.number("MAS_RETRY_SECONDS", 10, 0.1, 3600),
            health_port=read.integer("MAS_HEALTH_PORT", 8080, 0, 65535),
            metrics_port=read.integer("MAS_METRICS_PORT", 9090, 0, 65535),
            peering_name=read.text("MAS_PEERING_NAME", cls.peering_name),
            standalone=read.flag("MAS_STANDALONE"),
            log_level=read.log_level(),
            log_format=read.log_format(),
            otlp_endpoint=_otlp_endpoint(read),
            operator_service_account=read.text(
                "MAS_OPERATOR_SERVICE_ACCOUNT", cls.operator_service_account
            ),
            allow_host_network=read.flag("MAS_ALLOW_HOST_NETWORK"),
            allow_host_path=read.flag("MAS_ALLOW_HOST_PATH"),
            allow_sidecar_image=read.flag("MAS_ALLOW_SIDECAR_IMAGE"),
            audit_checkpoint_seconds=read.number("MAS_AUDIT_CHECKPOINT_SECONDS", 60, 1, 86_400),
            audit_archive=read.path("MAS_AUDIT_ARCHIVE_DIR", absolute=True),
        )


def _otlp_endpoint(read: EnvSettings) -> str | None:
    """``MAS_OTLP_ENDPOINT``: an http(s) URL with a host and no credentials (it goes into every
    pod's environment), or None."""
    url = read.raw("MAS_OTLP_ENDPOINT")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        read.fail(f"MAS_OTLP_ENDPOINT must be http(s)://HOST:PORT, not {masked_url(url)!r}")
    if parts.username is not None or parts.password is not None:
        read.fail("MAS_OTLP_ENDPOINT must not carry credentials (it is put in pod environments)")
    return url


def _with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with its user and password replaced where given (``""`` removes them)."""
    parts = urlsplit(url)
    user = parts.username if username is None else username
    secret = parts.password if password is None else password
    host = parts.netloc.rpartition("@")[2]
    if secret:
        userinfo = f"{quote(user or '', safe='')}:{quote(secret, safe='')}@"
    elif user:
        userinfo = f"{quote(user, safe='')}@"
    else:
        userinfo = ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}{host}"))
