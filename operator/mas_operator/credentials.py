"""What goes into an agent's credentials Secret, decided from what is there already.

An agent keeps its key pair, Redis password and sidecar API token across reconciles (all are
read back from its Secret); its identity token is reissued only when due: missing or
unreadable, past half its lifetime, signed by another anchor, or carrying other roles or
capabilities than the spec. So a reconcile that changes nothing produces byte-identical Secret
data, and the Secret is not rewritten. The files themselves are
:func:`mas_core.identity.credentials.credential_files`, the same ones ``mas up`` writes to disk.
Pure except for fresh randomness (new keys, passwords, API tokens); the clock comes in as ``now``.
Used by :mod:`mas_operator.handlers` (reconcile and rotation timer).
"""

from __future__ import annotations

from base64 import b64decode
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from nacl.signing import SigningKey

from mas_core.acl import agent_redis_url, generate_password
from mas_core.identity.credentials import (
    AGENT_KEY_FILE,
    API_TOKEN_FILE,
    REDIS_URL_FILE,
    TOKEN_FILE,
    Anchor,
    CredentialsError,
    credential_files,
    parse_agent_credentials,
)
from mas_core.identity.tokens import (
    KeyFormatError,
    TokenClaims,
    generate_private_key,
    issue_token,
    load_private_key_pem,
)
from mas_core.manifests import AgentManifest
from mas_core.sidecar_token import check_token, new_token

Manifest = Mapping[str, object]


@dataclass(frozen=True)
class Existing:
    """What an agent's current Secret holds, each part None when absent or unusable."""

    agent_key: SigningKey | None = field(default=None, repr=False)
    claims: TokenClaims | None = None
    token: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CredentialPlan:
    """The Secret files of an agent and the facts its status reports."""

    files: dict[str, bytes] = field(repr=False)
    claims: TokenClaims
    password: str = field(repr=False)
    reissued: bool


def read_existing(secret: Manifest | None, *, anchor: Anchor, agent_id: str) -> Existing:
    """The reusable parts of ``secret`` (the agent's credentials Secret, or None)."""
    if not secret:
        return Existing()
    raw = secret.get("data")
    data: Mapping[str, str] = raw if isinstance(raw, Mapping) else {}
    files = {key: _decode(value) for key, value in data.items()}
    agent_key = None
    key_pem = files.get(AGENT_KEY_FILE)
    if key_pem:
        try:
            agent_key = load_private_key_pem(key_pem)
        except KeyFormatError:
            agent_key = None
    claims = token = None
    token_file = files.get(TOKEN_FILE)
    if agent_key is not None and key_pem and token_file:
        try:
            parsed = parse_agent_credentials(
                {anchor.kid: anchor.public_key},
                key_pem,
                token_file,
                agent_id=agent_id,
                check_time=False,
            )
            claims, token = parsed.claims, parsed.token
        except CredentialsError:
            claims = token = None
    url = files.get(REDIS_URL_FILE, b"").decode("utf-8", "replace")
    password = urlsplit(url).password if url else None
    return Existing(
        agent_key,
        claims,
        token,
        unquote(password) if password else None,
        _api_token(files.get(API_TOKEN_FILE, b"")),
    )


def _api_token(raw: bytes) -> str | None:
    """The sidecar API token stored in the Secret, None when absent or unusable."""
    try:
        return check_token(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None


def token_due(
    claims: TokenClaims | None, *, agent: AgentManifest, ttl_seconds: int, now: float
) -> bool:
    """Whether the agent needs a new token (see the module docstring)."""
    if claims is None:
        return True
    if claims.exp - now < ttl_seconds / 2:
        return True
    return claims.roles != tuple(agent.spec.roles) or claims.capabilities != tuple(
        agent.spec.capabilities
    )


def plan_credentials(
    *,
    agent: AgentManifest,
    anchor: Anchor,
    existing: Existing,
    redis_url: str,
    ttl_seconds: int,
    now: float,
) -> CredentialPlan:
    """The agent's Secret files: kept key, password, API token and (unless due) identity token;
    new where missing.

    ``redis_url`` is the Redis URL sidecars use, without credentials.
    """
    agent_key = existing.agent_key or generate_private_key()
    password = existing.password or generate_password()
    api_token = existing.api_token or new_token()
    claims, token = existing.claims, existing.token
    reissue = (
        existing.agent_key is None
        or token is None
        or token_due(claims, agent=agent, ttl_seconds=ttl_seconds, now=now)
    )
    if reissue or token is None or claims is None:
        token = issue_token(
            anchor.private_key,
            agent_id=agent.agent_id,
            roles=agent.spec.roles,
            capabilities=agent.spec.capabilities,
            agent_public_key=agent_key.verify_key,
            ttl_seconds=ttl_seconds,
            now=now,
        )
        files = credential_files(anchor.public_key, agent_key, token)
        claims = parse_agent_credentials(
            {anchor.kid: anchor.public_key},
            files[AGENT_KEY_FILE],
            files[TOKEN_FILE],
            check_time=False,
        ).claims
    files = credential_files(anchor.public_key, agent_key, token)
    files[REDIS_URL_FILE] = agent_redis_url(redis_url, agent.agent_id, password).encode("utf-8")
    files[API_TOKEN_FILE] = api_token.encode("ascii")
    return CredentialPlan(files=files, claims=claims, password=password, reissued=reissue)


def _decode(value: object) -> bytes:
    try:
        return b64decode(str(value), validate=True)
    except ValueError:
        return b""
