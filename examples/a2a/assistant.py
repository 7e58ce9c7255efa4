"""The A2A example's assistant: a mas agent that A2A clients call through its sidecar.

An A2A ``SendMessage`` reaches it as an ordinary ``a2a.message`` from ``external/<client>``
(the text parts joined in ``payload["text"]``, every part in ``payload["parts"]``); its reply
(``{"text": ...}``) becomes the A2A answer. ``CancelTask`` reaches it as ``a2a.cancel``.

Asked ``Define: <word>``, it asks the glossary, an A2A agent outside mas (the ExternalAgent of
``glossary.yaml``), with an ordinary ``self.request``: its sidecar applies the gateway checks,
calls the glossary over A2A and checks the answer before the assistant gets it as a reply.
Meanwhile it tells the caller so (``message.progress``): a streaming A2A client sees it as a
status update of its task (state working) before the answer.
"""

from __future__ import annotations

import re

from mas import Agent, AgentMessage


def summary(text: str) -> str:
    """Word and sentence counts and the longest word of ``text``."""
    words = re.findall(r"[A-Za-z0-9']+", text)
    sentences = [s for s in re.split(r"[.!?]+", text) if s.strip()]
    longest = max(words, key=len) if words else "-"
    return f"{len(words)} words, {len(sentences)} sentences; the longest word is {longest!r}"


class Assistant(Agent):
    @Agent.on("a2a.message")
    async def summarize(self, message: AgentMessage) -> None:
        text = message.payload["text"]
        print(f"A2A call from {message.sender}: {text[:60]!r}", flush=True)
        if text.startswith("Define:"):
            await message.progress("asking the glossary", data={"ask": "glossary"})
            answer = await self.request("glossary", "ask.define", {"text": text})
            await message.reply("a2a.reply", {"text": answer.payload["text"]})
            return
        text = text.removeprefix("Summarize:").strip()
        await message.reply("a2a.reply", {"text": summary(text)})

    @Agent.on("a2a.cancel")
    async def cancel(self, message: AgentMessage) -> None:
        print(f"{message.sender} cancelled task {message.payload['task_id']}", flush=True)


if __name__ == "__main__":
    Assistant().run()
