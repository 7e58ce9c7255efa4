"""The Redis Streams bridge: where messages are written, leased, answered and kept.

    outbox        addresses this agent's messages and replies and hands them to the gateway
    writer        batches every message and audit write into pipelines, in order
    inbox         this replica's leases on its senders' streams: read, reclaim, ack, nack
    replies       the reply streams of this replica's synchronous requests
    dead_letters  the agent's dead-letter stream: list, replay, delete
    state_store   the agent's persisted state document and its record of handled messages
    registry      this agent's liveness lease and metadata; lookups of other agents
    errors        the Redis failures that mean the server cannot be reached now

The routes of :mod:`mas_sidecar.api` call the bridge; the bridge calls the gateway checks
(:mod:`mas_sidecar.checks`) on every message it sends or leases.

A request the bridge cannot serve raises :class:`~mas_sidecar.errors.Refusal` (code, reason,
when to retry); only :mod:`mas_sidecar.api` turns it into an HTTP answer. Nothing here imports
the API or aiohttp (pyproject.toml's import-linter contracts).
"""
