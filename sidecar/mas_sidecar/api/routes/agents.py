"""``GET /v1/agents`` (discovery; ``?format=a2a-card``: A2A agent cards), ``GET``/``PUT
/v1/self`` (this agent's own entry) and ``GET /.well-known/agent-card.json`` (its A2A card)."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from mas_core.a2a_card import CARD_PATH, agent_card
from mas_core.error_codes import ErrorCode
from mas_core.policy.rules import Party, may_message
from mas_sidecar.api.errors import ApiError
from mas_sidecar.api.http import components, json_response, read_body
from mas_sidecar.api.models import Metadata
from mas_sidecar.api.responses import AgentCard, Agents, AgentSelf
from mas_sidecar.components import Components
from mas_sidecar.streams.registry import AgentEntry

routes = web.RouteTableDef()
MAX_CAPABILITY_FILTERS = 32
CARD_FORMAT = "a2a-card"


def own_card(parts: Components) -> AgentCard:
    """This agent's A2A card (with its A2A endpoint when it is exposed)."""
    config = parts.config
    return cast(
        AgentCard,
        agent_card(
            agent_id=config.agent_id,
            capabilities=parts.registry.capabilities,
            spec=config.a2a,
            url=config.a2a_endpoint if config.a2a_exposed else None,
        ),
    )


def _card_of(entry: AgentEntry) -> dict[str, Any]:
    """The card of a discovered agent: what its registry entry says (no endpoint: other mas
    agents call it through their sidecars)."""
    card = agent_card(agent_id=entry["id"], capabilities=entry["capabilities"], spec=None, url=None)
    description = entry["metadata"].get("description")
    if isinstance(description, str) and description:
        card["description"] = description[:2048]
    return card


@routes.get("/v1/agents")
async def discover(request: web.Request) -> web.Response:
    wanted = request.query.getall("capability", [])
    shape = request.query.get("format", "mas")
    if shape not in ("mas", CARD_FORMAT):
        raise ApiError(ErrorCode.INVALID_REQUEST, f"format must be mas or {CARD_FORMAT}")
    if len(wanted) > MAX_CAPABILITY_FILTERS or any(len(c) > 253 for c in wanted):
        raise ApiError(ErrorCode.INVALID_REQUEST, "at most 32 capability filters of 253 characters")
    parts = components(request)
    agents = await parts.registry.live_agents(wanted)
    policy = parts.policies.own
    if policy is not None and policy.discovery_restricted:
        me = Party(parts.config.agent_id, parts.gateway.own_roles())
        agents = [
            agent
            for agent in agents
            if may_message(policy.rules, me, Party(agent["id"], frozenset(agent["capabilities"])))
        ]
    if shape == CARD_FORMAT:
        return json_response(Agents(agents=agents, cards=[_card_of(agent) for agent in agents]))
    return json_response(Agents(agents=agents))


@routes.get(CARD_PATH)
async def get_card(request: web.Request) -> web.Response:
    return json_response(own_card(components(request)))


def _self(parts: Components) -> AgentSelf:
    return {
        **parts.registry.entry(),
        "namespace": parts.config.namespace,
        "replica": parts.config.replica,
        "roles": list(parts.config.roles),
        "policy": {"revision": parts.policies.revision, "error": parts.policies.error},
    }


@routes.get("/v1/self")
async def get_self(request: web.Request) -> web.Response:
    return json_response(_self(components(request)))


@routes.put("/v1/self")
async def put_self(request: web.Request) -> web.Response:
    body = await read_body(request, Metadata)
    parts = components(request)
    await parts.registry.set_metadata(body.metadata)
    return json_response(_self(parts))
