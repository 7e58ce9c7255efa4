"""Benchmark of the DLP scanner: microseconds per KB of a typical chat-like JSON payload.

Builds a ~1 KB and a ~16 KB message (a conversation with metadata: ordinary text with dates,
versions, ids and numbers) holding a few sensitive values (an email address, a phone number, a
card number, a cloud key), scans each with every built-in detector on (redacting), and prints
the best-of-several mean CPU time per KB; also a clean 16 KB message and a dense one (a
sensitive value in every seventh turn). The target is at most 20 µs/KB.

Then the adversarial inputs (:data:`ADVERSARIAL`, the strings ``tests/test_dlp.py`` holds the
scanner to a linear cost on: prefixes and separators that start candidates but never complete
one, and near misses that complete a candidate and fail its check), each 1 MB, scanned as the
value of an object (``{"text": s}``) and as its key (``{s: 1}``), in µs/KB and as a multiple
of the clean 16 KB message's µs/KB measured in the same run. Run it with
``python -m bench.dlp_bench``; it is not a test. :func:`dlp_results` and
:func:`dlp_adversarial_results` give the same numbers to the harness (:mod:`bench.cli`).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from mas_core.policy.dlp import BUILTIN_DETECTORS, DlpAction, DlpPolicy
from mas_sidecar.checks.dlp import DlpScanner

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


def microseconds_per_kb(
    scanner: DlpScanner, payload: Any, rounds: int = 7, repeat: int | None = None
) -> float:
    size_kb = len(orjson.dumps(payload)) / 1024
    if repeat is None:
        repeat = max(20, int(2000 / size_kb)) if rounds > 1 else 5
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()  # a scan is CPU work in this process: other load aside
        for _ in range(repeat):
            scanner.scan(payload)
        best = min(best, (time.process_time() - start) / repeat)
    return best * 1e6 / size_kb


CASES = {
    "few sensitive values": (message(1024, every=3), message(16 * 1024, every=60)),
    "clean": (message(1024), message(16 * 1024)),
    "dense (every 7th turn)": (message(1024, every=7), message(16 * 1024, every=7)),
}


# The same strings as ADVERSARIAL and NEAR_MISSES in tests/test_dlp.py: (name, repeated unit,
# tail).
ADVERSARIAL = (
    ("digits", "1", ""),
    ("spaced digits", "4 ", ""),
    ("dashed digits", "123-", ""),
    ("at and dot", "@.", ""),
    ("local part without domain", "a", "@"),
    ("plus digits", "+1", ""),
    ("parentheses", "(1)", ""),
    ("pem headers", "-----BEGIN RSA PRIVATE KEY-----", ""),
    ("jwt prefixes", "eyJ", ""),
    ("jwt dots", "eyJhbGciOi.", ""),
    ("assignments", "api_key=", ""),
    ("secret words", "password: ", ""),
    ("iban starts", "DE89 ", ""),
    ("mrn words", "MRN: ", ""),
    ("ssn words", "ssn 123 ", ""),
    ("ssn words far from numbers", "SSN" + " " * 30 + "123456789 ", ""),
    ("context words inside words", "classname 123456789 hotel 4155552671 ", ""),
    ("aws prefixes", "AKIA", ""),
    # NEAR_MISSES there: candidates that pass a locator, then fail the check.
    ("near miss: iban starts of a length a country has", "AT12 ", ""),
    ("near miss: card-like digit groups", "4111 ", ""),
    ("near miss: ssn-like numbers with area 000", "000-12-3456 ", ""),
    ("near miss: 'SSN 000.12.3456' (area 000)", "SSN 000.12.3456 ", ""),
    ("near miss: card-like dotted groups", "4111.1111.1111.1112 ", ""),
    ("near miss: lowercase iban-like groups", "at12 3456 ", ""),
)
ADVERSARIAL_BYTES = 1 << 20


def adversarial(unit: str, tail: str, size: int = ADVERSARIAL_BYTES) -> str:
    return unit * (size // len(unit)) + tail


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


def dlp_adversarial_results(quick: bool = False) -> list[dict[str, Any]]:
    """Per adversarial input, 1 MB as a value and as a key: µs/KB, and the ratio of each to
    the clean 16 KB message's µs/KB, measured here too (``quick``: one round, for smoke
    runs)."""
    scanner = _scanner()
    rounds = 1 if quick else 7
    clean = microseconds_per_kb(scanner, CASES["clean"][1], rounds=rounds)
    rows = []
    for name, unit, tail in ADVERSARIAL:
        text = adversarial(unit, tail)
        value, key = (
            microseconds_per_kb(
                scanner, payload, rounds=1 if quick else 5, repeat=1 if quick else 3
            )
            for payload in ({"text": text}, {text: 1})
        )
        rows.append(
            {
                "case": name,
                "kb": len(text) / 1024,
                "value_us_per_kb": value,
                "key_us_per_kb": key,
                "clean_us_per_kb": clean,
                "value_ratio": value / clean,
                "key_ratio": key / clean,
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
    rows = dlp_adversarial_results()
    print(f"\nadversarial, 1 MB (clean 16 KB message: {rows[0]['clean_us_per_kb']:.1f} µs/KB)")
    for row in rows:
        print(
            f"{row['case']:50s} as a value {row['value_us_per_kb']:6.1f} µs/KB "
            f"({row['value_ratio']:5.1f}x clean), as a key {row['key_us_per_kb']:6.1f} µs/KB "
            f"({row['key_ratio']:5.1f}x clean)"
        )


if __name__ == "__main__":
    main()
