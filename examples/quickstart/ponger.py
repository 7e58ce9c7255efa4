"""The quickstart's ponger: answers each ``ping`` request with a ``pong``, counts what it gets.

Its state (a typed model persisted by its sidecar) survives restarts: the ping count, how many
pings each sender made and the last few notes received.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from mas import Agent, AgentMessage

RECENT_NOTES = 5


class PongerState(BaseModel):
    pings: int = 0
    pings_by_sender: dict[str, int] = Field(default_factory=dict)
    recent_notes: list[str] = Field(default_factory=list)


class Ping(BaseModel):
    n: int


class Note(BaseModel):
    text: str


class Ponger(Agent[PongerState]):
    def __init__(self) -> None:
        super().__init__(state_model=PongerState)
        self.greeting = os.environ.get("GREETING", "pong")

    async def on_start(self) -> None:
        print(f"ponger ready, {self.state.pings} pings so far", flush=True)

    @Agent.on("ping", model=Ping)
    async def handle_ping(self, message: AgentMessage, payload: Ping) -> None:
        by_sender = dict(self.state.pings_by_sender)
        by_sender[message.sender] = by_sender.get(message.sender, 0) + 1
        await self.update_state({"pings": self.state.pings + 1, "pings_by_sender": by_sender})
        await message.reply(
            "pong", {"n": payload.n, "text": self.greeting, "total": self.state.pings}
        )

    @Agent.on("note", model=Note)
    async def handle_note(self, message: AgentMessage, payload: Note) -> None:
        notes = [*self.state.recent_notes, payload.text][-RECENT_NOTES:]
        await self.update_state({"recent_notes": notes})
        print(f"note from {message.sender}: {payload.text}", flush=True)


if __name__ == "__main__":
    Ponger().run()
