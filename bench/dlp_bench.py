"""Benchmark of the DLP scanner: microseconds per KB of a typical chat-like JSON payload.

Builds a ~1 KB and a ~16 KB message (a conversation with metadata: ordinary text with dates,
versions, ids and numbers) holding a few sensitive values (an email address, a phone number, a
card number, a cloud key), scans each with every built-in detector on (redacting), and prints
the best-of-several mean time per KB; also a clean 16 KB message and a dense one (a sensitive
value in every seventh turn). The target is at most 20 µs/KB. Run it with
``python -m bench.dlp_bench``; it is not a test. :func:`dlp_results` gives the same numbers to
the harness (:mod:`bench.cli`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from mas.policy.dlp import BUILTIN_DETECTORS, DlpAction, DlpPolicy
from mas_sidecar.dlp import DlpScanner

_LINES = (
    "Thanks, I looked at the report from 2024-11-23 and the numbers look fine to me.",
    "Can you re-run the pipeline for build 1.4.2? The last run took 37 minutes.",
    "Meeting moved to 10:30, room 4B. Bring the slides for the Q3 review please.",
    "The customer asked about order 88213 again; shipping should be done by Friday.",
    "I pushed the fix, see commit 9f2c1e7 - it only touches the retry loop.",
    "Latency is at 120 ms p99 after the change, down from roughly 180 ms.",
)
_SENSITIVE = (
    "You can reach her at jane.doe@example.com or +1 415 555 2671.",
    "Card on file: 4111 1111 1111 1111, exp 12/26.",
    "The staging key is AKIAIOSFODNN7EXAMPLE, rotate it after the demo.",
)


def message(target_bytes: int, every: int = 0) -> dict[str, Any]:
    """A chat-like payload of about ``target_bytes`` of JSON: the sensitive lines go into the
    first turns, or into every ``every``-th turn when given (0: nowhere)."""
    turns: list[dict[str, Any]] = []
    payload: dict[str, Any] = {
        "conversation_id": "c0a8012e-7f3b-4a52-9d61-3f0e2b7c9a14",
        "created_at": 1732377600123,
        "model": "assistant-v2",
        "turns": turns,
    }
    index = 0
    while len(orjson.dumps(payload)) < target_bytes:
        text = _LINES[index % len(_LINES)]
        if every and index % every == every - 1:
            text += " " + _SENSITIVE[(index // every) % len(_SENSITIVE)]
        turns.append(
            {"role": "user" if index % 2 else "assistant", "text": text, "seq": index, "ok": True}
        )
        index += 1
    return payload


def microseconds_per_kb(scanner: DlpScanner, payload: Any, rounds: int = 7) -> float:
    size_kb = len(orjson.dumps(payload)) / 1024
    repeat = max(20, int(2000 / size_kb)) if rounds > 1 else 5
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            scanner.scan(payload)
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6 / size_kb


CASES = {
    "few sensitive values": (message(1024, every=3), message(16 * 1024, every=60)),
    "clean": (message(1024), message(16 * 1024)),
    "dense (every 7th turn)": (message(1024, every=7), message(16 * 1024, every=7)),
}


def _scanner() -> DlpScanner:
    return DlpScanner(DlpPolicy(detectors=dict.fromkeys(BUILTIN_DETECTORS, DlpAction.REDACT)))


def dlp_results(quick: bool = False) -> list[dict[str, Any]]:
    """Per case and size: KB, findings and µs/KB (``quick``: fewer rounds, for smoke runs)."""
    scanner = _scanner()
    rows = []
    for name, payloads in CASES.items():
        for payload in payloads:
            rows.append(
                {
                    "case": name,
                    "kb": len(orjson.dumps(payload)) / 1024,
                    "findings": len(scanner.scan(payload).findings),
                    "us_per_kb": microseconds_per_kb(scanner, payload, rounds=1 if quick else 7),
                }
            )
    return rows


def main() -> None:
    scanner = _scanner()
    for name, payloads in CASES.items():
        for payload in payloads:
            kb = len(orjson.dumps(payload)) / 1024
            findings = len(scanner.scan(payload).findings)
            print(
                f"{name:24s} {kb:5.1f} KB, {findings:2d} findings: "
                f"{microseconds_per_kb(scanner, payload):6.1f} µs/KB"
            )


if __name__ == "__main__":
    main()
