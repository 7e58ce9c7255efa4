"""``mas-operator``: run the operator with its settings from the environment.

``mas-operator bootstrap ...`` instead creates the trust anchor's and the Redis password's
Secrets if absent, and exits (:mod:`mas_operator.bootstrap`, the Helm chart's hook Job).

This module loads with the SDK's dependencies alone: without the ``operator`` extra (kopf, the
Kubernetes client, ...), ``mas-operator`` says which extra to install in one line and exits with
status 1, instead of failing on an import. Otherwise it runs :func:`mas_operator.run.main`.
The console script ``mas-operator`` (see ``pyproject.toml``) and ``python -m mas_operator``
call :func:`main`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

from mas_core.extras import missing_extra

MISSING_EXTRA = 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mas-operator`` with ``argv`` (default: the process arguments); the exit status."""
    problem = missing_extra("mas-operator", "operator")
    if problem:
        print(problem, file=sys.stderr)
        return MISSING_EXTRA
    run: Callable[[Sequence[str] | None], int] = importlib.import_module("mas_operator.run").main
    return run(argv)
