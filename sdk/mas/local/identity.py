"""Local mode's identities: a trust anchor per folder and credentials for each agent.

``mas up`` plays the operator's part: it keeps a trust anchor in ``<state>/identity/anchor``
(reused across runs, so messages queued in an external Redis still verify), issues every agent
a key pair and a token for its roles and capabilities, hands the directory to the agent's
sidecar only (``MAS_CREDENTIALS_DIR``), and renews each token at half its lifetime; sidecars
pick renewed tokens up without a restart. Used by :mod:`mas.local.supervisor`.
"""

from __future__ import annotations

import time
from pathlib import Path

from mas.credentials import Anchor, create_anchor, issue_agent_credentials, load_anchor
from mas.manifests import AgentManifest

TOKEN_TTL_SECONDS = 3600
ANCHOR_DIR = "anchor"


class LocalIdentity:
    """The anchor of one folder and the credential directories of its agents."""

    def __init__(self, directory: Path, agents: list[AgentManifest]) -> None:
        self.directory = directory
        self._agents = {agent.agent_id: agent for agent in agents}
        self._anchor: Anchor | None = None
        self._renew_at: dict[str, float] = {}

    def credentials_dir(self, agent_id: str) -> Path:
        return self.directory / agent_id.replace("/", "_")

    def issue_all(self) -> None:
        """Create (or load) the anchor and issue every agent's credentials."""
        anchor_dir = self.directory / ANCHOR_DIR
        exists = (anchor_dir / "anchor.key").exists()
        self._anchor = load_anchor(anchor_dir) if exists else create_anchor(anchor_dir)
        for agent_id in self._agents:
            self._issue(agent_id)

    def renew_due(self) -> list[str]:
        """Renew the tokens past half their lifetime; the agents renewed."""
        now = time.time()
        due = [agent_id for agent_id, at in self._renew_at.items() if at <= now]
        for agent_id in due:
            self._issue(agent_id)
        return due

    def _issue(self, agent_id: str) -> None:
        if self._anchor is None:
            raise RuntimeError("issue_all() first")
        spec = self._agents[agent_id].spec
        issue_agent_credentials(
            self._anchor,
            self.credentials_dir(agent_id),
            agent_id=agent_id,
            roles=spec.roles,
            capabilities=spec.capabilities,
            ttl_seconds=TOKEN_TTL_SECONDS,
        )
        self._renew_at[agent_id] = time.time() + TOKEN_TTL_SECONDS / 2
