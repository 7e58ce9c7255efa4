"""The ``mas`` command: ``up``, ``sidecar``, ``dead-letters``, ``identity`` and ``audit``.

``mas up DIR`` runs a directory of ``Agent`` manifests locally (:mod:`mas.local.supervisor`);
``mas sidecar ...`` runs one sidecar (:mod:`mas_sidecar`); ``mas dead-letters`` lists, replays
and deletes an agent's dead letters through its sidecar; ``mas identity`` creates a trust anchor,
issues an agent's credentials into a directory and shows a token's claims
(:mod:`mas.credentials`, never printing private keys); ``mas audit`` verifies, tails and exports
an agent's audit trail (:mod:`mas.audit_commands`); ``mas redis-server`` becomes the Helm
chart's embedded Valkey (:mod:`mas.redis_command`). User errors (an invalid manifest, a missing
option) print one line and exit with status 2; failures at run time exit with 1; a trail that
fails verification exits with 3, trails that disagree about messages (``--cross``) with 4.

The console script ``mas`` (see ``pyproject.toml``) calls :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import orjson
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from mas import sentinel, sentinel_command
from mas.acl import masked_url
from mas.audit_archive import ArchiveError
from mas.audit_commands import (
    Evidence,
    TrailHeldError,
    cross_verify,
    export_trail,
    load_trust,
    tail_trail,
    verify_trail,
)
from mas.client import SidecarClient
from mas.credentials import (
    create_anchor,
    issue_agent_credentials,
    load_agent_credentials,
    load_anchor,
)
from mas.envflags import env_secret
from mas.errors import MasError
from mas.identity import IdentityError, KeyFormatError
from mas.local.processes import ProcessStartError
from mas.local.redis_server import RedisServerError
from mas.local.supervisor import Supervisor, UpOptions
from mas.local.users import DEFAULT_UID_BASE
from mas.manifests import ManifestError, load_directory
from mas.names import InvalidAgentIdError, qualify
from mas.policy.document import compile_policies
from mas.redis_command import add_parser as add_redis_server_parser
from mas.redis_command import run as run_redis_server

USAGE_ERROR = 2
RUN_ERROR = 1
TAMPERED = 3  # ``mas audit verify`` found an altered, removed or reordered entry
MISMATCHED = 4  # ``mas audit verify --cross``: trails disagree about messages


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
    add_redis_server_parser(commands)
    sentinel_command.add_parser(commands)
    return parser


def _fail(message: str, status: int) -> int:
    print(f"mas: error: {message}", file=sys.stderr)
    return status


def _redis_url(args: argparse.Namespace) -> str | None:
    """``--redis-url``, else ``MAS_REDIS_URL`` or the file ``MAS_REDIS_URL_FILE`` names
    (ValueError when both are set or the file cannot be read)."""
    return str(args.redis_url) if args.redis_url else env_secret(os.environ, "MAS_REDIS_URL")


def _up(args: argparse.Namespace) -> int:
    try:
        agents, policies = load_directory(args.directory)
        redis_url = _redis_url(args)
    except (ManifestError, ValueError) as exc:
        return _fail(str(exc), USAGE_ERROR)
    if args.ephemeral and redis_url:
        return _fail("--ephemeral is for the embedded Redis, not with a Redis URL", USAGE_ERROR)
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
        redis_url=redis_url,
        duration=args.duration,
        uid_base=args.uid_base,
        ephemeral=args.ephemeral,
        audit_archive=(args.audit_archive or args.state_dir / "audit").resolve(),
        checkpoint_every=args.checkpoint_every,
    )
    try:
        return Supervisor(agents, policy, options, sys.stdout).run()
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


def _identity(args: argparse.Namespace) -> int:
    try:
        if args.action == "init-anchor":
            anchor = create_anchor(args.directory)
            print(f"created trust anchor {anchor.kid} in {args.directory}")
        elif args.action == "issue":
            try:
                agent_id = qualify(args.agent_id)
            except InvalidAgentIdError as exc:
                return _fail(str(exc), USAGE_ERROR)
            credentials = issue_agent_credentials(
                load_anchor(args.anchor),
                args.out,
                agent_id=agent_id,
                roles=args.role,
                capabilities=args.capability,
                ttl_seconds=args.ttl,
            )
            claims = credentials.claims
            print(
                f"issued credentials of {claims.sub} (key {claims.agent_kid}, anchor {claims.kid}, "
                f"expires {claims.exp}) in {args.out}"
            )
        else:
            credentials = load_agent_credentials(args.directory, check_time=False)
            shown = credentials.claims.to_dict() | {
                "expired": credentials.claims.exp <= time.time(),
                "trusted_anchors": list(credentials.trusted_kids),
            }
            print(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
    except IdentityError as exc:
        return _fail(str(exc), RUN_ERROR)
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}", RUN_ERROR)
    return 0


def _audit(args: argparse.Namespace) -> int:
    try:
        url = _redis_url(args)
    except ValueError as exc:
        return _fail(str(exc), USAGE_ERROR)
    if not url:
        return _fail(
            "no Redis URL: pass --redis-url or set MAS_REDIS_URL_FILE (or MAS_REDIS_URL)",
            USAGE_ERROR,
        )
    try:
        agent_id = qualify(args.agent)
    except InvalidAgentIdError as exc:
        return _fail(str(exc), USAGE_ERROR)
    trust = None
    if args.action == "verify" and args.trust:
        try:
            trust = load_trust(args.trust)
        except (KeyFormatError, OSError) as exc:
            return _fail(f"--trust: {exc}", USAGE_ERROR)
    try:
        client = sentinel.client(url)
    except ValueError as exc:
        return _fail(str(exc), USAGE_ERROR)
    try:
        if args.action == "verify":
            return _verify(client, agent_id, args, trust)
        if args.action == "export":
            export_trail(client, agent_id, sys.stdout)
        else:
            tail_trail(client, agent_id, sys.stdout, last=args.n, follow=args.follow)
    except redis.RedisError as exc:
        where = masked_url(url)
        return _fail(f"cannot read the audit trail at {where}: {exc}", RUN_ERROR)
    except TrailHeldError as exc:
        return _fail(str(exc), RUN_ERROR)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def _verify(
    client: redis.Redis,
    agent_id: str,
    args: argparse.Namespace,
    trust: dict[str, Ed25519PublicKey] | None,
) -> int:
    """``mas audit verify``: the trail, then (with ``--cross``) its messages; the status."""
    evidence = Evidence(trust, args.archive)
    intact = verify_trail(client, agent_id, sys.stdout, evidence)
    if not args.cross:
        return 0 if intact else TAMPERED
    try:
        consistent = cross_verify(client, agent_id, sys.stdout, evidence)
    except (ArchiveError, OSError) as exc:
        return _fail(f"cannot read the archive: {exc}", RUN_ERROR)
    if not intact:
        return TAMPERED
    return 0 if consistent else MISMATCHED


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
    if args.command == "identity":
        return _identity(args)
    if args.command == "audit":
        return _audit(args)
    if args.command == "redis-server":
        return run_redis_server(args)
    if args.command == "redis-sentinel":
        return sentinel_command.run(args)
    if not args.sidecar:
        return _fail("no sidecar URL: pass --sidecar or set MAS_SIDECAR_URL", USAGE_ERROR)
    try:
        asyncio.run(_dead_letters(args))
    except MasError as exc:
        return _fail(str(exc), RUN_ERROR)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _fail(f"cannot reach the sidecar at {args.sidecar}: {exc}", RUN_ERROR)
    return 0
