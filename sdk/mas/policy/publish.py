"""Publish a compiled policy to Redis, where every sidecar picks it up within a second.

The document and its revision are written in one MULTI; sidecars poll the revision. Used by
``mas up``, the tests, and (through the same keys) the operator.
"""

from __future__ import annotations

import redis

from mas.keys import POLICY_DOCUMENT, POLICY_ENFORCERS, POLICY_REVISION
from mas.policy.document import CompiledPolicy


def publish_policy(client: redis.Redis, document: CompiledPolicy) -> None:
    """Make ``document`` the policy in force."""
    with client.pipeline(transaction=True) as pipe:
        pipe.set(POLICY_DOCUMENT, document.to_json())
        pipe.set(POLICY_REVISION, document.revision)
        pipe.execute()


def enforcers(client: redis.Redis) -> dict[str, str]:
    """``agent/replica`` -> the revision that sidecar enforces."""
    return {k.decode(): v.decode() for k, v in client.hgetall(POLICY_ENFORCERS).items()}
