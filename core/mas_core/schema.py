"""The base of every resource model users write in YAML (manifests and policies).

Strict (an unknown field is an error, not a silently ignored setting), immutable, and camelCase
in YAML and JSON like Kubernetes resources, snake_case in Python. Used by :mod:`mas_core.manifests`
and :mod:`mas_core.policy`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ResourceModel(BaseModel):
    """Strict, immutable, camelCase on the wire."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )
