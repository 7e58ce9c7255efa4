"""``GET /v1/agents`` (discovery) and ``GET``/``PUT /v1/self`` (this agent's own entry)."""

from __future__ import annotations

from aiohttp import web

from mas_core.error_codes import ErrorCode
from mas_core.policy.rules import Party, may_message
from mas_sidecar.api.errors import ApiError
from mas_sidecar.api.http import components, json_response, read_body
from mas_sidecar.api.models import Metadata
from mas_sidecar.api.responses import Agents, AgentSelf
from mas_sidecar.components import Components

routes = web.RouteTableDef()
MAX_CAPABILITY_FILTERS = 32


@routes.get("/v1/agents")
async def discover(request: web.Request) -> web.Response:
    wanted = request.query.getall("capability", [])
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
    return json_response(Agents(agents=agents))


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
