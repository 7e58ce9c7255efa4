"""The healthcare example's patient: one consultation with the doctor, then waits.

The consultation is a fixed script of requests, each printed with its outcome:

1. a question about a headache, answered;
2. a question carrying an SSN, which the patient's sidecar redacts before it leaves (DLP
   ``redact``): the doctor only ever sees ``[REDACTED:us_ssn]``;
3. a message carrying a payment card number, which the sidecar refuses (DLP ``block``,
   ``dlp_blocked``), so it never leaves;
4. an ``admin.records.export`` message, which the gateway policy denies;
5. a question about a fever, answered;
6. an empty question, sent without waiting for an answer: the doctor's agent cannot read it
   (its model needs a question), so it goes to the doctor's dead letters with the reason, for
   ``mas dead-letters`` or the dashboard to replay or delete.

The number of visits is kept in the patient's persisted state, so a restarted patient knows it
has been here before.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pydantic import BaseModel

from mas import Agent, AgentMessage, DlpBlockedError, ForbiddenError, MasError, SidecarError

DOCTOR_CAPABILITY = "medical.consultation"
ANSWER_TIMEOUT = 30.0
RETRIES = 3
QUESTION = "consultation.question"
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    (QUESTION, {"question": "I have had a headache for two days. What should I do?"}),
    (QUESTION, {"question": "My SSN is 123-45-6789, can you add it to my insurance record?"}),
    (QUESTION, {"question": "Please charge the copay to my card 4111 1111 1111 1111."}),
    ("admin.records.export", {"patients": "all"}),
    (QUESTION, {"question": "I also have a mild fever since yesterday. Should I worry?"}),
]


class PatientState(BaseModel):
    visits: int = 0


class Patient(Agent[PatientState]):
    def __init__(self) -> None:
        super().__init__(state_model=PatientState)
        self._visit: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._visit = asyncio.create_task(self.visit())

    async def on_stop(self) -> None:
        if self._visit is not None:
            self._visit.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._visit

    async def find_doctor(self) -> str:
        """The id of a live agent offering consultations (waits until one is up)."""
        while True:
            doctors = await self.discover(capabilities=[DOCTOR_CAPABILITY])
            if doctors:
                return doctors[0].id
            await asyncio.sleep(1.0)

    async def visit(self) -> None:
        doctor = await self.find_doctor()
        await self.update_state({"visits": self.state.visits + 1})
        print(f"visit {self.state.visits} to {doctor}", flush=True)
        answered = blocked = denied = 0
        for message_type, payload in SCRIPT:
            print(f"-> {message_type}: {payload}", flush=True)
            try:
                reply = await self.ask(doctor, message_type, payload)
            except DlpBlockedError as exc:
                blocked += 1
                print(f"blocked by DLP ({exc.code}): {exc.message}", flush=True)
            except ForbiddenError as exc:
                denied += 1
                print(f"denied by the gateway ({exc.code}): {exc.message}", flush=True)
            except MasError as exc:
                print(f"no answer: {exc}", flush=True)
            else:
                answered += 1
                source = reply.payload.get("source", "?")
                print(f"<- {reply.type} ({source}): {reply.payload.get('answer')}", flush=True)
        print(f"-> {QUESTION} with no question, not awaiting an answer", flush=True)
        await self.send(doctor, QUESTION, {"question": ""})
        print(
            f"consultation finished: {answered} answered, {blocked} blocked by DLP, "
            f"{denied} denied",
            flush=True,
        )

    async def ask(self, doctor: str, message_type: str, payload: dict[str, Any]) -> AgentMessage:
        """A request to the doctor, retried a few times while the doctor is not there yet."""
        for _ in range(RETRIES):
            try:
                return await self.request(doctor, message_type, payload, timeout=ANSWER_TIMEOUT)
            except SidecarError as exc:
                if exc.status < 500 and exc.code != "unknown_agent":
                    raise  # a refusal (forbidden, dlp_blocked, ...) is final
                print(f"retrying after {exc.code}", flush=True)
                await asyncio.sleep(1.0)
        return await self.request(doctor, message_type, payload, timeout=ANSWER_TIMEOUT)


if __name__ == "__main__":
    Patient().run()
