"""``mas dashboard --redis-url URL [--host H] [--port N] [--enable-writes]``: serve the dashboard.

Sets up the dashboard's own Redis user (:func:`mas_cli.dashboard_setup.dashboard_url`), and, with
``--enable-writes``, its write token (``--token-file``, made when absent), then serves
:mod:`mas_dashboard.server` until interrupted, printing its URL. ``--setup-only FILE`` only
creates the user and writes the URL of that user to FILE (mode 0600) for a dashboard started
with ``MAS_REDIS_URL_FILE=FILE``: the Helm chart's init container does, so the dashboard's own
container never holds the administrator's password. Called by :mod:`mas_cli.main`;
needs the ``dashboard`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

import redis

from mas_cli.dashboard_setup import TOKEN_MODE, administrator_url, dashboard_url, write_token
from mas_cli.options import RUN_ERROR, USAGE_ERROR, fail, required_redis_url
from mas_core.acl import dashboard_user, masked_url
from mas_core.identity.credentials import write_atomic
from mas_dashboard.server import DashboardSettings, run_dashboard


def run(args: argparse.Namespace) -> int:
    try:
        url = required_redis_url(args)
    except ValueError as exc:
        return fail(str(exc), USAGE_ERROR)
    try:
        own_url, created = dashboard_url(
            administrator_url(url, os.environ), writes=args.enable_writes
        )
    except (redis.RedisError, ValueError) as exc:
        return fail(
            f"cannot set up the dashboard's Redis user at {masked_url(url)}: {exc}", RUN_ERROR
        )
    user = dashboard_user(writes=args.enable_writes)
    if args.setup_only is not None:
        write_atomic(args.setup_only, own_url.encode(), TOKEN_MODE)
        print(f"{user} ready; its URL is in {args.setup_only}", flush=True)
        return 0
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
