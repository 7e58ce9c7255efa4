"""The healthcare example's doctor: answers each ``consultation.question`` request.

It prints each question exactly as it arrived: an SSN the patient typed shows up as
``[REDACTED:us_ssn]``, because the patient's own sidecar redacted it before the message left.
Answers come from a rule book offline, or from an OpenAI model when ``OPENAI_API_KEY`` is set
(see ``answers.py``). After its first consultation the doctor tries to start a conversation of
its own (a ``followup.reminder``), which the gateway policy does not allow: its sidecar refuses
it, and the doctor prints the refusal.
"""

from __future__ import annotations

from answers import make_responder
from pydantic import BaseModel, Field

from mas import Agent, AgentMessage, ForbiddenError, MasError


class DoctorState(BaseModel):
    consultations: int = 0
    by_patient: dict[str, int] = Field(default_factory=dict)


class Question(BaseModel):
    question: str = Field(min_length=1, max_length=4000)


class Doctor(Agent[DoctorState]):
    def __init__(self) -> None:
        super().__init__(state_model=DoctorState)
        self.responder = make_responder()
        self._reminder_tried = False

    def get_metadata(self) -> dict[str, object]:
        return {"specialty": "family medicine", "answers": self.responder.source}

    async def on_start(self) -> None:
        print(
            f"doctor ready ({self.responder.source}), "
            f"{self.state.consultations} consultations so far",
            flush=True,
        )

    @Agent.on("consultation.question", model=Question)
    async def consult(self, message: AgentMessage, payload: Question) -> None:
        print(f"question from {message.sender}: {payload.question}", flush=True)
        answer = await self.responder.answer(payload.question)
        by_patient = dict(self.state.by_patient)
        by_patient[message.sender] = by_patient.get(message.sender, 0) + 1
        await self.update_state(
            {"consultations": self.state.consultations + 1, "by_patient": by_patient}
        )
        await message.reply(
            "consultation.answer", {"answer": answer, "source": self.responder.source}
        )
        if not self._reminder_tried:
            self._reminder_tried = True
            await self.try_reminder(message.sender)

    async def try_reminder(self, patient: str) -> None:
        """Start a conversation with the patient: the policy allows doctors only to answer."""
        try:
            await self.send(patient, "followup.reminder", {"text": "time for a check-up"})
            print(f"sent a follow-up reminder to {patient}", flush=True)
        except ForbiddenError as exc:
            print(f"denied by the gateway: {exc.message}", flush=True)
        except MasError as exc:
            print(f"follow-up reminder failed: {exc}", flush=True)


if __name__ == "__main__":
    Doctor().run()
