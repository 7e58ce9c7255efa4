"""The chart's monitoring objects as tests read them: the PromQL of its alerts and of its
Grafana dashboard, and the metric names each expression queries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "mas"
EVERYTHING_ON = {
    "monitoring": {
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*+)(?!\s*\()")
_KEYWORDS = frozenset({"and", "or", "unless", "offset", "bool", "inf", "nan", "le"})


def rendered(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The objects the chart renders with every monitoring object on (and ``values``)."""
    chart = helm.Chart.load(str(CHART))
    text = chart.render(
        {**EVERYTHING_ON, **(values or {})}, name="mas", namespace="mas-system", is_install=True
    )
    bodies = [body for path, body in text.items() if not path.endswith("NOTES.txt")]
    return [doc for body in bodies for doc in yaml.safe_load_all(body) if doc]


def alert_rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of the PrometheusRule."""
    [rule] = [o for o in objects if o["kind"] == "PrometheusRule"]
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The Grafana dashboard of the chart's ConfigMap."""
    [configmap] = [
        o for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"].get("labels", {}).get("grafana_dashboard")
    ]  # fmt: skip
    [document] = configmap["data"].values()
    return dict(json.loads(document))


def queries(objects: list[dict[str, Any]]) -> list[str]:
    """The PromQL of every alert and every dashboard panel."""
    exprs = [str(rule["expr"]) for rule in alert_rules(objects)]
    exprs += [t["expr"] for panel in dashboard(objects)["panels"] for t in panel["targets"]]
    return exprs


def metric_names(expr: str) -> set[str]:
    """The metric (sample) names a PromQL expression selects: identifiers that are not
    functions, keywords, label names of a grouping or matcher, or inside a range."""
    for pattern in (_STRING, _MATCHERS, _RANGE, _GROUPING):
        expr = pattern.sub(" ", expr)
    return {name for name in _IDENTIFIER.findall(expr) if name not in _KEYWORDS}
