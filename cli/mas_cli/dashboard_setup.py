"""Setting a dashboard up: its own Redis user, and the token its write actions require.

:func:`dashboard_url` gives the URL the dashboard reads Redis with: a URL already naming one
of the dashboard's users is used as it is; any other URL is taken as an administrator's, which
creates (or resets) the dashboard's user with a new password on every data node and is not
used any further, so the dashboard itself never holds more than its own rights
(:func:`mas_core.acl.dashboard_acl_rules`); :func:`administrator_url` adds the administrator's
credentials of ``MAS_REDIS_USERNAME`` and ``MAS_REDIS_PASSWORD`` (or the file
``MAS_REDIS_PASSWORD_FILE`` names), as the operator takes them. :func:`write_token` reads the
write token from its file, or makes a new one there (mode 0600). Used by ``mas dashboard``
(:mod:`mas_cli.dashboard_command`) and ``mas up`` (:mod:`mas_cli.local.supervisor`).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mas_control.acl_file import save_acl_users
from mas_control.provision import apply_dashboard_user
from mas_core import redis_clients
from mas_core.acl import (
    DASHBOARD_USER,
    DASHBOARD_WRITER,
    dashboard_redis_url,
    generate_password,
    url_with_credentials,
)
from mas_core.envflags import env_secret
from mas_core.identity.credentials import write_atomic

TOKEN_MODE = 0o600  # the write token's file, and the file of the URL --setup-only writes


def administrator_url(url: str, env: Mapping[str, str]) -> str:
    """``url`` with the password of ``MAS_REDIS_PASSWORD`` (or its file) and the user of
    ``MAS_REDIS_USERNAME`` (default: the URL's, else ``default``) when a password is set;
    ValueError when the password cannot be read."""
    password = env_secret(env, "MAS_REDIS_PASSWORD")
    if not password:
        return url
    user = env.get("MAS_REDIS_USERNAME") or unquote(urlsplit(url).username or "") or "default"
    return url_with_credentials(url, user, password)


def dashboard_url(url: str, *, writes: bool) -> tuple[str, bool]:
    """The URL of the dashboard's own user, and whether it was created now (see the module
    docstring). ``redis.RedisError`` when the administrator's URL cannot create it."""
    if unquote(urlsplit(url).username or "") in (DASHBOARD_USER, DASHBOARD_WRITER):
        return url, False
    password = generate_password()
    for node in redis_clients.data_nodes(url):
        try:
            apply_dashboard_user(node, password, writes=writes)
            save_acl_users(node)
        finally:
            node.close()
    return dashboard_redis_url(url, password, writes=writes), True


def write_token(path: Path) -> str:
    """The write token stored in ``path``; a new one written there (0600) when it is absent."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, token.encode() + b"\n", TOKEN_MODE)
    return token
