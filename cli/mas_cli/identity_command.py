"""``mas identity init-anchor | issue | show``: trust anchors and agents' credentials on disk.

Creates a trust anchor (its key pair) in a directory, issues an agent's credentials into a
directory (:mod:`mas_core.identity.credentials`) and shows a token's claims, never printing a
private key. Called by :mod:`mas_cli.main`; needs the ``local`` extra.
"""

from __future__ import annotations

import argparse
import time

import orjson

from mas_cli.options import RUN_ERROR, USAGE_ERROR, fail
from mas_core.identity.credentials import (
    create_anchor,
    issue_agent_credentials,
    load_agent_credentials,
    load_anchor,
)
from mas_core.identity.tokens import IdentityError
from mas_core.names import InvalidAgentIdError, qualify


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "init-anchor":
            anchor = create_anchor(args.directory)
            print(f"created trust anchor {anchor.kid} in {args.directory}")
        elif args.action == "issue":
            try:
                agent_id = qualify(args.agent_id)
            except InvalidAgentIdError as exc:
                return fail(str(exc), USAGE_ERROR)
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
        return fail(str(exc), RUN_ERROR)
    except OSError as exc:
        return fail(f"{exc.strerror or exc}: {exc.filename}", RUN_ERROR)
    return 0
