"""The benchmark's output: a Markdown table with ratios and targets, and an SVG plot.

:func:`table` turns the results of :func:`bench.cli.run` into Markdown (printed by ``python -m
bench`` and pasted into ``docs/benchmarks.md``); :func:`svg` draws the throughput chart by hand
(no plotting library needed).
"""

from __future__ import annotations

from html import escape
from typing import Any

CPU_TARGET = 0.1  # cores per 1,000 msg/s
RSS_TARGET = 60.0  # MB
DLP_TARGET = 20.0  # µs per KB


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def natural_table(results: dict[str, Any]) -> list[str]:
    """The natural path against raw redis-py and the original framework, then where the time
    of one send and of one round trip goes."""
    natural, settings = results["natural"], results["settings"]
    mas, framework = natural["mas"], natural["framework"] or {}
    raw_rate, raw_rtt = natural["raw_unbatched"], natural["raw_round_trip"]
    lines = [
        f"Natural path: two SDK agents under `mas up`, every check on, "
        f"{settings['natural_messages']:,} sequential sends and "
        f"{settings['natural_requests']:,} sequential requests; original framework: "
        f"{natural['framework_said']}.",
        "",
        "| natural path | raw redis-py | original framework | mas | mas ÷ raw | target | met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for label, key, limit in (
        ("one-way, sequential `await send` (msg/s)", "send_rate", 0.6),
        ("one-way, sequential sends, delivered (msg/s)", "delivered_rate", None),
    ):
        ratio = mas[key] / raw_rate
        other = _rate(framework[key]) if key in framework else "-"
        target, met = (f"≥ {limit}x", _met(ratio >= limit)) if limit else ("-", "-")
        lines.append(
            f"| {label} | {_rate(raw_rate)} | {other} | {_rate(mas[key])} | {ratio:.2f}x "
            f"| {target} | {met} |"
        )
    for label, key, limit in (
        ("request/reply p50 (ms)", "p50_ms", 2.0),
        ("request/reply p99 (ms)", "p99_ms", 3.0),
    ):
        ratio = mas["round_trip"][key] / raw_rtt[key]
        other = _ms(framework["round_trip"][key]) if framework else "-"
        lines.append(
            f"| {label} | {raw_rtt[key]:.3f} | {other} | {mas['round_trip'][key]:.3f} "
            f"| {ratio:.2f}x | ≤ {limit:.0f}x | {_met(ratio <= limit)} |"
        )
    for title, key in (
        ("one sequential send (mean ms per message)", "one_way_stages"),
        ("one round trip (mean ms per request)", "round_trip_stages"),
    ):
        lines += ["", f"| where the time of {title} goes | ms |", "|---|---:|"]
        lines += [f"| {row['stage']} | {_ms(row['ms'])} |" for row in mas[key]]
    cpu = mas["one_way_cpu_us"], mas["round_trip_cpu_us"]
    lines += [
        "",
        "| CPU per message, each process from `/proc` (µs) | sequential send | round trip |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {role} | {cpu[0].get(role, 0):,.0f} | {cpu[1].get(role, 0):,.0f} |" for role in cpu[0]
    ]
    return lines


def table(results: dict[str, Any]) -> str:
    settings, machine = results["settings"], results["machine"]
    load_before = "/".join(f"{x:.2f}" for x in machine["load_before"])
    if "on" not in results:  # the natural path alone
        after = "/".join(f"{x:.2f}" for x in machine["load_after"])
        lines = [f"{machine['cpus']} CPUs, load average before the run {load_before}; "
                 f"server {results['server']}.", "", *natural_table(results), "",
                 f"Load average after the run: {after}."]  # fmt: skip
        return "\n".join(lines)
    raw, on, off = results["raw"], results["on"], results["off"]
    lines = [
        f"{machine['cpus']} CPUs, load average before the run {load_before}; "
        f"server {results['server']}; payload {settings['payload_bytes']} B of JSON; "
        f"{settings['messages']:,} one-way messages, {settings['requests']:,} round trips, "
        f"{settings['window']} sends in flight per sender.",
        "",
        "| measurement | checks on | checks off | raw unbatched | raw pipelined "
        "| on ÷ raw unbatched | target | met |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    fan, batch = settings["fan_in"], settings["batch"]
    for key, baseline, label in (
        ("one_to_one", "one_to_one", "one-way 1→1, SDK sends, 64 in flight (msg/s)"),
        ("fan_in", "fan_in", f"one-way {fan}→1 (msg/s)"),
        (
            "one_to_one_plain",
            "one_to_one",
            "one-way 1→1, plain HTTP: one request per send and per ack (msg/s)",
        ),
        (
            "one_to_one_batched",
            "one_to_one",
            f"one-way 1→1, batch send ({batch} per request) + batch ack (msg/s)",
        ),
    ):
        if key in on:
            ratio = on[key] / raw[baseline]["unbatched"]
            lines.append(
                f"| {label} | {_rate(on[key])} | {_rate(off[key])} "
                f"| {_rate(raw[baseline]['unbatched'])} | {_rate(raw[baseline]['pipelined'])} "
                f"| {ratio:.2f}x | ≥ 1.0x | {_met(ratio >= 1.0)} |"
            )
    for key, label, limit in (
        ("p50_ms", "round trip p50 (ms)", 3.0),
        ("p99_ms", "round trip p99 (ms)", 5.0),
    ):
        ratio = on["round_trip"][key] / raw["round_trip"][key]
        lines.append(
            f"| {label} | {on['round_trip'][key]:.3f} | {off['round_trip'][key]:.3f} "
            f"| {raw['round_trip'][key]:.3f} | - | {ratio:.2f}x | ≤ {limit:.0f}x "
            f"| {_met(ratio <= limit)} |"
        )
    for key, label in (
        ("sidecar_cores_per_1k", ""),
        ("sidecar_cores_per_1k_plain", ", plain HTTP 1→1"),
        ("sidecar_cores_per_1k_batched", ", batched 1→1"),
    ):
        if key in on:
            k_on, k_off = on[key], off[key]
            lines.append(
                f"| sidecar CPU per 1,000 msg/s{label} (cores; sender / sink) "
                f"| {k_on['sender']:.3f} / {k_on['sink']:.3f} "
                f"| {k_off['sender']:.3f} / {k_off['sink']:.3f} | - | - | - | ≤ {CPU_TARGET} "
                f"| {_met(max(k_on.values()) <= CPU_TARGET)} |"
            )
    rss_on, rss_off = on["sidecar_rss_mb"], off["sidecar_rss_mb"]
    worst_rss = max(rss_on.values())
    lines.append(
        f"| sidecar resident memory (MB; sender / sink) "
        f"| {rss_on['sender']:.0f} / {rss_on['sink']:.0f} "
        f"| {rss_off['sender']:.0f} / {rss_off['sink']:.0f} | - | - | - | ≤ {RSS_TARGET:.0f} "
        f"| {_met(worst_rss <= RSS_TARGET)} |"
    )
    for row in results["dlp"]:
        lines.append(
            f"| DLP, {row['case']}, {row['kb']:.1f} KB, {row['findings']} findings (µs/KB) "
            f"| {row['us_per_kb']:.1f} | - | - | - | - | ≤ {DLP_TARGET:.0f} "
            f"| {_met(row['us_per_kb'] <= DLP_TARGET)} |"
        )
    adversarial = results.get("dlp_adversarial") or []
    if adversarial:
        clean = adversarial[0]["clean_us_per_kb"]
        lines += [
            "",
            f"| DLP, adversarial input, 1 MB | as a value (µs/KB) | as a key (µs/KB) "
            f"| ÷ clean 16 KB message ({clean:.1f} µs/KB), value / key |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {row['case']} | {row['value_us_per_kb']:.1f} | {row['key_us_per_kb']:.1f} "
            f"| {row['value_ratio']:.1f}x / {row['key_ratio']:.1f}x |"
            for row in adversarial
        ]
    lines += [
        "",
        "| agent pairs | one Redis (msg/s) | three-shard cluster (msg/s) |",
        "|---:|---:|---:|",
    ]
    cluster = results.get("scale_cluster") or {}
    for pairs, rate in results["scale_single"].items():
        other = _rate(cluster[pairs]) if pairs in cluster else "-"
        lines.append(f"| {pairs} | {_rate(rate)} | {other} |")
    lines += ["", *natural_table(results)]
    after = "/".join(f"{x:.2f}" for x in machine["load_after"])
    lines += ["", f"Load average after the run: {after}."]
    return "\n".join(lines)


def svg(results: dict[str, Any]) -> str:
    """Two panels: one-way throughput (sidecar vs raw), and aggregate throughput by pairs."""
    raw, on, off = results["raw"], results["on"], results["off"]
    fan = results["settings"]["fan_in"]
    left = [
        ("1→1 SDK", [on["one_to_one"], off["one_to_one"], raw["one_to_one"]["unbatched"],
                 raw["one_to_one"]["pipelined"]]),
        (f"{fan}→1", [on["fan_in"], off["fan_in"], raw["fan_in"]["unbatched"],
                     raw["fan_in"]["pipelined"]]),
    ]  # fmt: skip
    if "one_to_one_batched" in on:
        left.insert(1, ("1→1 batched", [on["one_to_one_batched"], off["one_to_one_batched"],
                                        raw["one_to_one"]["unbatched"],
                                        raw["one_to_one"]["pipelined"]]))  # fmt: skip
    left_names = ["mas, checks on", "mas, checks off", "raw unbatched", "raw pipelined"]
    cluster = results.get("scale_cluster") or {}
    right = [
        (f"{pairs} pair{'s' if pairs != '1' else ''}", [rate, cluster.get(pairs, 0.0)])
        for pairs, rate in results["scale_single"].items()
    ]
    right_names = ["one Redis", "3-shard cluster"]
    colors = ["#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78"]
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" width="960" height="400" '
        'font-family="sans-serif" font-size="12">',
        '<rect width="960" height="400" fill="white"/>',
    ]
    parts += _panel(20, "One-way throughput (msg/s)", left, left_names, colors)
    parts += _panel(500, "Aggregate throughput, every check on (msg/s)", right, right_names,
                    [colors[0], colors[2]])  # fmt: skip
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _panel(
    x0: int, title: str, groups: list[tuple[str, list[float]]], names: list[str], colors: list[str]
) -> list[str]:
    width, height, top, bottom = 440, 400, 50, 330
    peak = max((v for _, values in groups for v in values), default=1.0) or 1.0
    scale = _nice(peak)
    out = [f'<text x="{x0 + width / 2}" y="22" text-anchor="middle" font-size="14">'
           f"{escape(title)}</text>"]  # fmt: skip
    for step in range(5):
        value = scale * step / 4
        y = bottom - (bottom - top) * step / 4
        out.append(f'<line x1="{x0 + 50}" x2="{x0 + width}" y1="{y}" y2="{y}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + 45}" y="{y + 4}" text-anchor="end">{value:,.0f}</text>')
    slot = (width - 60) / max(len(groups), 1)
    bar = slot * 0.8 / len(names)
    for index, (label, values) in enumerate(groups):
        gx = x0 + 55 + index * slot
        for series, value in enumerate(values):
            h = (bottom - top) * value / scale
            out.append(
                f'<rect x="{gx + series * bar:.1f}" y="{bottom - h:.1f}" width="{bar - 2:.1f}" '
                f'height="{h:.1f}" fill="{colors[series]}"/>'
            )
        out.append(f'<text x="{gx + slot * 0.4:.1f}" y="{bottom + 16}" text-anchor="middle">'
                   f"{escape(label)}</text>")  # fmt: skip
    for series, name in enumerate(names):
        lx = x0 + 55 + series * 105
        out.append(
            f'<rect x="{lx}" y="{height - 40}" width="12" height="12" fill="{colors[series]}"/>'
        )
        out.append(f'<text x="{lx + 16}" y="{height - 30}">{escape(name)}</text>')
    return out


def _nice(peak: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^n at or above ``peak``."""
    magnitude = 10 ** (len(str(int(peak))) - 1)
    for factor in (1, 2, 2.5, 5, 10):
        if peak <= factor * magnitude:
            return float(factor * magnitude)
    return float(10 * magnitude)
