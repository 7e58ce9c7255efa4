"""``mas audit verify | tail | export AGENT``: the arguments checked, the trail read from Redis.

Connects with the ``--redis-url`` (or ``MAS_REDIS_URL``/``MAS_REDIS_URL_FILE``) and runs
:mod:`mas_cli.audit_trails`; ``verify`` exits with :data:`~mas_cli.options.TAMPERED` when a
trail fails, :data:`~mas_cli.options.MISMATCHED` when trails disagree about messages
(``--cross``). Called by :mod:`mas_cli.main`; needs the ``local`` extra.
"""

from __future__ import annotations

import argparse
import sys

import redis
from nacl.signing import VerifyKey

from mas_cli.audit_trails import (
    Evidence,
    TrailHeldError,
    cross_verify,
    export_trail,
    load_trust,
    tail_trail,
    verify_trail,
)
from mas_cli.options import MISMATCHED, RUN_ERROR, TAMPERED, USAGE_ERROR, fail, required_redis_url
from mas_core import redis_clients
from mas_core.acl import masked_url
from mas_core.audit.archive import ArchiveError
from mas_core.identity.tokens import KeyFormatError
from mas_core.keys import AgentKeys
from mas_core.names import InvalidAgentIdError, qualify


def run(args: argparse.Namespace) -> int:
    try:
        url = required_redis_url(args)
    except ValueError as exc:
        return fail(str(exc), USAGE_ERROR)
    try:
        agent_id = qualify(args.agent)
    except InvalidAgentIdError as exc:
        return fail(str(exc), USAGE_ERROR)
    trust = None
    if args.action == "verify" and args.trust:
        try:
            trust = load_trust(args.trust)
        except (KeyFormatError, OSError) as exc:
            return fail(f"--trust: {exc}", USAGE_ERROR)
    try:
        client = redis_clients.client(url)
    except ValueError as exc:
        return fail(str(exc), USAGE_ERROR)
    try:
        if args.action == "verify":
            return _verify(client, agent_id, args, trust)
        if args.action == "export":
            if not export_trail(client, agent_id, sys.stdout):
                print(f"no audit entries for {agent_id}", file=sys.stderr)
        else:
            if not client.exists(AgentKeys(agent_id).audit):
                print(f"no audit entries for {agent_id} yet", file=sys.stderr)
            tail_trail(client, agent_id, sys.stdout, last=args.n, follow=args.follow)
    except redis.RedisError as exc:
        where = masked_url(url)
        return fail(f"cannot read the audit trail at {where}: {exc}", RUN_ERROR)
    except TrailHeldError as exc:
        return fail(str(exc), RUN_ERROR)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


def _verify(
    client: redis.Redis,
    agent_id: str,
    args: argparse.Namespace,
    trust: dict[str, VerifyKey] | None,
) -> int:
    """``mas audit verify``: the trail, then (with ``--cross``) its messages; the status."""
    evidence = Evidence(trust, args.archive)
    intact = verify_trail(client, agent_id, sys.stdout, evidence)
    if not args.cross:
        return 0 if intact else TAMPERED
    try:
        consistent = cross_verify(client, agent_id, sys.stdout, evidence)
    except (ArchiveError, OSError) as exc:
        return fail(f"cannot read the archive: {exc}", RUN_ERROR)
    if not intact:
        return TAMPERED
    return 0 if consistent else MISMATCHED
