"""The benchmark's message and result line, shared by every program that sends it.

Standard library only: :mod:`bench.load` and :mod:`bench.natural_agents` import it as
``bench.workload``; :mod:`bench.framework_agents` runs under the original framework's own
interpreter, as a script in this folder, and imports it as ``workload``.
"""

from __future__ import annotations

from typing import Any

RESULT_MARK = "BENCH-RESULT "
_TEXT = "Sensor 12 reported a nominal reading; the next calibration is due next week."


def payload(seq: int) -> dict[str, Any]:
    """A chat-like message of about 200 bytes of JSON with nothing sensitive in it."""
    return {
        "seq": seq,
        "kind": "reading",
        "text": _TEXT,
        "values": [1.5, 2.25, 3.125, 4.0625],
        "unit": "kPa",
        "ok": True,
        "tags": ["bench", "steady", "lab-3"],
    }
