"""The ``mas`` command: ``up``, ``sidecar``, ``dead-letters``, ``identity``, ``audit``,
``policy``, ``dashboard``, ``status``, ``redis-server`` and ``redis-sentinel`` (and
``mas --version``).

``mas up DIR`` runs a directory of ``Agent`` manifests locally (:mod:`mas_cli.up_command`);
``mas sidecar ...`` runs one sidecar (:mod:`mas_sidecar`); ``mas dead-letters`` lists, replays
and deletes an agent's dead letters through its sidecar (here: it needs the SDK only);
``mas identity`` creates a trust anchor, issues an agent's credentials into a directory and
shows a token's claims (:mod:`mas_cli.identity_command`, never printing private keys);
``mas audit`` verifies, tails and exports an agent's audit trail (:mod:`mas_cli.audit_command`);
``mas policy`` validates GatewayPolicy manifests as the operator does and publishes them for
sidecars run without it (:mod:`mas_cli.policy_command`);
``mas dashboard`` serves the web dashboard (:mod:`mas_cli.dashboard_command`) and ``mas status``
prints its agents page as a table (:mod:`mas_cli.status_command`);
``mas redis-server`` and ``mas redis-sentinel`` become the Helm chart's embedded Valkey
(:mod:`mas_cli.redis_command`, :mod:`mas_cli.sentinel_command`). User errors (an invalid
manifest, a missing option) print one line and exit with status 2; failures at run time exit
with 1; a trail that fails verification exits with 3, trails that disagree about messages
(``--cross``) with 4.

This module loads with the SDK's dependencies alone (``pip install mas``): each command's module
is imported when that command runs, after checking that the packages of the extra it needs are
installed; without them the command says which extra in one line and exits with 1.

The console script ``mas`` (see ``pyproject.toml``) calls :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from mas.client import SidecarClient
from mas.errors import MasError
from mas_cli.local.users import DEFAULT_UID_BASE
from mas_cli.options import RUN_ERROR, USAGE_ERROR, fail
from mas_cli.server_arguments import add_redis_sentinel_parser, add_redis_server_parser
from mas_core.extras import missing_extra

# command -> (the module whose ``run(args)`` runs it, the extra it needs)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("mas_cli.up_command", "local"),
    "identity": ("mas_cli.identity_command", "local"),
    "audit": ("mas_cli.audit_command", "local"),
    "policy": ("mas_cli.policy_command", "local"),
    "dashboard": ("mas_cli.dashboard_command", "dashboard"),
    "status": ("mas_cli.status_command", "dashboard"),
    "redis-server": ("mas_cli.redis_command", "local"),
    "redis-sentinel": ("mas_cli.sentinel_command", "local"),
}


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _uid(text: str) -> int:
    value = int(text)
    if not 1000 <= value <= 4_000_000_000:
        raise argparse.ArgumentTypeError(f"must be 1000 to 4000000000, not {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand except ``sidecar`` (passed through as is)."""
    parser = argparse.ArgumentParser(prog="mas", description="multi-agent messaging system")
    parser.add_argument("--version", action="version", version=f"mas {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run a directory of Agent manifests on this machine")
    up.add_argument("directory", type=Path, metavar="DIR", help="directory of *.yaml manifests")
    up.add_argument(
        "--redis-url",
        metavar="URL",
        help="use this Redis instead of starting an embedded one (default: $MAS_REDIS_URL, or "
        "the file $MAS_REDIS_URL_FILE names; a password on this command line is visible to "
        "every local process, the agents included)",
    )
    up.add_argument(
        "--duration", type=_positive, metavar="S", help="stop S seconds after the agents started"
    )
    up.add_argument(
        "--secrets",
        type=Path,
        metavar="FILE",
        help="values of the Secrets the agents' spec.env valueFrom.secretKeyRef name, one "
        "secret-name/key=value per line (default: DIR/.secrets if it exists; a reference found "
        "in neither takes the variable of its name from this environment)",
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        default=Path(".mas"),
        help="what outlives a run: the embedded Redis's data (DIR/redis: messages not yet "
        "delivered, agents' state, audit trails, Redis users) and the trust anchor's public key "
        "(default .mas)",
    )
    up.add_argument(
        "--ephemeral",
        action="store_true",
        help="run the embedded Redis on a temporary directory: start empty, keep nothing",
    )
    up.add_argument(
        "--log-dir",
        type=Path,
        metavar="DIR",
        help="where sidecars log (default: the state directory's logs/)",
    )
    up.add_argument(
        "--audit-archive",
        type=Path,
        metavar="DIR",
        help="where audit entries are archived before a policy's audit.retention trims them "
        "from Redis (default: the state directory's audit/)",
    )
    up.add_argument(
        "--checkpoint-every",
        type=_positive,
        default=10.0,
        metavar="S",
        help="seconds between signed checkpoints of every audit trail (default 10)",
    )
    up.add_argument(
        "--uid-base",
        type=_uid,
        default=DEFAULT_UID_BASE,
        metavar="UID",
        help="run as root: agent i runs as uid UID+2i, its sidecars as UID+2i+1, ids without "
        f"a user of their own (default {DEFAULT_UID_BASE})",
    )

    up.add_argument("--no-dashboard", action="store_true", help="do not start the web dashboard")
    up.add_argument(
        "--dashboard-writes",
        action="store_true",
        help="let the dashboard replay and delete dead letters, with the token it writes to "
        "the state directory's dashboard-token",
    )

    commands.add_parser(
        "sidecar", help="run one sidecar (mas sidecar --help for its options)", add_help=False
    )

    sidecar_url = argparse.ArgumentParser(add_help=False)
    sidecar_url.add_argument(
        "--sidecar",
        metavar="URL",
        default=os.environ.get("MAS_SIDECAR_URL"),
        help="the agent's sidecar (default $MAS_SIDECAR_URL; its token: $MAS_SIDECAR_TOKEN or "
        "the file $MAS_SIDECAR_TOKEN_FILE)",
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

    identity = commands.add_parser("identity", help="create trust anchors and agent credentials")
    steps = identity.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = steps.add_parser("init-anchor", help="create a trust anchor (its key pair) in DIR")
    init.add_argument("directory", type=Path, metavar="DIR")
    issue = steps.add_parser("issue", help="write an agent's key, token and trusted anchor")
    issue.add_argument("--anchor", type=Path, required=True, metavar="DIR", help="anchor dir")
    issue.add_argument("--agent-id", required=True, metavar="NS/NAME", help="the agent's id")
    issue.add_argument("--role", action="append", default=[], metavar="R", help="repeatable")
    issue.add_argument("--capability", action="append", default=[], metavar="C", help="repeatable")
    issue.add_argument(
        "--ttl", type=_positive_int, default=3600, metavar="S", help="token lifetime (3600)"
    )
    issue.add_argument("out", type=Path, metavar="OUT_DIR", help="the agent's credentials dir")
    show = steps.add_parser("show", help="print the claims of the token in DIR (no keys)")
    show.add_argument("directory", type=Path, metavar="DIR", help="an agent's credentials dir")

    trail = commands.add_parser("audit", help="verify, tail or export an agent's audit trail")
    redis_url = argparse.ArgumentParser(add_help=False)
    redis_url.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis holding the trail: redis://, or redis+sentinel://HOST:PORT,.../PRIMARY "
        "(default: $MAS_REDIS_URL, or the file $MAS_REDIS_URL_FILE names)",
    )
    redis_url.add_argument("agent", metavar="AGENT", help="the agent's id, namespace/name")
    audit_actions = trail.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = audit_actions.add_parser(
        "verify", parents=[redis_url], help="check the hash chains against the checkpoints"
    )
    check.add_argument(
        "--trust",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="the trust anchor's public key (a PEM file, or a directory of *.pub files), to "
        "check the checkpoints' signatures with (repeatable)",
    )
    check.add_argument(
        "--archive",
        type=Path,
        metavar="DIR",
        help="the control plane's audit archive: verify the whole trail, across its cuts",
    )
    check.add_argument(
        "--cross",
        action="store_true",
        help="also check its messages against the trails of the agents it exchanged them with",
    )
    audit_actions.add_parser("export", parents=[redis_url], help="every entry as JSON lines")
    tail = audit_actions.add_parser("tail", parents=[redis_url], help="the last entries")
    tail.add_argument("-n", type=_positive_int, default=20, metavar="N", help="how many (20)")
    tail.add_argument("-f", "--follow", action="store_true", help="then wait for new ones")
    _add_policy_parser(commands)
    _add_dashboard_parsers(commands)
    add_redis_server_parser(commands)
    add_redis_sentinel_parser(commands)
    return parser


def _add_policy_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = commands.add_parser(
        "policy", help="validate GatewayPolicy manifests, or publish them without the operator"
    )
    actions = policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    path = argparse.ArgumentParser(add_help=False)
    path.add_argument(
        "path", type=Path, metavar="FILE|DIR", help="a YAML file, or a directory of *.yaml files"
    )
    actions.add_parser(
        "validate",
        parents=[path],
        help="report every error the operator would report, and the compiled revision",
    )
    apply = actions.add_parser(
        "apply",
        parents=[path],
        help="validate, compile and publish: these policies become the whole policy in force",
    )
    apply.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis the sidecars read their policy from: redis://, or "
        "redis+sentinel://HOST:PORT,.../PRIMARY (default: $MAS_REDIS_URL, or the file "
        "$MAS_REDIS_URL_FILE names)",
    )


def _version() -> str:
    try:
        return importlib.metadata.version("mas")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _add_dashboard_parsers(commands: Any) -> None:
    """``mas dashboard`` and ``mas status``."""
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument(
        "--redis-url",
        metavar="URL",
        help="the agents' Redis: the URL of a dashboard user, or of an administrator, who then "
        "creates the dashboard's own user (default: $MAS_REDIS_URL, or the file "
        "$MAS_REDIS_URL_FILE names)",
    )
    board = commands.add_parser("dashboard", parents=[url], help="serve the web dashboard")
    board.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    board.add_argument("--port", type=int, default=8700, metavar="N", help="port (8700; 0: any)")
    board.add_argument(
        "--enable-writes",
        action="store_true",
        help="allow replaying and deleting dead letters (each needs the write token)",
    )
    board.add_argument(
        "--token-file",
        type=Path,
        default=Path(".mas/dashboard-token"),
        metavar="FILE",
        help="the write token (made there, mode 0600, when absent; default .mas/dashboard-token)",
    )
    board.add_argument(
        "--setup-only",
        type=Path,
        metavar="FILE",
        help="only create the dashboard's Redis user and write its URL to FILE (mode 0600); "
        "the administrator's password may also come from MAS_REDIS_PASSWORD(_FILE)",
    )
    status = commands.add_parser(
        "status", parents=[url], help="the agents: replicas, backlog, rates, audit chains"
    )
    status.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="table or json"
    )


async def _dead_letters(args: argparse.Namespace) -> None:
    async with SidecarClient(args.sidecar) as client:
        if args.action == "list":
            entries = await client.dead_letters(limit=args.limit)
            for entry in entries:
                sys.stdout.write(orjson.dumps(entry).decode() + "\n")
            if not entries:
                print("no dead letters", file=sys.stderr)
        elif args.action == "replay":
            message_id = await client.replay_dead_letter(args.id)
            print(f"replayed {args.id} as message {message_id}")
        else:
            await client.delete_dead_letter(args.id)
            print(f"deleted {args.id}")


def _dead_letters_command(args: argparse.Namespace) -> int:
    if not args.sidecar:
        return fail("no sidecar URL: pass --sidecar or set MAS_SIDECAR_URL", USAGE_ERROR)
    try:
        asyncio.run(_dead_letters(args))
    except MasError as exc:
        return fail(str(exc), RUN_ERROR)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return fail(f"cannot reach the sidecar at {args.sidecar}: {exc}", RUN_ERROR)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mas`` command with ``argv`` (default: the process arguments); the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["sidecar"]:
        problem = missing_extra("mas sidecar", "sidecar")
        if problem:
            return fail(problem, RUN_ERROR)
        sidecar_main: Callable[[Sequence[str]], int] = importlib.import_module(
            "mas_sidecar.main"
        ).main
        return sidecar_main(arguments[1:])
    args = build_parser().parse_args(arguments)
    if args.command == "dead-letters":
        return _dead_letters_command(args)
    module, extra = COMMANDS[args.command]
    problem = missing_extra(f"mas {args.command}", extra)
    if problem:
        return fail(problem, RUN_ERROR)
    run: Callable[[argparse.Namespace], int] = importlib.import_module(module).run
    return run(args)
