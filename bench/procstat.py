"""CPU time and resident memory of a process, read from ``/proc`` (Linux).

Used by the benchmark harness to charge each sidecar process for the CPU it used during a run
and to report its memory; no third-party dependency.
"""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def memory_mb(pid: int) -> tuple[float, float]:
    """``(resident now, peak resident)`` of ``pid`` in MiB."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
