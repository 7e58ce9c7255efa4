"""What the ``mas`` subcommands share: their exit statuses, the one-line failure, the Redis URL.

User errors (an invalid manifest, a missing option) exit with :data:`USAGE_ERROR` after one
line on standard error; failures at run time with :data:`RUN_ERROR`; ``mas audit verify`` with
:data:`TAMPERED` or :data:`MISMATCHED`. Used by :mod:`mas_cli.main` and the command modules.
"""

from __future__ import annotations

import argparse
import os
import sys

from mas_core.envflags import env_secret

USAGE_ERROR = 2
RUN_ERROR = 1
TAMPERED = 3  # ``mas audit verify`` found an altered, removed or reordered entry
MISMATCHED = 4  # ``mas audit verify --cross``: trails disagree about messages


def fail(message: str, status: int) -> int:
    """Print ``mas: error: message`` on standard error; ``status``."""
    print(f"mas: error: {message}", file=sys.stderr)
    return status


def required_redis_url(args: argparse.Namespace) -> str:
    """:func:`redis_url`, which the command cannot do without: ValueError when there is none."""
    url = redis_url(args)
    if not url:
        raise ValueError(
            "no Redis URL: pass --redis-url or set MAS_REDIS_URL_FILE (or MAS_REDIS_URL)"
        )
    return url


def redis_url(args: argparse.Namespace) -> str | None:
    """``--redis-url``, else ``MAS_REDIS_URL`` or the file ``MAS_REDIS_URL_FILE`` names
    (ValueError when both are set or the file cannot be read)."""
    return str(args.redis_url) if args.redis_url else env_secret(os.environ, "MAS_REDIS_URL")
