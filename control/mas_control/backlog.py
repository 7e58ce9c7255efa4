"""An agent's inbox backlog, measured from Redis in a bounded number of cheap commands.

An agent's inbox is one stream per sender, ``mas:{agent}:in:<sender>``, each read by the consumer
group :data:`~mas_core.keys.CONSUMER_GROUP`; the senders are listed in the set
``mas:{agent}:senders`` (:mod:`mas_core.keys`). A message is in the backlog until a replica acks
it: *waiting* (not yet delivered: the group's ``lag``) or *pending* (leased to a replica). What
one round costs, for ``n`` sender streams visited:

1. ``SSCAN`` of the senders set from where the last round stopped (usually one call);
2. one pipeline of ``XINFO GROUPS`` per stream: the group's ``lag``, ``pending`` and
   ``last-delivered-id``;
3. only for the streams with a backlog, one pipeline of ``XPENDING`` (summary form: the oldest
   pending entry's id) where messages are pending, else ``XRANGE (<last-delivered> + COUNT 1``
   (the oldest waiting entry); and ``XLEN`` where there is no group yet or Redis cannot tell its
   lag (the sidecars delete what they ack, so the length is what is unacked).

So an idle agent costs ``1 + n`` commands in two round trips, a busy one at most ``1 + 3n`` in
three. A round visits at most ``max_streams`` streams (plus what one ``SSCAN`` of a small,
compactly encoded set returns at once); an agent with more senders is covered over several rounds,
each stream's last counts kept meanwhile, and streams whose sender left the set are forgotten once
a full pass of the set no longer finds them. The age of the oldest message comes from its entry id
(the time Redis appended it). Nothing here reads a message's content beyond that one entry of
``XRANGE``, and nothing is written.

Used by the operator (:mod:`mas_operator.redis_admin`), which exports the result as Prometheus
gauges and in each Agent's status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from mas_core.keys import CONSUMER_GROUP, AgentKeys

MAX_STREAMS = 256  # sender streams one round visits, at most


@dataclass(frozen=True)
class StreamBacklog:
    """One sender stream's part of the backlog."""

    waiting: int = 0  # not delivered yet
    pending: int = 0  # delivered to a replica, not acked yet
    oldest_ms: int | None = None  # entry-id time of its oldest unacked message


@dataclass(frozen=True)
class InboxBacklog:
    """The agent's inbox: messages not yet acked, how many of them are leased, and when the
    oldest was appended (None: no message waits)."""

    messages: int
    pending: int
    oldest_ms: int | None
    streams: int  # sender streams counted

    def oldest_age_seconds(self, now_ms: int) -> int:
        """Seconds since the oldest unacked message was appended, at ``now_ms``; 0 when none
        (or when its id lies in the future: a sender's clock is not trusted)."""
        if self.oldest_ms is None:
            return 0
        return max(0, (now_ms - self.oldest_ms) // 1000)


def _id_ms(entry_id: Any) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.partition("-")[0])


def _group(groups: Any) -> dict[Any, Any] | None:
    """The inbox consumer group among a stream's ``XINFO GROUPS``, or None."""
    if not isinstance(groups, list):
        return None
    for group in groups:
        name = group.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == CONSUMER_GROUP:
            return dict(group)
    return None


@dataclass
class InboxMeter:
    """Measures one agent's inbox, round after round (it keeps the set's scan position and the
    counts of the streams a round did not visit)."""

    agent_id: str
    max_streams: int = MAX_STREAMS
    _cursor: int = 0
    _counts: dict[str, StreamBacklog] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)

    def measure(self, client: redis.Redis) -> InboxBacklog:
        """One round (see the module's docstring); raises :class:`redis.RedisError`."""
        keys = AgentKeys(self.agent_id)
        if self._cursor == 0:
            self._seen = set()
        senders: list[str] = []
        while len(senders) < self.max_streams:
            self._cursor, members = client.sscan(keys.senders, self._cursor, count=self.max_streams)
            senders += [m.decode() if isinstance(m, bytes) else str(m) for m in members]
            if self._cursor == 0:
                break
        streams = list(dict.fromkeys(keys.inbox(sender) for sender in senders))
        with client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
            infos = pipe.execute(raise_on_error=False)
        follow_ups: list[tuple[str, dict[Any, Any] | None]] = []
        for stream, info in zip(streams, infos, strict=True):
            if isinstance(info, Exception):  # the stream is gone (trimmed away, deleted)
                self._counts.pop(stream, None)
                continue
            self._seen.add(stream)
            group = _group(info)
            if group is not None and group.get("lag") == 0 and not group.get("pending"):
                self._counts[stream] = StreamBacklog()
            else:
                follow_ups.append((stream, group))
        if follow_ups:
            self._follow_up(client, follow_ups)
        if self._cursor == 0:  # a full pass of the set: forget the streams it no longer lists
            self._counts = {s: c for s, c in self._counts.items() if s in self._seen}
        counts = self._counts.values()
        oldest = [c.oldest_ms for c in counts if c.oldest_ms is not None]
        return InboxBacklog(
            messages=sum(c.waiting + c.pending for c in counts),
            pending=sum(c.pending for c in counts),
            oldest_ms=min(oldest) if oldest else None,
            streams=len(self._counts),
        )

    def _follow_up(
        self, client: redis.Redis, streams: list[tuple[str, dict[Any, Any] | None]]
    ) -> None:
        """The oldest message of each stream with a backlog, and its length where the group
        cannot tell its lag (acked entries are deleted, so the length is what is unacked)."""
        with client.pipeline(transaction=False) as pipe:
            for stream, group in streams:
                pending, lag = _pending_and_lag(group)
                if pending:
                    pipe.xpending(stream, CONSUMER_GROUP)
                elif lag is not None and group is not None:
                    start = group.get("last-delivered-id") or b"0-0"
                    last = start.decode() if isinstance(start, bytes) else str(start)
                    pipe.xrange(stream, min=f"({last}", count=1)
                else:
                    pipe.xrange(stream, count=1)
                if lag is None:
                    pipe.xlen(stream)
            replies = iter(pipe.execute(raise_on_error=False))
        for stream, group in streams:
            pending, lag = _pending_and_lag(group)
            first = next(replies)
            if pending:
                oldest = first.get("min") if isinstance(first, dict) else None
            else:
                oldest = first[0][0] if isinstance(first, list) and first else None
            if lag is None:
                length = next(replies)
                lag = max(0, length - pending) if isinstance(length, int) else 0
            self._counts[stream] = StreamBacklog(
                waiting=lag, pending=pending, oldest_ms=_id_ms(oldest) if oldest else None
            )


def _pending_and_lag(group: dict[Any, Any] | None) -> tuple[int, int | None]:
    """A group's pending count and lag (None: no group yet, or Redis cannot tell its lag)."""
    if group is None:
        return 0, None
    lag = group.get("lag")
    return int(group.get("pending") or 0), int(lag) if lag is not None else None
