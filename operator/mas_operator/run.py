"""What ``mas-operator`` runs once :mod:`mas_operator.main` found the operator extra installed.

``mas-operator bootstrap ...`` creates the trust anchor's and the Redis password's Secrets if
absent, and exits (:mod:`mas_operator.bootstrap`, the Helm chart's hook Job). Otherwise this
builds :class:`~mas_operator.config.OperatorConfig`, registers the handlers of
:mod:`mas_operator.handlers` in a fresh kopf registry, serves Prometheus metrics, and runs kopf:
all namespaces or ``MAS_WATCH_NAMESPACES``, peering (one active replica) unless
``MAS_STANDALONE``, a liveness endpoint on ``MAS_HEALTH_PORT``. Exit status 2 on bad settings.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import kopf
from prometheus_client import start_http_server

from mas_core.telemetry import logs
from mas_operator import bootstrap
from mas_operator.config import ConfigError, OperatorConfig
from mas_operator.handlers import operator_settings, register
from mas_operator.metrics import OperatorMetrics


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bootstrap"]:
        return bootstrap.main(arguments[1:])
    try:
        config = OperatorConfig.from_env()
    except ConfigError as exc:
        print(f"mas-operator: {exc}", file=sys.stderr)
        return 2
    logs.setup(level=config.log_level, log_format=config.log_format)
    metrics = OperatorMetrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, registry=metrics.registry)
    registry = kopf.OperatorRegistry()
    register(registry, config, metrics)
    kopf.run(
        registry=registry,
        settings=operator_settings(config),
        standalone=config.standalone,
        peering_name=None if config.standalone else config.peering_name,
        clusterwide=config.clusterwide,
        namespaces=config.namespaces,
        liveness_endpoint=(
            f"http://0.0.0.0:{config.health_port}/healthz" if config.health_port else None
        ),
    )
    return 0
