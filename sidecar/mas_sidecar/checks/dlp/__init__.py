"""Data-loss prevention for what an agent sends: built-in and custom detectors and the scanner.

``detectors`` holds the built-in detectors, ``scanner`` walks a payload and decides; the send
path uses :class:`DlpScanner` with the DLP section of the gateway policy on every part of a
message the receiver reads, and the registry on the metadata an agent publishes.

The detectors and the scanner are imported on first use (their regular expressions take a few
MB and a tenth of a second to build): a sidecar whose policy has DLP off never loads them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mas_sidecar.checks.dlp.scanner import DlpScanner, Finding, PartsResult, ScanResult

__all__ = ["DlpScanner", "Finding", "PartsResult", "ScanResult", "redaction"]
_LAZY = {"DlpScanner", "Finding", "PartsResult", "ScanResult"}


def redaction(detector: str) -> str:
    """The text that replaces a span found by ``detector``."""
    return f"[REDACTED:{detector}]"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("mas_sidecar.checks.dlp.scanner"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
