"""Typed reads of ``MAS_*`` settings from the environment, one parser and one wording for every
mas program.

:class:`EnvSettings` wraps an environment mapping and the program's own configuration error
class; each read returns a typed value (the default when the variable is unset or empty,
surrounding whitespace dropped) or raises that class with a message naming the variable, the
value given and what it must be. Booleans and secrets are read as :mod:`mas_core.envflags`
reads them. Used by the sidecar's settings (:mod:`mas_sidecar.config`) and the operator's
(:mod:`mas_operator.config`), so the same mistake reads the same in both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson

from mas_core.envflags import env_flag, env_secret
from mas_core.telemetry.logs import LOG_FORMATS

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class EnvSettings:
    """The variables of ``env``, read as typed settings; mistakes raise ``error``."""

    def __init__(self, env: Mapping[str, str], error: type[Exception]) -> None:
        self._env = env
        self._error = error

    def fail(self, message: str) -> NoReturn:
        """Raise the program's configuration error with ``message``."""
        raise self._error(message)

    def raw(self, name: str) -> str:
        """The variable ``name`` without surrounding whitespace; ``""`` when unset."""
        return self._env.get(name, "").strip()

    def text(self, name: str, default: str = "") -> str:
        """A string setting."""
        return self.raw(name) or default

    def flag(self, name: str) -> bool:
        """A boolean setting (false when unset): ``true``/``false`` and their synonyms."""
        try:
            return env_flag(self._env, name)
        except ValueError as exc:
            self.fail(str(exc))

    def secret(self, name: str) -> str | None:
        """A secret setting, from ``name`` or the file ``name_FILE`` names; None when unset."""
        try:
            return env_secret(self._env, name)
        except ValueError as exc:
            self.fail(str(exc))

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """A whole number from ``low`` to ``high``."""
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.fail(f"{name}={raw!r} is not an integer ({_range(low, high)})")
        if not low <= value <= high:
            self.fail(f"{name}={raw} is outside its range ({_range(low, high)})")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        """A number (a fraction allowed) from ``low`` to ``high``."""
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            self.fail(f"{name}={raw!r} is not a number ({_range(low, high)})")
        if not low <= value <= high:
            self.fail(f"{name}={raw} is outside its range ({_range(low, high)})")
        return value

    def choice(self, name: str, choices: Sequence[str], default: str) -> str:
        """One of ``choices`` (upper case), in any case."""
        raw = self.raw(name)
        if not raw:
            return default
        if raw.upper() not in choices:
            self.fail(f"{name}={raw!r} must be one of {', '.join(choices)}")
        return raw.upper()

    def log_level(self) -> str:
        """``MAS_LOG_LEVEL``: one of :data:`LOG_LEVELS` (``INFO``)."""
        return self.choice("MAS_LOG_LEVEL", LOG_LEVELS, "INFO")

    def log_format(self) -> str:
        """``MAS_LOG_FORMAT``: one of :data:`mas_core.telemetry.logs.LOG_FORMATS` (``text``),
        in lower case."""
        raw = self.raw("MAS_LOG_FORMAT")
        if raw.lower() not in ("", *LOG_FORMATS):
            self.fail(f"MAS_LOG_FORMAT={raw!r} must be one of {', '.join(LOG_FORMATS)}")
        return raw.lower() or "text"

    def items(self, name: str) -> tuple[str, ...]:
        """A comma-separated list; empty items are dropped."""
        return tuple(item.strip() for item in self.raw(name).split(",") if item.strip())

    def path(self, name: str, *, absolute: bool = False) -> Path | None:
        """A file or directory path (``absolute``: it must be one); None when unset."""
        raw = self.raw(name)
        if not raw:
            return None
        path = Path(raw)
        if absolute and not path.is_absolute():
            self.fail(f"{name}={raw!r} must be an absolute path")
        return path

    def address(self, name: str) -> tuple[str, int] | None:
        """A listening address ``host:port`` (an IPv6 host in brackets: ``[::]:9090``), the
        host an IP address; None when unset."""
        raw = self.raw(name)
        if not raw:
            return None
        host, colon, port = raw.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            ipaddress.ip_address(host)
            number = int(port)
        except ValueError:
            number = -1
        if not colon or not 1 <= number <= 65535:
            self.fail(
                f"{name}={raw!r} must be an IP address and a port, such as 0.0.0.0:9090 "
                "or [::]:9090"
            )
        return host, number

    def json_object(self, name: str) -> dict[str, Any]:
        """A JSON object; ``{}`` when unset."""
        raw = self.raw(name)
        if not raw:
            return {}
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            self.fail(f"{name} is not valid JSON: {exc}")
        if not isinstance(value, dict):
            self.fail(f"{name} must be a JSON object")
        return value


def _range(low: float, high: float) -> str:
    return f"it must be a number between {_show(low)} and {_show(high)}"


def _show(bound: float) -> str:
    """A bound as written: ``3600000``, ``0.2``."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)
