"""``mas audit verify | tail | export``: read an agent's audit trail straight from Redis.

These are operator tools: they take a Redis URL with read access to the agent's keys (the
sidecars' own credentials cannot read other agents' audit trails). Output is JSON lines, one
entry each: ``{"id", "replica", "seq", "hash", "event"}``. Called by :mod:`mas.cli`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TextIO

import orjson
import redis

from mas.audit import F_EVENT, F_HASH, F_REPLICA, F_SEQ, verify
from mas.keys import AgentKeys

_PAGE = 1000


def _entries(client: redis.Redis, keys: AgentKeys) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
    start: bytes | str = "-"
    while True:
        page = client.xrange(keys.audit, min=start, count=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        start = b"(" + page[-1][0]


def entry_document(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    event: Any
    try:
        event = orjson.loads(fields.get(F_EVENT, b"null"))
    except orjson.JSONDecodeError:
        event = fields.get(F_EVENT, b"").decode(errors="replace")
    return {
        "id": entry_id.decode(),
        "replica": fields.get(F_REPLICA, b"").decode(errors="replace"),
        "seq": int(fields.get(F_SEQ, b"0") or 0),
        "hash": fields.get(F_HASH, b"").decode(errors="replace"),
        "event": event,
    }


def verify_trail(client: redis.Redis, agent_id: str, out: TextIO) -> bool:
    """Print the verification report; True when the trail is intact."""
    keys = AgentKeys(agent_id)
    report = verify(_entries(client, keys), client.hgetall(keys.audit_heads))
    for problem in report.problems:
        print(f"TAMPERED {problem}", file=out)
    verdict = "intact" if report.ok else f"NOT intact: {len(report.problems)} problem(s)"
    print(
        f"audit trail of {agent_id}: {report.entries} entries in {report.chains} chain(s), "
        f"{verdict}",
        file=out,
    )
    return report.ok


def export_trail(client: redis.Redis, agent_id: str, out: TextIO) -> int:
    """Write every entry as a JSON line; how many."""
    count = 0
    for entry_id, fields in _entries(client, AgentKeys(agent_id)):
        out.write(orjson.dumps(entry_document(entry_id, fields)).decode() + "\n")
        count += 1
    return count


def tail_trail(client: redis.Redis, agent_id: str, out: TextIO, *, last: int, follow: bool) -> None:
    """The ``last`` entries, then (with ``follow``) new ones as they come, until interrupted."""
    keys = AgentKeys(agent_id)
    entries = list(reversed(client.xrevrange(keys.audit, count=last)))
    for entry_id, fields in entries:
        out.write(orjson.dumps(entry_document(entry_id, fields)).decode() + "\n")
    out.flush()
    cursor: bytes | str = entries[-1][0] if entries else "$"
    while follow:
        answer = client.xread({keys.audit: cursor}, count=100, block=1000)
        for _stream, new in answer or ():
            for entry_id, fields in new:
                cursor = entry_id
                out.write(orjson.dumps(entry_document(entry_id, fields)).decode() + "\n")
        out.flush()
