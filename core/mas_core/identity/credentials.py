"""Credentials on disk: the trust anchor's directory and each agent's credentials directory.

    <anchor dir>/anchor.key      the anchor's private key (PKCS#8 PEM, mode 0600)
    <anchor dir>/anchor.pub      its public key
    <agent dir>/agent.key        the agent's private key (PKCS#8 PEM, mode 0600)
    <agent dir>/agent.pub        its public key (informational; the token's ``cnf`` is binding)
    <agent dir>/token            the agent's identity token (see :mod:`mas_core.identity.tokens`)
    <agent dir>/trust/<kid>.pub  anchor public keys trusted for incoming messages (several
                                 during an anchor rotation; the file name is the key id)
    <agent dir>/redis-url        the sidecar's Redis URL with the agent's ACL password (mode
                                 0600; the sidecar's ``MAS_REDIS_URL_FILE``)
    <agent dir>/api-token        the token the agent must present to its sidecar (mode 0600;
                                 the sidecar's ``MAS_SIDECAR_TOKEN_FILE``)

``mas up`` keeps its anchor in memory only (:func:`new_anchor`); ``mas identity init-anchor``
writes one to disk for those who run sidecars by hand.

Every file is written atomically (a temporary file in the same directory, then a rename), so a
reader sees the old file or the new one, never half of one; given an ``owner`` (uid, gid), the
directories and files belong to that user before anyone can see them (``mas up`` running as
root writes each sidecar's credentials for that sidecar's own user). A renewal writes the trust keys
first and the token last; a reader that catches the set between two files finds it inconsistent
(:class:`CredentialsError`) and tries again later. Private keys never appear in messages or
reprs. Used by the sidecar's credential store, local mode (``mas up``) and ``mas identity``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from mas_core.identity.tokens import (
    DEFAULT_ISSUER,
    IdentityError,
    KeyFormatError,
    TokenClaims,
    generate_private_key,
    issue_token,
    key_id,
    load_private_key_pem,
    load_public_key_pem,
    private_key_to_pem,
    public_key_to_pem,
    verify_token,
)

ANCHOR_KEY_FILE = "anchor.key"
ANCHOR_PUB_FILE = "anchor.pub"
AGENT_KEY_FILE = "agent.key"
AGENT_PUB_FILE = "agent.pub"
TOKEN_FILE = "token"
TRUST_DIR = "trust"
REDIS_URL_FILE = "redis-url"
API_TOKEN_FILE = "api-token"
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
DIRECTORY_MODE = 0o700


class CredentialsError(IdentityError):
    """A credentials directory is missing, incomplete, inconsistent or already taken."""

    reason = "bad_credentials"


Owner = tuple[int, int]  # (uid, gid) of files written for another user


@dataclass(frozen=True)
class Anchor:
    """A trust anchor's key pair."""

    private_key: SigningKey = field(repr=False)
    public_key: VerifyKey = field(repr=False)
    kid: str

    @classmethod
    def of(cls, private_key: SigningKey) -> Anchor:
        """The anchor whose private key is ``private_key``."""
        return cls(private_key, private_key.verify_key, key_id(private_key.verify_key))


@dataclass(frozen=True)
class AgentCredentials:
    """One agent's key, token and trusted anchors, checked against each other."""

    agent_key: SigningKey = field(repr=False)
    token: str = field(repr=False)
    claims: TokenClaims
    trust: Mapping[str, VerifyKey] = field(repr=False)

    @property
    def trusted_kids(self) -> tuple[str, ...]:
        return tuple(sorted(self.trust))


def write_atomic(path: Path, data: bytes, mode: int, owner: Owner | None = None) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``, belonging to ``owner`` when given)
    so readers never see half of it."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            if owner is not None:
                os.fchown(handle.fileno(), *owner)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def private_directory(directory: Path, owner: Owner | None = None) -> None:
    """Create ``directory`` (and its parents) if needed; it gets mode 0700, and belongs to
    ``owner`` when given."""
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if owner is not None:
        os.chown(directory, *owner)
    os.chmod(directory, DIRECTORY_MODE)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CredentialsError(f"cannot read {path.name}: {exc.strerror or exc}") from None


def _load_private(path: Path) -> SigningKey:
    data = _read(path)
    try:
        return load_private_key_pem(data)
    except KeyFormatError as exc:
        raise CredentialsError(f"{path.name}: {exc}") from None


# -- the trust anchor ---------------------------------------------------------------------------


def new_anchor() -> Anchor:
    """A new trust anchor, in memory only."""
    return Anchor.of(generate_private_key())


def create_anchor(directory: Path) -> Anchor:
    """Create a new trust anchor in ``directory``; refuses to replace an existing one."""
    directory.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    if (directory / ANCHOR_KEY_FILE).exists():
        raise CredentialsError(f"{directory} already holds a trust anchor")
    anchor = new_anchor()
    write_atomic(directory / ANCHOR_KEY_FILE, private_key_to_pem(anchor.private_key), PRIVATE_MODE)
    write_atomic(directory / ANCHOR_PUB_FILE, public_key_to_pem(anchor.public_key), PUBLIC_MODE)
    return anchor


def load_anchor(directory: Path) -> Anchor:
    """The trust anchor stored in ``directory``."""
    return Anchor.of(_load_private(directory / ANCHOR_KEY_FILE))


# -- an agent's credentials ---------------------------------------------------------------------


def add_trust(directory: Path, public_key: VerifyKey, owner: Owner | None = None) -> str:
    """Trust ``public_key`` as an anchor in the agent directory ``directory``; its key id."""
    trust = directory / TRUST_DIR
    private_directory(trust, owner)
    kid = key_id(public_key)
    write_atomic(trust / f"{kid}.pub", public_key_to_pem(public_key), PUBLIC_MODE, owner)
    return kid


def load_trust(directory: Path) -> dict[str, VerifyKey]:
    """The anchor keys trusted in the agent directory ``directory``, by key id."""
    trust = directory / TRUST_DIR
    try:
        paths = sorted(p for p in trust.iterdir() if p.suffix == ".pub" and p.name[0] != ".")
    except OSError as exc:
        raise CredentialsError(f"cannot list {TRUST_DIR}/: {exc.strerror or exc}") from None
    keys: dict[str, VerifyKey] = {}
    for path in paths:
        data = _read(path)
        try:
            key = load_public_key_pem(data)
        except KeyFormatError as exc:
            raise CredentialsError(f"{TRUST_DIR}/{path.name}: {exc}") from None
        kid = key_id(key)
        if path.stem != kid:
            raise CredentialsError(f"{TRUST_DIR}/{path.name} holds the key {kid}, not {path.stem}")
        keys[kid] = key
    if not keys:
        raise CredentialsError(f"{TRUST_DIR}/ holds no anchor key")
    return keys


def credential_files(
    anchor_public_key: VerifyKey, agent_key: SigningKey, token: str
) -> dict[str, bytes]:
    """The files of an agent's credentials directory, by path relative to it.

    In writing order: the trusted anchor key first, the token last. ``mas up`` writes them to
    disk (:func:`issue_agent_credentials`); the operator puts them in the agent's Secret.
    """
    return {
        f"{TRUST_DIR}/{key_id(anchor_public_key)}.pub": public_key_to_pem(anchor_public_key),
        AGENT_KEY_FILE: private_key_to_pem(agent_key),
        AGENT_PUB_FILE: public_key_to_pem(agent_key.verify_key),
        TOKEN_FILE: token.encode("ascii") + b"\n",
    }


def issue_agent_credentials(
    anchor: Anchor,
    directory: Path,
    *,
    agent_id: str,
    roles: Sequence[str] = (),
    capabilities: Sequence[str] = (),
    ttl_seconds: int = 3600,
    issuer: str = DEFAULT_ISSUER,
    rotate_key: bool = False,
    now: float | None = None,
    owner: Owner | None = None,
) -> AgentCredentials:
    """Write (or renew) the credentials of ``agent_id`` into ``directory`` (for ``owner``).

    An existing agent key is kept unless ``rotate_key``; the anchor joins the trusted keys (other
    trusted anchors stay). The token is written last.
    """
    private_directory(directory, owner)
    private_directory(directory / TRUST_DIR, owner)
    key_path = directory / AGENT_KEY_FILE
    agent_key: SigningKey | None = None
    if key_path.exists() and not rotate_key:
        with contextlib.suppress(CredentialsError):
            agent_key = _load_private(key_path)
    if agent_key is None:
        agent_key = generate_private_key()
    token = issue_token(
        anchor.private_key,
        agent_id=agent_id,
        roles=roles,
        capabilities=capabilities,
        agent_public_key=agent_key.verify_key,
        ttl_seconds=ttl_seconds,
        issuer=issuer,
        now=now,
    )
    for path, content in credential_files(anchor.public_key, agent_key, token).items():
        private = path in (AGENT_KEY_FILE, TOKEN_FILE)
        write_atomic(directory / path, content, PRIVATE_MODE if private else PUBLIC_MODE, owner)
    return load_agent_credentials(directory, agent_id=agent_id, check_time=False)


def load_agent_credentials(
    directory: Path,
    *,
    agent_id: str | None = None,
    now: float | None = None,
    check_time: bool = True,
) -> AgentCredentials:
    """The credentials in ``directory``, checked as :func:`parse_agent_credentials` does."""
    return parse_agent_credentials(
        load_trust(directory),
        _read(directory / AGENT_KEY_FILE),
        _read(directory / TOKEN_FILE),
        agent_id=agent_id,
        now=now,
        check_time=check_time,
    )


def parse_agent_credentials(
    trust: Mapping[str, VerifyKey],
    agent_key_pem: bytes,
    token_file: bytes,
    *,
    agent_id: str | None = None,
    now: float | None = None,
    check_time: bool = True,
) -> AgentCredentials:
    """Credentials from their parts, checked: the token verifies with a trusted anchor, was
    issued for the agent key and (when given) for ``agent_id``, and (unless ``check_time`` is
    false) is valid now. :class:`CredentialsError` otherwise."""
    try:
        agent_key = load_private_key_pem(agent_key_pem)
    except KeyFormatError as exc:
        raise CredentialsError(f"{AGENT_KEY_FILE}: {exc}") from None
    try:
        token = token_file.decode("ascii").strip()
    except UnicodeDecodeError:
        raise CredentialsError(f"{TOKEN_FILE} is not ASCII") from None
    try:
        claims = verify_token(token, trust, now=now, check_time=check_time)
    except IdentityError as exc:
        raise CredentialsError(f"{TOKEN_FILE}: {exc}") from exc
    if claims.agent_kid != key_id(agent_key.verify_key):
        raise CredentialsError(f"{TOKEN_FILE} was issued for another key than {AGENT_KEY_FILE}")
    if agent_id is not None and claims.sub != agent_id:
        raise CredentialsError(f"{TOKEN_FILE} was issued to {claims.sub}, not {agent_id}")
    return AgentCredentials(agent_key, token, claims, trust)
