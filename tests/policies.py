"""Building and publishing gateway policies in tests."""

from __future__ import annotations

from typing import Any

import redis

from mas_control.provision import publish_policy
from mas_core.policy.document import CompiledPolicy, GatewayPolicySpec, compile_policies


def policy(**spec: Any) -> CompiledPolicy:
    """One policy in namespace ``default``; ``spec`` in the YAML's camelCase, as users write it."""
    spec.setdefault("signing", {"required": False})
    return compile_policies([("default", "test", GatewayPolicySpec.model_validate(spec))])


def publish(client: redis.Redis, **spec: Any) -> CompiledPolicy:
    document = policy(**spec)
    publish_policy(client, document)
    return document
