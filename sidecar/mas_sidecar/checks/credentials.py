"""The agent's credentials in this sidecar: loaded from ``MAS_CREDENTIALS_DIR``, hot-reloaded.

The directory (layout in :mod:`mas_core.identity.credentials`) is mounted into the sidecar only; the
agent process never sees it. :meth:`CredentialStore.reload_until` polls the files' modification
times every second; when they change it loads the whole set and checks it (token verifies with a
trusted anchor, matches the agent key and this agent's id) before swapping it in. A half-written
or invalid set is logged (without key material) and the last good set stays in force, so a token
renewal or anchor rotation never needs a restart and never leaves the sidecar without identity.

A set may be loaded with a token that has expired (a sidecar whose renewal is late still starts,
receives and verifies); :meth:`CredentialStore.unusable` says so, and then the sidecar sends
nothing (``503 credentials_expired``) and is not ready, rather than sign messages every receiver
would refuse.

Used by the sidecar's send path (:attr:`~CredentialStore.signing_key`,
:attr:`~CredentialStore.token` to sign), readiness (:meth:`~CredentialStore.unusable`) and
receive path (:attr:`~CredentialStore.verifier` to authenticate senders).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from nacl.signing import SigningKey

from mas_core.identity.credentials import (
    AGENT_KEY_FILE,
    TOKEN_FILE,
    TRUST_DIR,
    AgentCredentials,
    CredentialsError,
    load_agent_credentials,
)
from mas_core.identity.tokens import DEFAULT_LEEWAY_S, TokenClaims, TokenVerifier
from mas_sidecar.aio import wait_event

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0

# (path, mtime_ns, size, inode) of every file the set is made of; None when unreadable.
Snapshot = tuple[tuple[str, int, int, int], ...] | None


class CredentialStore:
    """The credentials in force for one agent, reloaded when their files change."""

    def __init__(self, directory: Path, *, agent_id: str) -> None:
        self.directory = directory
        self.agent_id = agent_id
        self._current: AgentCredentials | None = None
        self._verifier: TokenVerifier | None = None
        self._snapshot: Snapshot = None
        self.error: str | None = None

    def __repr__(self) -> str:
        return f"CredentialStore({str(self.directory)!r}, agent_id={self.agent_id!r})"

    def load(self) -> None:
        """Load the credentials now; :class:`CredentialsError` when there is no valid set.

        Call once at start-up: a sidecar without a valid identity must not start.
        """
        snapshot = self._take_snapshot()
        self._swap(load_agent_credentials(self.directory, agent_id=self.agent_id, check_time=False))
        self._snapshot = snapshot

    @property
    def credentials(self) -> AgentCredentials:
        if self._current is None:
            raise CredentialsError("no credentials are loaded")
        return self._current

    @property
    def signing_key(self) -> SigningKey:
        """The agent's private key, as :func:`~mas_core.identity.tokens.sign_envelope` takes it."""
        return self.credentials.agent_key

    @property
    def token(self) -> str:
        """The agent's identity token (travels in every outgoing envelope)."""
        return self.credentials.token

    @property
    def claims(self) -> TokenClaims:
        return self.credentials.claims

    def unusable(self, now: float | None = None) -> str | None:
        """Why the agent's own token cannot sign messages now (expired, or not valid yet), or
        None when it can.

        Receivers judge a token at the time Redis took the message, with ``DEFAULT_LEEWAY_S`` of
        leeway either way. The sender stops at ``exp`` itself, so what it still signs arrives
        within that leeway; it waits for ``iat`` only beyond the leeway, as receivers do (a
        renewed token may come from an issuer whose clock is a little ahead).
        """
        claims = self.claims
        at = time.time() if now is None else now
        if at >= claims.exp:
            problem = f"the identity token of {claims.sub} expired at {claims.exp}"
        elif at < claims.iat - DEFAULT_LEEWAY_S:
            problem = f"the identity token of {claims.sub} is valid only from {claims.iat}"
        else:
            return None
        if self.error is not None:
            problem += f" (renewed credentials could not be loaded: {self.error})"
        return problem

    @property
    def verifier(self) -> TokenVerifier:
        """Verifies senders' tokens against the trusted anchors currently in force."""
        if self._verifier is None:
            raise CredentialsError("no credentials are loaded")
        return self._verifier

    def reload_if_changed(self) -> bool:
        """Load the set again if its files changed since the last good load; True on a swap."""
        snapshot = self._take_snapshot()
        if snapshot is None:
            self._failed("some credential files are missing or unreadable")
            return False
        if snapshot == self._snapshot:
            self.error = None
            return False
        try:
            fresh = load_agent_credentials(self.directory, agent_id=self.agent_id, check_time=False)
        except CredentialsError as exc:
            self._failed(str(exc))
            return False
        if snapshot != self._take_snapshot():  # changed while we read: take it next time
            return False
        self._swap(fresh)
        self._snapshot = snapshot
        log.info(
            "credentials reloaded: token of %s valid until %d, anchors %s",
            fresh.claims.sub, fresh.claims.exp, ",".join(fresh.trusted_kids),
        )  # fmt: skip
        return True

    async def reload_until(self, stop: asyncio.Event) -> None:
        """Poll for changed credentials every second until ``stop`` is set."""
        while not await wait_event(stop, POLL_SECONDS):
            self.reload_if_changed()

    def _swap(self, fresh: AgentCredentials) -> None:
        if self._current is None or self._current.trusted_kids != fresh.trusted_kids:
            self._verifier = TokenVerifier(fresh.trust)
        self._current = fresh
        self.error = None
        if fresh.claims.exp <= time.time():
            log.warning("the identity token of %s has expired", fresh.claims.sub)

    def _failed(self, message: str) -> None:
        if message != self.error:
            log.warning("credentials not reloaded, keeping the last good set: %s", message)
        self.error = message

    def _take_snapshot(self) -> Snapshot:
        try:
            trust = sorted(p for p in (self.directory / TRUST_DIR).iterdir() if p.name[0] != ".")
            paths = [self.directory / AGENT_KEY_FILE, self.directory / TOKEN_FILE, *trust]
            stats = [(str(p), p.stat()) for p in paths]
        except OSError:
            return None
        return tuple((p, s.st_mtime_ns, s.st_size, s.st_ino) for p, s in stats)
