"""``mas sidecar`` / ``python -m mas_sidecar``: parse the command line and serve on 127.0.0.1
(and the probes on ``MAS_METRICS_ADDRESS`` when it is set).

Called by the ``mas`` CLI and by ``python -m mas_sidecar``; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from mas_core.telemetry import logs
from mas_sidecar.api.app import build_app
from mas_sidecar.api.probes import build_probes_app
from mas_sidecar.api.server import serve
from mas_sidecar.config import SidecarConfig
from mas_sidecar.errors import ConfigError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mas sidecar",
        description="Run the mas sidecar for one agent replica (other settings: MAS_* variables).",
    )
    parser.add_argument("--agent-id", help="namespace/name of the agent (MAS_AGENT_ID)")
    parser.add_argument("--port", type=int, help="port on 127.0.0.1 (MAS_SIDECAR_PORT)")
    parser.add_argument(
        "--redis-url",
        help="redis://[user:password@]host:port/db (MAS_REDIS_URL_FILE, MAS_REDIS_URL); a "
        "password here is visible to every local user",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = SidecarConfig.build(
            agent_id=args.agent_id, port=args.port, redis_url=args.redis_url
        )
    except ConfigError as exc:
        print(f"mas sidecar: {exc}", file=sys.stderr)
        return 2
    logs.setup(
        level=config.log_level, log_format=config.log_format, fields={"agent_id": config.agent_id}
    )
    if config.api_token is None:
        logging.getLogger("mas_sidecar").warning(
            "MAS_SIDECAR_INSECURE_NO_TOKEN: any local process may use this sidecar's API"
        )
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = build_app(config)
    serve(app, config, build_probes_app(app) if config.metrics_address is not None else None)
    return 0
