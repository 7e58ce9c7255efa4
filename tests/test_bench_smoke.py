"""The benchmark harness runs end to end and prints its table (a smoke run: no targets).

``python -m bench --smoke`` starts a Redis, sidecars, agents (and a three-shard cluster when a
cluster-capable binary exists) with tiny counts; only that it works is checked here, never a
number — benchmarks are not timed tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def test_the_benchmark_harness_runs_and_prints_its_table(tmp_path: Path) -> None:
    results, plot = tmp_path / "results.json", tmp_path / "plot.svg"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(results), "--svg", str(plot)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| one-way 1→1, SDK sends, 64 in flight (msg/s) |" in run.stdout
    assert "| one-way 1→1, plain HTTP: one request per send and per ack (msg/s) |" in run.stdout
    assert "| one-way 1→1, batch send (" in run.stdout
    assert "| round trip p99 (ms) |" in run.stdout
    assert "| agent pairs |" in run.stdout
    assert "| one-way, sequential `await send` (msg/s) |" in run.stdout
    assert "| where the time of one round trip (mean ms per request) goes | ms |" in run.stdout
    data = orjson.loads(results.read_bytes())
    assert data["on"]["one_to_one"] > 0 and data["raw"]["one_to_one"]["unbatched"] > 0
    assert data["on"]["one_to_one_batched"] > 0 and data["off"]["one_to_one_batched"] > 0
    assert data["on"]["one_to_one_plain"] > 0 and data["off"]["one_to_one_plain"] > 0
    natural = data["natural"]
    assert natural["mas"]["send_rate"] > 0 and natural["raw_unbatched"] > 0
    assert natural["mas"]["round_trip"]["p99_ms"] > 0 and natural["framework"] is None
    # Every row of the natural path's breakdowns has a time: the HTTP routes and the stages
    # inside them that the sidecars export on /metrics (mas_stage_seconds).
    for key in ("one_way_stages", "round_trip_stages"):
        missing = [row["stage"] for row in natural["mas"][key] if row["ms"] is None]
        assert not missing, (key, missing)
    for title in (
        "one sequential send (mean ms per message)",
        "one round trip (mean ms per request)",
    ):
        rows = table_after(run.stdout, f"| where the time of {title} goes | ms |")
        assert len(rows) > 2 and not [row for row in rows if row.endswith("| - |")], rows
    assert plot.read_text().startswith("<svg")


def table_after(text: str, header: str) -> list[str]:
    """The rows of the Markdown table that starts with the line ``header``."""
    lines = text.splitlines()
    start = lines.index(header) + 2  # past the header and its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_the_cost_per_agent_benchmark_runs_and_prints_its_table(tmp_path: Path) -> None:
    results = tmp_path / "idle.json"
    command = [
        sys.executable, "-m", "bench.idle", "--agents", "2", "--window", "2", "--settle", "1",
        "--burst", "2", "--json", str(results),
    ]  # fmt: skip
    run = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "| Redis commands per agent per s, idle |" in run.stdout
    [data] = orjson.loads(results.read_bytes())
    assert (data["sidecars_found"], data["agents_found"]) == (2, 2)
    assert data["memory_idle"]["sidecar"]["rss"]["mean"] > 0
    assert data["load"]["messages_per_s"] > 0
