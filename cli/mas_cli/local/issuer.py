"""Local mode's identities: a trust anchor held in memory and credentials for each agent.

``mas up`` plays the operator's part. It makes a new trust anchor at start and keeps its private
key in its own memory only, never on disk, so no agent can mint identities; it issues every
agent a key pair and a token for its roles and capabilities into that agent's credentials
directory (a private directory of the run, handed to the agent's sidecars only,
``MAS_CREDENTIALS_DIR``, and owned by the sidecars' user when ``mas up`` runs as root), and
renews each token at half its lifetime; sidecars pick renewed tokens up without a restart.

Only the anchor's *public* key outlives the run, in ``<state>/anchor.pub``: the next run trusts
it too (if the file belongs to the user running it), so messages a run left queued in an
external Redis still verify after a restart; nobody can sign with that key any more, since it
died with its run. Every run's public key is also kept in ``<state>/anchors/<kid>.pub``: each
signed the audit checkpoints of its run, which the state directory's Redis and the audit
archive keep (:meth:`LocalIdentity.audit_trust`). Earlier versions kept the anchor's and the
agents' private keys in ``<state>/identity``; that directory is removed. Used by
:mod:`mas_cli.local.supervisor`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from nacl.signing import VerifyKey

from mas_cli.local.users import RunAs
from mas_core.identity.credentials import (
    PUBLIC_MODE,
    Anchor,
    add_trust,
    issue_agent_credentials,
    new_anchor,
    write_atomic,
)
from mas_core.identity.tokens import KeyFormatError, key_id, load_public_key_pem, public_key_to_pem
from mas_core.manifests import AgentManifest

TOKEN_TTL_SECONDS = 3600
ANCHOR_PUB_FILE = "anchor.pub"
ANCHORS_DIR = "anchors"  # every run's anchor public key: they signed the audit checkpoints
LEGACY_DIR = "identity"  # where earlier versions kept private keys on disk


def credentials_dir(runtime_dir: Path, agent_id: str) -> Path:
    """The credentials directory of ``agent_id``'s sidecars in the run's private directory."""
    return runtime_dir / agent_id.replace("/", "_")


class LocalIdentity:
    """The run's anchor (in memory) and the credential directories of its agents.

    ``runtime_dir`` holds the credentials directories; ``state_dir`` keeps the anchor's public
    key for the next run; ``owners`` says which user each agent's directory belongs to.
    """

    def __init__(
        self,
        runtime_dir: Path,
        state_dir: Path,
        agents: list[AgentManifest],
        owners: Mapping[str, RunAs | None],
    ) -> None:
        self.runtime_dir = runtime_dir
        self.state_dir = state_dir
        self._agents = {agent.agent_id: agent for agent in agents}
        self._owners = dict(owners)
        self._anchor: Anchor | None = None
        self._previous: VerifyKey | None = None
        self._renew_at: dict[str, float] = {}

    def credentials_dir(self, agent_id: str) -> Path:
        return credentials_dir(self.runtime_dir, agent_id)

    @property
    def anchor(self) -> Anchor:
        """The run's trust anchor (it also signs the audit checkpoints)."""
        if self._anchor is None:
            raise RuntimeError("issue_all() first")
        return self._anchor

    def issue_all(self) -> bool:
        """Make the anchor and issue every agent's credentials; True when private keys that
        earlier versions left in the state directory were removed."""
        legacy = self.state_dir / LEGACY_DIR
        removed = (legacy / "anchor" / "anchor.key").is_file()
        if removed:
            shutil.rmtree(legacy)
        pub_path = self.state_dir / ANCHOR_PUB_FILE
        with contextlib.suppress(OSError, KeyFormatError):
            if pub_path.stat().st_uid == os.geteuid():  # not planted by another user
                self._previous = load_public_key_pem(pub_path.read_bytes())
        self._anchor = new_anchor()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        public = public_key_to_pem(self._anchor.public_key)
        write_atomic(pub_path, public, PUBLIC_MODE)
        (self.state_dir / ANCHORS_DIR).mkdir(exist_ok=True)
        write_atomic(self.state_dir / ANCHORS_DIR / f"{self._anchor.kid}.pub", public, PUBLIC_MODE)
        for agent_id in self._agents:
            self._issue(agent_id)
        return removed

    def audit_trust(self) -> dict[str, VerifyKey]:
        """The public keys of this run's anchor and of every earlier run's kept in the state
        directory (files of the user running ``mas up`` only): what signed the checkpoints of
        the audit trails its Redis keeps across runs, and of their archive."""
        keys = {self.anchor.kid: self.anchor.public_key}
        for path in sorted((self.state_dir / ANCHORS_DIR).glob("*.pub")):
            with contextlib.suppress(OSError, KeyFormatError):
                if path.stat().st_uid == os.geteuid():  # not planted by another user
                    key = load_public_key_pem(path.read_bytes())
                    keys[key_id(key)] = key
        return keys

    def renew_due(self) -> list[str]:
        """Renew the tokens past half their lifetime; the agents renewed."""
        now = time.time()
        due = [agent_id for agent_id, at in self._renew_at.items() if at <= now]
        for agent_id in due:
            self._issue(agent_id)
        return due

    def _issue(self, agent_id: str) -> None:
        anchor = self.anchor
        spec = self._agents[agent_id].spec
        user = self._owners.get(agent_id)
        owner = user.owner if user is not None else None
        directory = self.credentials_dir(agent_id)
        issue_agent_credentials(
            anchor,
            directory,
            agent_id=agent_id,
            roles=spec.roles,
            capabilities=spec.capabilities,
            ttl_seconds=TOKEN_TTL_SECONDS,
            owner=owner,
        )
        if self._previous is not None:
            add_trust(directory, self._previous, owner)
        self._renew_at[agent_id] = time.time() + TOKEN_TTL_SECONDS / 2
