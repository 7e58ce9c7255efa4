"""Redis Sentinel URLs: the primary of a replicated Redis, found by asking its sentinels.

A Sentinel URL names the sentinels and the name under which they monitor the primary::

    redis+sentinel://[user:password@]host:port[,host:port...]/<primary name>[/<db>]

(``rediss+sentinel://`` for TLS to the data nodes). The user and password are those of the
data nodes (an agent's ACL user, or the administrator), as in a ``redis://`` URL, so the same
secret file carries either form and :func:`mas_core.acl.agent_redis_url` rewrites both. The
sentinels themselves are asked only who the primary is (``SENTINEL MASTERS`` /
``SENTINEL REPLICAS``), as their ``default`` user without a password: a deployment gives that
user discovery and nothing else (:func:`discovery_acl`), so no client credential can
reconfigure or fail over the sentinels.

Pure: parsing only (clients are made by :mod:`mas_core.redis_clients`). Used by the sidecar's
settings and client factory (:mod:`mas_sidecar.redis_client`), the operator's settings, the
``mas`` command's Sentinel mode and the tests' Sentinel fixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS to data nodes
DEFAULT_PORT = 26379
# Sentinel commands a client needs to find the primary (redis-py asks SENTINEL MASTERS and
# SENTINEL SLAVES, ``mas redis-server`` GET-MASTER-ADDR-BY-NAME); the ``default`` user of a
# sentinel gets these and nothing else.
DISCOVERY_COMMANDS = (
    "ping",
    "sentinel|masters",
    "sentinel|get-master-addr-by-name",
    "sentinel|replicas",
    "sentinel|slaves",
    "sentinel|sentinels",
)


@dataclass(frozen=True)
class SentinelTarget:
    """What a Sentinel URL says."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def data_node_settings(self) -> dict[str, Any]:
        """Connection settings for the data nodes (credentials, database, TLS)."""
        settings: dict[str, Any] = {"db": self.db}
        if self.username:
            settings["username"] = self.username
        if self.password:
            settings["password"] = self.password
        if self.tls:
            settings["ssl"] = True
        return settings


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse(url: str) -> SentinelTarget:
    """The target of a ``redis+sentinel://`` URL; ValueError (without the password) when it is
    not one or lacks a sentinel or the primary's name."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    parts = urlsplit(f"redis://{rest}")
    hosts = parts.netloc.rpartition("@")[2]
    sentinels = tuple(_address(item) for item in hosts.split(",") if item)
    path = [unquote(part) for part in parts.path.split("/") if part]
    if not sentinels:
        raise ValueError("a Sentinel URL names at least one sentinel (host:port)")
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL ends with /<primary name> or /<primary name>/<db>")
    try:
        db = int(path[1]) if len(path) == 2 else 0
    except ValueError:
        raise ValueError(f"database {path[1]!r} of a Sentinel URL is not a number") from None
    return SentinelTarget(
        sentinels=sentinels,
        service=path[0],
        db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        tls=SCHEMES[scheme.lower()],
    )


def _address(item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep:
        return item.strip(), DEFAULT_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ValueError(f"sentinel address {item!r} is not host:port") from None


def discovery_acl() -> str:
    """The ``user default`` line of a sentinel's configuration: no password, discovery only."""
    return "user default on nopass resetchannels -@all " + " ".join(
        f"+{command}" for command in DISCOVERY_COMMANDS
    )
