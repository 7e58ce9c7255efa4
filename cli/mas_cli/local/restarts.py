"""Restart bookkeeping for one supervised process: how many restarts, and when the next one.

Like Kubernetes' crash-loop back-off: the delay starts at :data:`FIRST_DELAY` and doubles after
each consecutive failure up to :data:`MAX_DELAY`; a process that ran for :data:`STABLE_AFTER`
seconds before failing starts again from the first delay. Pure (times are passed in), used by
:mod:`mas_cli.local.supervisor`.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0


@dataclass
class Restarts:
    """Counts restarts and schedules the next one after a failure."""

    count: int = 0
    consecutive_failures: int = 0
    due_at: float | None = None

    def failed(self, now: float, ran_for: float) -> float:
        """Record a failure at ``now`` of a process that ran ``ran_for`` seconds; the delay."""
        if ran_for >= STABLE_AFTER:
            self.consecutive_failures = 0
        delay = min(MAX_DELAY, FIRST_DELAY * 2.0**self.consecutive_failures)
        self.consecutive_failures += 1
        self.due_at = now + delay
        return delay

    def is_due(self, now: float) -> bool:
        """True when a restart is scheduled and its time has come."""
        return self.due_at is not None and now >= self.due_at

    def restarted(self) -> None:
        """Record that the scheduled restart happened."""
        self.count += 1
        self.due_at = None
