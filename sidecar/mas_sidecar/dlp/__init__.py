"""Data-loss prevention for outgoing payloads: built-in and custom detectors and the scanner.

``detectors`` holds the built-in detectors, ``scanner`` walks a payload and decides; the send
path uses :class:`DlpScanner` with the DLP section of the gateway policy.
"""

from mas_sidecar.dlp.scanner import DlpScanner, Finding, ScanResult

__all__ = ["DlpScanner", "Finding", "ScanResult"]
