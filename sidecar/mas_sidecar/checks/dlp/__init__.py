"""Data-loss prevention for what an agent sends: built-in and custom detectors and the scanner.

``detectors`` holds the built-in detectors, ``scanner`` walks a payload and decides; the send
path uses :class:`DlpScanner` with the DLP section of the gateway policy on every part of a
message the receiver reads, and the registry on the metadata an agent publishes.
"""

from mas_sidecar.checks.dlp.scanner import DlpScanner, Finding, PartsResult, ScanResult, redaction

__all__ = ["DlpScanner", "Finding", "PartsResult", "ScanResult", "redaction"]
