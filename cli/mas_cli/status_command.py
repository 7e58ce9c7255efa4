"""``mas status [--redis-url URL] [-o json]``: the dashboard's agents page, once, as a table.

Reads a :class:`~mas_dashboard.reading.Snapshot` and prints
:func:`mas_dashboard.views.agent_rows` as aligned columns (:func:`format_rows`, pure) or as
JSON; says so when there is no agent. Called by :mod:`mas_cli.main`; needs the ``dashboard``
extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import orjson
import redis

from mas_cli.local.display import aligned
from mas_cli.options import RUN_ERROR, USAGE_ERROR, fail, required_redis_url
from mas_core import redis_clients
from mas_core.acl import masked_url
from mas_dashboard.reading import Verdicts, read_snapshot
from mas_dashboard.views import AgentRow, agent_rows

HEADERS = (
    "AGENT", "LIVE", "CAPABILITIES", "ROLES", "REVISION", "BACKLOG", "OLDEST", "IN/S", "OUT/S",
    "REFUSED/S", "DEAD", "AUDIT",
)  # fmt: skip


def _cells(row: AgentRow) -> tuple[str, ...]:
    audit = "intact" if row.audit_intact else f"broken at #{row.audit_broken_at or '?'}"
    return (
        row.id,
        str(row.replicas_live),
        ",".join(row.capabilities) or "-",
        ",".join(row.roles) or "-",
        ",".join(row.policy_revisions) or "-",
        str(row.backlog),
        "-" if row.oldest_pending_s is None else f"{row.oldest_pending_s:.1f}s",
        f"{row.in_per_s:.2f}",
        f"{row.out_per_s:.2f}",
        f"{row.refusals_per_s:.2f}",
        str(row.dead_letters),
        audit,
    )


def format_rows(rows: list[AgentRow]) -> list[str]:
    """The table's lines: a header, then one line per agent, columns aligned."""
    return aligned([HEADERS, *(_cells(row) for row in rows)])


def run(args: argparse.Namespace) -> int:
    try:
        url = required_redis_url(args)
    except ValueError as exc:
        return fail(str(exc), USAGE_ERROR)
    client = redis_clients.client(url, **redis_clients.NO_CLIENT_SETINFO)
    try:
        snapshot = read_snapshot(client, Verdicts(), time.time_ns() // 1_000_000)
    except redis.RedisError as exc:
        return fail(f"cannot read {masked_url(url)}: {exc}", RUN_ERROR)
    finally:
        client.close()
    rows = agent_rows(snapshot)
    if args.output == "json":
        print(orjson.dumps([dataclasses.asdict(row) for row in rows]).decode())
    elif not rows:
        print("no agents registered")
    else:
        print("\n".join(format_rows(rows)))
    return 0
