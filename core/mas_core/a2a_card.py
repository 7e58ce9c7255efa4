"""A2A agent cards: what an A2A client reads at ``/.well-known/agent-card.json``.

:func:`agent_card` builds the card of a mas agent (A2A protocol 1.0, JSON-RPC binding) from its
``Agent`` resource: its id as the name, ``spec.a2a``'s description and version, one skill per
capability (described by ``spec.a2a.skills`` where it says more), the interface URL of the
sidecar's A2A listener and the bearer security scheme each named client authenticates with.
An agent that is not exposed gets a card with no interface: discovery shows what it can do,
and only mas agents can call it.

Pure. Used by the sidecar (its own card, and the cards of ``GET /v1/agents?format=a2a-card``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the models are not loaded by a sidecar that has no spec.a2a
    from mas_core.manifests import A2ASkill, A2ASpec

PROTOCOL_VERSION = "1.0"
BINDING = "JSONRPC"
CARD_PATH = "/.well-known/agent-card.json"
SECURITY_SCHEME = "bearer"
EXTERNAL_NAMESPACE = "external"
CLIENTS_DIR = "a2a-clients"  # the clients' keys, one file each, in the sidecar's credentials
DEFAULT_MODES = ("text/plain", "application/json")
DEFAULT_VERSION = "1.0.0"


def external_principal(client: str) -> str:
    """The principal an external client calls as: ``external/<client>``."""
    return f"{EXTERNAL_NAMESPACE}/{client}"


def _skill(capability: str, described: A2ASkill | None) -> dict[str, Any]:
    skill: dict[str, Any] = {
        "id": capability,
        "name": capability,
        "description": f"the {capability} capability",
        "tags": [capability],
    }
    if described is None:
        return skill
    skill["name"] = described.name or capability
    if described.description:
        skill["description"] = described.description
    for key, values in (
        ("tags", described.tags),
        ("examples", described.examples),
        ("inputModes", described.input_modes),
        ("outputModes", described.output_modes),
    ):
        if values:
            skill[key] = list(values)
    return skill


def agent_card(
    *,
    agent_id: str,
    capabilities: Sequence[str],
    spec: A2ASpec | None,
    url: str | None,
) -> dict[str, Any]:
    """The agent card of ``agent_id``; ``url`` is its A2A endpoint, None when not exposed."""
    described = {skill.id: skill for skill in spec.skills} if spec is not None else {}
    card: dict[str, Any] = {
        "name": agent_id,
        "description": (spec.description if spec else "") or f"mas agent {agent_id}",
        "version": spec.version if spec else DEFAULT_VERSION,
        "supportedInterfaces": [],
        "capabilities": {"streaming": True, "pushNotifications": False},
        "defaultInputModes": list(spec.default_input_modes if spec else DEFAULT_MODES),
        "defaultOutputModes": list(spec.default_output_modes if spec else DEFAULT_MODES),
        "skills": [_skill(c, described.get(c)) for c in capabilities],
    }
    if url is not None:
        card["supportedInterfaces"] = [
            {"url": url, "protocolBinding": BINDING, "protocolVersion": PROTOCOL_VERSION}
        ]
        card["securitySchemes"] = {
            SECURITY_SCHEME: {
                "httpAuthSecurityScheme": {
                    "scheme": "Bearer",
                    "description": "the API key of a client the agent names in spec.a2a.clients",
                }
            }
        }
        card["securityRequirements"] = [{"schemes": {SECURITY_SCHEME: {"list": []}}}]
    return card
