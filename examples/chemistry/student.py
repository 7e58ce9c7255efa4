"""The chemistry example's student: finds a tutor by capability and asks homework questions.

The student does not know who teaches chemistry: it asks its sidecar's discovery API for a live
agent with the ``chemistry.tutoring`` capability (the professor, written in Node.js) and waits
until the professor has published its metadata, which it does once it runs. Then it sends each
homework question as a request, prints the answer, and ends with a fire-and-forget
``homework.thanks`` note. Then it waits until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib

from mas import Agent, AgentInfo, AgentMessage, MasError, SidecarError

CAPABILITY = "chemistry.tutoring"
ANSWER_TIMEOUT = 30.0
RETRIES = 3
HOMEWORK = [
    "What is the molar mass of C6H12O6?",
    "How many moles are in 10 g of NaCl?",
    "What is the pH of a 0.01 M HCl solution?",
    "What is the molar mass of Ca(OH)2?",
]


class Student(Agent):
    def __init__(self) -> None:
        super().__init__()
        self._homework: asyncio.Task[None] | None = None

    async def on_start(self) -> None:
        self._homework = asyncio.create_task(self.do_homework())

    async def on_stop(self) -> None:
        if self._homework is not None:
            self._homework.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._homework

    async def find_tutor(self) -> AgentInfo:
        """A live tutor that has published its metadata (waits until there is one)."""
        print(f"looking for an agent with capability {CAPABILITY}", flush=True)
        while True:
            tutors = await self.discover(capabilities=[CAPABILITY])
            ready = [tutor for tutor in tutors if tutor.metadata.get("language")]
            if ready:
                return ready[0]
            await asyncio.sleep(0.5)

    async def do_homework(self) -> None:
        tutor = await self.find_tutor()
        metadata = tutor.metadata
        print(
            f"found {tutor.id} (capabilities {', '.join(tutor.capabilities)}; "
            f"{metadata.get('language')} on {metadata.get('runtime')}, "
            f"answers from {metadata.get('answers')})",
            flush=True,
        )
        answered = 0
        for question in HOMEWORK:
            print(f"-> {question}", flush=True)
            try:
                reply = await self.ask(tutor.id, question)
            except MasError as exc:
                print(f"no answer: {exc}", flush=True)
                continue
            answered += 1
            source = reply.payload.get("source", "?")
            print(
                f"<- {reply.type} from {reply.sender} ({source}): {reply.payload.get('answer')}",
                flush=True,
            )
        try:
            await self.send(tutor.id, "homework.thanks", {"text": f"thanks for {answered} answers"})
        except MasError as exc:
            print(f"could not say thanks: {exc}", flush=True)
        print(f"homework done: {answered} of {len(HOMEWORK)} questions answered", flush=True)

    async def ask(self, tutor: str, question: str) -> AgentMessage:
        """A ``homework.question`` request, retried a few times on a transient failure."""
        payload = {"question": question}
        for _ in range(RETRIES):
            try:
                return await self.request(
                    tutor, "homework.question", payload, timeout=ANSWER_TIMEOUT
                )
            except SidecarError as exc:
                if exc.status < 500:
                    raise  # a refusal (forbidden, dlp_blocked, ...) is final
                print(f"retrying after {exc.code}", flush=True)
                await asyncio.sleep(1.0)
        return await self.request(tutor, "homework.question", payload, timeout=ANSWER_TIMEOUT)


if __name__ == "__main__":
    Student().run()
