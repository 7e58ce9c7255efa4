"""Cost checks that hold on a busy machine: no test asserts on wall-clock time.

A bound in seconds fails whenever something else holds the CPU, so bounded-cost properties are
checked by comparing costs measured together, in the same process:

- :func:`assert_linear`: an input ``factor`` times larger costs less than ``limit`` times as much
  (by default 10x the input under 30x the time: linear with room for cache effects and noise,
  where quadratic work would take 100x);
- :func:`assert_costs_at_most`: one input costs less than ``limit`` times a reference input of
  the same size (adversarial text against clean text).

Costs are CPU seconds of this process (``time.process_time``, which does not count time another
process holds the CPU), the best of several runs (noise only ever adds time), with the runs of
the inputs compared interleaved (so a slower spell of the machine hits both) and the garbage
collector paused (its pauses depend on everything the test process holds, not on the code
measured). The smaller input is doubled until one run of it costs :data:`FLOOR`, far above the
clock's resolution.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

T = TypeVar("T")

FLOOR = max(0.001, 100_000 * time.get_clock_info("process_time").resolution)


def cpu_seconds(work: Callable[[], object]) -> float:
    """The CPU time of one run of ``work`` in this process, garbage collector paused."""
    gc.disable()
    try:
        start = time.process_time()
        work()
        return time.process_time() - start
    finally:
        gc.enable()


def best_of(works: Sequence[Callable[[], object]], runs: int = 5) -> list[float]:
    """The least CPU time of each of ``works`` over ``runs`` interleaved rounds."""
    best = [math.inf] * len(works)
    for _ in range(runs):
        for index, work in enumerate(works):
            best[index] = min(best[index], cpu_seconds(work))
    return best


def _calibrated(make_input: Callable[[int], T], work: Callable[[T], object], size: int) -> int:
    """``size``, doubled until ``work`` on an input of that size costs at least FLOOR."""
    while True:
        run = partial(work, make_input(size))
        if min(cpu_seconds(run), cpu_seconds(run)) >= FLOOR:
            return size
        size *= 2


def assert_linear(
    make_input: Callable[[int], T],
    work: Callable[[T], object],
    size: int,
    *,
    factor: int = 10,
    limit: float = 30.0,
    runs: int = 5,
) -> None:
    """``work`` on ``make_input(factor * n)`` costs under ``limit`` times ``work`` on
    ``make_input(n)``, for ``n`` at least ``size`` (larger if needed to reach FLOOR)."""
    size = _calibrated(make_input, work, size)
    small, large = make_input(size), make_input(size * factor)
    small_cost, large_cost = best_of([lambda: work(small), lambda: work(large)], runs)
    assert large_cost < limit * small_cost, (
        f"{factor}x the input ({size} -> {size * factor}) took {large_cost / small_cost:.1f}x "
        f"the CPU time ({small_cost * 1e3:.2f} -> {large_cost * 1e3:.2f} ms; limit {limit}x)"
    )


def assert_costs_at_most(
    limit: float,
    make_input: Callable[[int], T],
    make_reference: Callable[[int], T],
    work: Callable[[T], object],
    size: int,
    *,
    runs: int = 5,
) -> None:
    """``work`` on ``make_input(n)`` costs under ``limit`` times ``work`` on
    ``make_reference(n)``, for ``n`` at least ``size`` (larger if the reference needs it to
    reach FLOOR)."""
    size = _calibrated(make_reference, work, size)
    subject, reference = make_input(size), make_reference(size)
    cost, base = best_of([lambda: work(subject), lambda: work(reference)], runs)
    assert cost < limit * base, (
        f"{cost * 1e3:.2f} ms against {base * 1e3:.2f} ms for the reference: "
        f"{cost / base:.1f}x (limit {limit}x)"
    )
