"""Where an external A2A agent's bearer token reaches the senders' sidecars.

Each token is a file named :func:`credentials_file` of the external agent's id in the
directory ``MAS_A2A_REMOTES_DIR`` (on Kubernetes the ExternalAgents' Secrets mounted into the
sidecar container; under ``mas up`` a private directory it writes, :data:`REMOTES_DIR` in the
sidecar's credentials). Pure; used by ``mas up``, the operator's builders and the sidecar.
"""

from __future__ import annotations

REMOTES_DIR = "a2a-remotes"
REMOTES_DIR_ENV = "MAS_A2A_REMOTES_DIR"


def credentials_file(agent_id: str) -> str:
    """The file name of external agent ``agent_id``'s token: ``<namespace>.<name>`` (a label
    holds no dot, so no two ids share one)."""
    namespace, _, name = agent_id.partition("/")
    return f"{namespace}.{name}"
