"""``mas dashboard --redis-url URL [--host H] [--port N] [--enable-writes]``: serve the dashboard.

Sets up the dashboard's own Redis user (:func:`mas_cli.dashboard_setup.dashboard_url`), and, with
``--enable-writes``, its write token (``--token-file``, made when absent), then serves
:mod:`mas_dashboard.server` until interrupted, printing its URL. Called by :mod:`mas_cli.main`;
needs the ``dashboard`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import redis

from mas_cli.dashboard_setup import dashboard_url, write_token
from mas_cli.options import RUN_ERROR, USAGE_ERROR, fail, redis_url
from mas_core.acl import dashboard_user, masked_url
from mas_dashboard.server import DashboardSettings, run_dashboard


def run(args: argparse.Namespace) -> int:
    try:
        url = redis_url(args)
    except ValueError as exc:
        return fail(str(exc), USAGE_ERROR)
    if not url:
        return fail(
            "no Redis URL: pass --redis-url or set MAS_REDIS_URL_FILE (or MAS_REDIS_URL)",
            USAGE_ERROR,
        )
    try:
        own_url, created = dashboard_url(url, writes=args.enable_writes)
    except (redis.RedisError, ValueError) as exc:
        return fail(
            f"cannot set up the dashboard's Redis user at {masked_url(url)}: {exc}", RUN_ERROR
        )
    user = dashboard_user(writes=args.enable_writes)
    print(
        f"mas dashboard reads {masked_url(own_url)} as {user}"
        + (" (created now)" if created else ""),
        flush=True,
    )
    token = None
    if args.enable_writes:
        try:
            token = write_token(args.token_file)
        except OSError as exc:
            return fail(f"--token-file {args.token_file}: {exc}", USAGE_ERROR)
        print(f"write actions on: they need the token in {args.token_file}", flush=True)
    settings = DashboardSettings(own_url, args.host, args.port, token)

    def started(where: str) -> None:
        print(f"dashboard at {where}", flush=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_dashboard(settings, started))
    except OSError as exc:
        return fail(f"cannot listen on {args.host}:{args.port}: {exc}", RUN_ERROR)
    return 0
