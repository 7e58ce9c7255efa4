"""An A2A client written with the official ``a2a-sdk`` alone (no mas code): asks the assistant.

    A2A_API_KEY=... python partner.py http://127.0.0.1:8791 "Summarize: some text."

It reads the agent card at ``/.well-known/agent-card.json``, then sends the message with its
API key as a bearer token (streamed, as the card offers: the task first, a status update for
each progress report of the agent, then its completion), and prints the card's name and
skills, each progress report and the answer's text.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a


async def ask(url: str, text: str, key: str) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        client = await create_client(card, client_config=ClientConfig(httpx_client=http))
        print(f"card: {card.name}, skills {[skill.id for skill in card.skills]}", flush=True)
        request = a2a.SendMessageRequest(
            message=a2a.Message(
                message_id=str(uuid.uuid4()), role=a2a.ROLE_USER, parts=[a2a.Part(text=text)]
            )
        )
        async for response in client.send_message(request):  # streamed: the card says so
            kind = response.WhichOneof("payload")
            label = "answer"
            if kind == "message":
                answer = response.message
            elif kind == "status_update":
                status = response.status_update.status
                answer = status.message
                if status.state == a2a.TASK_STATE_WORKING:  # a progress report
                    label = "progress"
            else:  # the task, first: still working
                continue
            text = " ".join(part.text for part in answer.parts if part.text)
            print(f"{label}: {text}", flush=True)


if __name__ == "__main__":
    asyncio.run(ask(sys.argv[1], sys.argv[2], os.environ["A2A_API_KEY"]))
