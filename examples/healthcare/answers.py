"""How the healthcare example's doctor answers a question.

Offline (no ``OPENAI_API_KEY``) a small rule book answers by keywords, the same answer for the
same question every time. With ``OPENAI_API_KEY`` set, an OpenAI chat model answers
(``OPENAI_MODEL``, default ``gpt-4o-mini``; ``OPENAI_BASE_URL`` points the client elsewhere); the
``openai`` package (``pip install 'mas[llm]'``) is imported only then. When the model cannot be
reached, the rule book answers instead, so the consultation always goes on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Protocol

logger = logging.getLogger("doctor.answers")

DEFAULT_MODEL = "gpt-4o-mini"
SYSTEM_PROMPT = (
    "You are a careful family doctor answering a patient's message. Give general information "
    "in at most three sentences, say when to seek care in person, never diagnose. Identifiers "
    "shown as [REDACTED:...] were removed by a privacy filter: do not ask for them again."
)

# (keywords, answer): the first rule with a keyword in the question answers it.
RULES: list[tuple[tuple[str, ...], str]] = [
    (
        ("headache", "migraine"),
        "Rest in a quiet, dark room, drink water and take paracetamol if you tolerate it. "
        "See a doctor in person if it is sudden and severe, or comes with fever, a stiff neck "
        "or problems with vision or speech.",
    ),
    (
        ("fever", "temperature"),
        "Drink plenty of fluids, rest and take paracetamol for comfort. Seek care if it stays "
        "above 39 °C for more than two days, or you have trouble breathing.",
    ),
    (
        ("insurance", "record", "ssn"),
        "Your record is updated. For your privacy the identifier you sent never reached me: "
        "it was redacted before your message left your side.",
    ),
    (
        ("cough", "cold", "throat"),
        "Most colds clear up within ten days: rest, fluids and honey for the throat. See a "
        "doctor if you are short of breath or it lasts longer than three weeks.",
    ),
]
FALLBACK = (
    "Thank you for your message. I cannot answer that safely in writing; please book an "
    "appointment so that we can talk in person."
)


class Responder(Protocol):
    """Anything that answers a patient's question."""

    source: str

    async def answer(self, question: str) -> str: ...


@dataclass
class RuleBook:
    """Deterministic answers by keyword; the offline responder."""

    source: str = "rules"

    async def answer(self, question: str) -> str:
        return self.answer_now(question)

    @staticmethod
    def answer_now(question: str) -> str:
        lowered = question.lower()
        for keywords, answer in RULES:
            if any(keyword in lowered for keyword in keywords):
                return answer
        return FALLBACK


class ChatModel:
    """Answers with an OpenAI chat model; falls back to the rule book on any API error."""

    def __init__(self, model: str) -> None:
        from openai import AsyncOpenAI  # noqa: PLC0415 - optional dependency, only with a key

        self._client = AsyncOpenAI(timeout=20.0, max_retries=1)
        self._model = model
        self.source = f"llm:{model}"

    async def answer(self, question: str) -> str:
        import openai  # noqa: PLC0415 - already imported by __init__

        try:
            completion = await self._client.chat.completions.create(
                model=self._model,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": question},
                ],
                max_tokens=200,
            )
        except openai.OpenAIError as exc:
            logger.warning("the chat model failed (%s); answering from the rule book", exc)
            return RuleBook.answer_now(question)
        content = completion.choices[0].message.content
        return (content or "").strip() or RuleBook.answer_now(question)


def make_responder() -> Responder:
    """The chat model when ``OPENAI_API_KEY`` is set, else the rule book."""
    if os.environ.get("OPENAI_API_KEY"):
        return ChatModel(os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL)
    return RuleBook()
