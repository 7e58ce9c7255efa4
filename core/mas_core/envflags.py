"""Settings from the environment, read the same way by every mas program.

Booleans (:func:`env_flag`): ``1``/``true``/``yes``/``on`` and ``0``/``false``/``no``/``off``
(any case) or empty; anything else is a mistake worth stopping for.

Secrets (:func:`env_secret`): a secret setting ``NAME`` can be given as the variable itself or,
better, as ``NAME_FILE``, the path of a file holding it (surrounding whitespace, such as a final
newline, is dropped). A file with tight permissions is private to its owner, whereas a
process's environment is copied into every child it starts and shows in ``/proc/PID/environ``
to anyone who may trace it. Setting both is a mistake worth stopping for.

Used by the sidecar's and the operator's config objects and by the SDK's client, which turn the
``ValueError`` into their own configuration error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})
FILE_SUFFIX = "_FILE"


def env_flag(env: Mapping[str, str], name: str) -> bool:
    """The boolean variable ``name`` of ``env`` (false when unset); ValueError when invalid."""
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, not {raw!r}")


def env_secret(env: Mapping[str, str], name: str) -> str | None:
    """The secret ``name`` from ``env``: the variable ``name``, or the content of the file that
    ``name`` + ``_FILE`` names; None when neither is set. ValueError when both are set, or the
    file cannot be read or holds nothing."""
    file_name = name + FILE_SUFFIX
    value, path = env.get(name), env.get(file_name)
    if value and path:
        raise ValueError(f"set {name} or {file_name}, not both")
    if value:
        return value
    if not path:
        return None
    try:
        content = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ValueError(f"{file_name}: cannot read {path}: {reason}") from None
    if not content:
        raise ValueError(f"{file_name}: {path} is empty")
    return content
