"""The sidecar API's token: made by the control plane, presented by the agent, checked by the
sidecar.

Every request to a sidecar's API except ``/healthz`` and ``/readyz`` carries ``Authorization:
Bearer <token>``; the sidecar compares it in constant time and answers anything else with
``401 unauthenticated_client``. The control plane makes one token per agent (:func:`new_token`)
and gives it to that agent's sidecars and to its program only: ``mas up`` writes it into the
sidecar's private credentials directory and puts it in the agent process's environment; the
operator keeps it in the agent's credentials Secret, mounted into the sidecar, and hands it to
the agent container as an environment variable taken from that one Secret key. Both sides read
it with :func:`mas_core.envflags.env_secret`: ``MAS_SIDECAR_TOKEN``, or ``MAS_SIDECAR_TOKEN_FILE``
naming a file that holds it.

Used by the sidecar (:mod:`mas_sidecar.config`, :mod:`mas_sidecar.api.http`), the SDK
(:mod:`mas.client`), local mode and the operator.
"""

from __future__ import annotations

import re
import secrets

TOKEN_ENV = "MAS_SIDECAR_TOKEN"
TOKEN_FILE_ENV = "MAS_SIDECAR_TOKEN_FILE"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512
SCHEME = "Bearer"
# RFC 6750's b64token: what fits in an Authorization header unquoted.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def new_token() -> str:
    """A new token: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """``token`` when it can serve as a sidecar token; ValueError saying why not."""
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise ValueError(
            f"the sidecar token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters long"
        )
    if not _TOKEN.fullmatch(token):
        raise ValueError("the sidecar token may hold only A-Z a-z 0-9 - . _ ~ + / and a final =")
    return token


def authorization(token: str) -> str:
    """The ``Authorization`` header value that presents ``token``."""
    return f"{SCHEME} {token}"


def presented(header: str | None) -> str | None:
    """The token an ``Authorization`` header value presents (None when it presents none)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != SCHEME.lower():
        return None
    return token.strip() or None
