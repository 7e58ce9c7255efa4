"""mas: the Python agent SDK of the mas multi-agent messaging system.

An agent program subclasses :class:`Agent`, registers a handler per message type with
:meth:`Agent.on`, keeps typed state with :meth:`Agent.update_state` and calls :meth:`Agent.run`.
Everything goes through the agent's own sidecar (``MAS_SIDECAR_URL``, presenting the agent's
``MAS_SIDECAR_TOKEN``), which :class:`SidecarClient` speaks to directly for anything the
:class:`Agent` class does not cover::

    class Ponger(Agent[Counter]):
        def __init__(self) -> None:
            super().__init__(state_model=Counter)

        @Agent.on("ping", model=Question)
        async def handle_ping(self, message: AgentMessage, payload: Question) -> None:
            await self.update_state({"count": self.state.count + 1})
            await message.reply("pong", {"n": self.state.count})

    if __name__ == "__main__":
        Ponger().run()
"""

from mas.agent import Agent, AgentInfo
from mas.client import SidecarClient
from mas.errors import (
    CircuitOpenError,
    DlpBlockedError,
    ForbiddenError,
    LeaseLostError,
    MasError,
    RateLimitedError,
    RequestTimeoutError,
    RevisionConflictError,
    SidecarError,
    UnknownAgentError,
)
from mas.message import AgentMessage
from mas.retry import Retry

__all__ = [
    "Agent",
    "AgentInfo",
    "AgentMessage",
    "CircuitOpenError",
    "DlpBlockedError",
    "ForbiddenError",
    "LeaseLostError",
    "MasError",
    "RateLimitedError",
    "RequestTimeoutError",
    "Retry",
    "RevisionConflictError",
    "SidecarClient",
    "SidecarError",
    "UnknownAgentError",
]
