"""The ``mas`` command: ``mas up``, ``mas sidecar`` and ``mas dead-letters``.

``mas up DIR`` runs a directory of ``Agent`` manifests locally (:mod:`mas.local.supervisor`);
``mas sidecar ...`` runs one sidecar (:mod:`mas_sidecar`); ``mas dead-letters`` lists, replays
and deletes an agent's dead letters through its sidecar. User errors (an invalid manifest, a
missing option) print one line and exit with status 2; failures at run time exit with 1.

The console script ``mas`` (see ``pyproject.toml``) calls :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import orjson

from mas.client import SidecarClient
from mas.errors import MasError
from mas.local.processes import ProcessStartError
from mas.local.redis_server import RedisServerError
from mas.local.supervisor import Supervisor, UpOptions
from mas.manifests import ManifestError, load_agents

USAGE_ERROR = 2
RUN_ERROR = 1


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand except ``sidecar`` (passed through as is)."""
    parser = argparse.ArgumentParser(prog="mas", description="multi-agent messaging system")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run a directory of Agent manifests on this machine")
    up.add_argument("directory", type=Path, metavar="DIR", help="directory of *.yaml manifests")
    up.add_argument(
        "--redis-url", metavar="URL", help="use this Redis instead of starting an embedded one"
    )
    up.add_argument(
        "--duration", type=_positive, metavar="S", help="stop S seconds after the agents started"
    )
    up.add_argument(
        "--log-dir",
        type=Path,
        metavar="DIR",
        default=Path(".mas/logs"),
        help="where sidecars log (default .mas/logs)",
    )

    commands.add_parser(
        "sidecar", help="run one sidecar (mas sidecar --help for its options)", add_help=False
    )

    sidecar_url = argparse.ArgumentParser(add_help=False)
    sidecar_url.add_argument(
        "--sidecar",
        metavar="URL",
        default=os.environ.get("MAS_SIDECAR_URL"),
        help="the agent's sidecar (default $MAS_SIDECAR_URL)",
    )
    dead = commands.add_parser("dead-letters", help="list, replay or delete dead letters")
    actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", parents=[sidecar_url], help="print dead letters as JSON lines, oldest first"
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (max 1000)")
    for name, what in (
        ("replay", "put a dead letter back in the inbox"),
        ("delete", "drop a dead letter"),
    ):
        action = actions.add_parser(name, parents=[sidecar_url], help=what)
        action.add_argument("id", metavar="ID", help="the dead letter's id")
    return parser


def _fail(message: str, status: int) -> int:
    print(f"mas: error: {message}", file=sys.stderr)
    return status


def _up(args: argparse.Namespace) -> int:
    try:
        agents = load_agents(args.directory)
    except ManifestError as exc:
        return _fail(str(exc), USAGE_ERROR)
    options = UpOptions(
        directory=args.directory,
        log_dir=args.log_dir.resolve(),
        redis_url=args.redis_url,
        duration=args.duration,
    )
    try:
        return Supervisor(agents, options, sys.stdout).run()
    except RedisServerError as exc:
        return _fail(str(exc), RUN_ERROR)
    except ProcessStartError as exc:
        return _fail(f"{exc} (sidecar logs in {options.log_dir})", RUN_ERROR)


async def _dead_letters(args: argparse.Namespace) -> None:
    async with SidecarClient(args.sidecar) as client:
        if args.action == "list":
            for entry in await client.dead_letters(limit=args.limit):
                sys.stdout.write(orjson.dumps(entry).decode() + "\n")
        elif args.action == "replay":
            message_id = await client.replay_dead_letter(args.id)
            print(f"replayed {args.id} as message {message_id}")
        else:
            await client.delete_dead_letter(args.id)
            print(f"deleted {args.id}")


def _sidecar(argv: Sequence[str]) -> int:
    from mas_sidecar.main import main as sidecar_main  # noqa: PLC0415 - only this command needs it

    return sidecar_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mas`` command with ``argv`` (default: the process arguments); the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["sidecar"]:
        return _sidecar(arguments[1:])
    args = build_parser().parse_args(arguments)
    if args.command == "up":
        return _up(args)
    if not args.sidecar:
        return _fail("no sidecar URL: pass --sidecar or set MAS_SIDECAR_URL", USAGE_ERROR)
    try:
        asyncio.run(_dead_letters(args))
    except MasError as exc:
        return _fail(str(exc), RUN_ERROR)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _fail(f"cannot reach the sidecar at {args.sidecar}: {exc}", RUN_ERROR)
    return 0
