"""Circuit breakers, one per target agent, on this sidecar's sends.

A breaker opens after ``failure_threshold`` consecutive failed writes to the target, when this
sender's backlog at the target — the length of its own stream into the target, read back with
each write: its messages not yet acked there — exceeds ``backlog_threshold``, or, if the policy
asks, while the target is not live. Another sender's backlog, or flood, opens no circuit of this
sender's. Open, it refuses sends for ``open_seconds``;
then it lets one probe through (half-open): success closes it, failure opens it again.
Used by the gateway checks; its states feed the ``mas_circuit_state`` metric.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum

from mas_core.policy.document import CircuitBreaker


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class _Circuit:
    state: State = State.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_at: float = 0.0
    reason: str = ""


class Breakers:
    """All targets' breakers of one sidecar."""

    def __init__(self) -> None:
        self._circuits: dict[str, _Circuit] = {}

    def check(self, target: str, settings: CircuitBreaker, live: bool) -> tuple[float, str] | None:
        """``(retry_after_seconds, reason)`` when a send to ``target`` must be refused now."""
        now = time.monotonic()
        circuit = self._circuits.setdefault(target, _Circuit())
        if settings.when_not_live and not live:
            self._open(circuit, now, "the target is not live")
        if circuit.state is State.OPEN:
            remaining = circuit.opened_at + settings.open_seconds - now
            if remaining > 0:
                return remaining, circuit.reason
            circuit.state, circuit.probe_at = State.HALF_OPEN, now
            return None
        if circuit.state is State.HALF_OPEN:
            # A probe refused by a later check never reports back: after a while, probe again.
            if now - circuit.probe_at > settings.open_seconds:
                circuit.probe_at = now
                return None
            return settings.open_seconds, f"{circuit.reason} (a probe is in flight)"
        return None

    def record(self, target: str, settings: CircuitBreaker, ok: bool, backlog: int = 0) -> None:
        """The outcome of one write to ``target``, with this sender's backlog read back."""
        now = time.monotonic()
        circuit = self._circuits.setdefault(target, _Circuit())
        if not ok:
            circuit.failures += 1
            if circuit.state is State.HALF_OPEN or circuit.failures >= settings.failure_threshold:
                self._open(circuit, now, f"{circuit.failures} consecutive write failures")
        elif backlog > settings.backlog_threshold:
            self._open(circuit, now, f"backlog {backlog} > {settings.backlog_threshold}")
        else:
            circuit.state, circuit.failures = State.CLOSED, 0

    def counts(self) -> dict[State, int]:
        """How many targets' circuits are in each state."""
        counts = dict.fromkeys(State, 0)
        for circuit in self._circuits.values():
            counts[circuit.state] += 1
        return counts

    @staticmethod
    def _open(circuit: _Circuit, now: float, reason: str) -> None:
        circuit.state, circuit.opened_at, circuit.reason = State.OPEN, now, reason
