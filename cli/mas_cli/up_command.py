"""``mas up DIR``: read a directory of manifests, compile its policies, run the supervisor.

Reads the ``Agent`` and ``GatewayPolicy`` manifests (:mod:`mas_cli.manifest_files`) and the
secrets file their ``spec.env`` references may name (:mod:`mas_cli.local.secrets`), and hands
them to :class:`mas_cli.local.supervisor.Supervisor`, which runs everything until the agents
finish, ``--duration`` ends or a signal comes. Called by :mod:`mas_cli.main`; needs the
``local`` extra. ``MAS_LOG_LEVEL`` and ``MAS_LOG_FORMAT`` set the format of its log lines and,
passed on, of its sidecars' (:mod:`mas_core.telemetry.logs`); a bad value stops it at start.
"""

from __future__ import annotations

import argparse
import os
import sys
from urllib.parse import urlsplit

from mas_cli.local.processes import ProcessStartError
from mas_cli.local.redis_server import RedisServerError
from mas_cli.local.secrets import EnvReferences, load_secrets
from mas_cli.local.supervisor import Supervisor, UpOptions
from mas_cli.manifest_files import load_directory, load_external_agents
from mas_cli.options import RUN_ERROR, USAGE_ERROR, fail, redis_url
from mas_core.manifests import ManifestError
from mas_core.policy.document import compile_policies
from mas_core.settings import EnvSettings
from mas_core.telemetry import logs


def run(args: argparse.Namespace) -> int:
    try:
        read = EnvSettings(os.environ, ValueError)  # the sidecars it starts read them too
        logs.setup(level=read.log_level(), log_format=read.log_format())
        agents, policies = load_directory(args.directory)
        externals = tuple(load_external_agents(args.directory, agents))
        url = redis_url(args)
        secrets = load_secrets(args.directory, args.secrets)
    except (ManifestError, ValueError) as exc:
        return fail(str(exc), USAGE_ERROR)
    if secrets.readable_by_others():
        print(
            f"mas: warning: {secrets.source} is readable by other users; chmod 600 it",
            file=sys.stderr,
        )
    if args.no_dashboard and args.dashboard_writes:
        return fail("--dashboard-writes is for the dashboard, not with --no-dashboard", USAGE_ERROR)
    if args.ephemeral and url:
        return fail("--ephemeral is for the embedded Redis, not with a Redis URL", USAGE_ERROR)
    if args.redis_url and urlsplit(args.redis_url).password:
        print(
            "mas: warning: the password in --redis-url shows on this command line to every local "
            "process, the agents included; name a file holding the URL in MAS_REDIS_URL_FILE",
            file=sys.stderr,
        )
    policy = (
        compile_policies((p.metadata.namespace, p.metadata.name, p.spec) for p in policies)
        if policies
        else None
    )
    options = UpOptions(
        directory=args.directory,
        log_dir=(args.log_dir or args.state_dir / "logs").resolve(),
        state_dir=args.state_dir.resolve(),
        redis_url=url,
        duration=args.duration,
        uid_base=args.uid_base,
        ephemeral=args.ephemeral,
        audit_archive=(args.audit_archive or args.state_dir / "audit").resolve(),
        checkpoint_every=args.checkpoint_every,
        references=EnvReferences(secrets, dict(os.environ)),
        dashboard=not args.no_dashboard,
        dashboard_writes=args.dashboard_writes,
        externals=externals,
    )
    try:
        supervisor = Supervisor(agents, policy, options, sys.stdout)
    except ManifestError as exc:  # a spec.env reference with no local value
        return fail(str(exc), USAGE_ERROR)
    try:
        return supervisor.run()
    except RedisServerError as exc:
        return fail(str(exc), RUN_ERROR)
    except ProcessStartError as exc:
        return fail(f"{exc} (sidecar logs in {options.log_dir})", RUN_ERROR)
