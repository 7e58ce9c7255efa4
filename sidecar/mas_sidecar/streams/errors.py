"""The Redis failures that mean the server cannot be reached now: the connection was lost, refused
or timed out (a restart, a failover, a network fault), as opposed to an answer the server gave.

The background loops catch them, count them and go on after a pause; the writer fails the batch
in flight with them; the HTTP API answers them ``503 redis_unavailable``
(:mod:`mas_sidecar.api.errors`). Used on the Streams bridge, by the gateway checks, by the
set-up (:mod:`mas_sidecar.recovery`) and by the API.
"""

from __future__ import annotations

import redis.exceptions

REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
