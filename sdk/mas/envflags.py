"""Boolean settings from the environment, read the same way by every mas program.

``1``/``true``/``yes``/``on`` and ``0``/``false``/``no``/``off`` (any case) or empty; anything
else is a mistake worth stopping for. Used by the sidecar's and the operator's config objects,
which turn the ``ValueError`` into their own configuration error.
"""

from __future__ import annotations

from collections.abc import Mapping

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """The boolean variable ``name`` of ``env`` (false when unset); ValueError when invalid."""
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {raw!r}")
