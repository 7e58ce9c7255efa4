"""The data-loss-prevention (DLP) section of the compiled gateway policy.

It says which built-in detectors run on an outgoing payload and what a match does: ``block`` the
message, ``redact`` the matched text before the message leaves the sidecar, or only ``log`` it.
Custom detectors add RE2 regular expressions (linear-time matching, so no pattern can make a scan
backtrack catastrophically). Every model forbids unknown fields, and a custom pattern that RE2
cannot compile, or that matches an empty string, is rejected here with RE2's own message, so an
invalid policy never reaches a sidecar.

Used by the sidecar's DLP scanner (``mas_sidecar.checks.dlp``) and embedded in the full gateway
policy, which the Kubernetes operator validates with the same models. RE2 is imported when a
pattern is first compiled: a sidecar whose policy turns no DLP on never loads it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from mas_core.schema import ResourceModel

BUILTIN_DETECTORS: frozenset[str] = frozenset(
    {
        "email",
        "phone",
        "us_ssn",
        "payment_card",
        "iban",
        "cloud_api_key",
        "generic_api_key",
        "private_key",
        "jwt",
        "medical_record_number",
    }
)
MAX_PATTERN_LENGTH = 1000
# Texts on which a custom pattern must not find an empty match: catches ``a*``, ``^``, ``\b``.
_EMPTY_MATCH_PROBES = ("", "a", "0", " ", "a b", "\n")


class DlpAction(StrEnum):
    """What a detector's match does to the message."""

    BLOCK = "block"  # refuse the message (HTTP 422 naming the detectors, never the data)
    REDACT = "redact"  # replace each match with ``[REDACTED:<detector>]`` and send
    LOG = "log"  # send unchanged; record the finding


def re2_options() -> Any:
    """RE2 options for custom patterns: quiet (errors are reported, not logged to stderr)."""
    import re2  # noqa: PLC0415 - lazy: only a policy with DLP needs RE2

    options = re2.Options()
    options.log_errors = False
    return options


def compile_pattern(pattern: str) -> Any:
    """Compile ``pattern`` with RE2, or raise ValueError with RE2's reason."""
    import re2  # noqa: PLC0415 - lazy, as in re2_options

    try:
        return re2.compile(pattern, re2_options())
    except re2.error as error:
        reason = error.args[0] if error.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"not a valid RE2 pattern: {reason}") from None


class CustomDetector(ResourceModel):
    """A detector defined by the policy: an RE2 pattern searched in strings (and keys)."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="The detector's name (lowercase letters, digits, '_' and '-'), unique and "
        "not that of a built-in detector.",
    )
    pattern: str = Field(
        max_length=MAX_PATTERN_LENGTH,
        description="An RE2 regular expression that must not match an empty string.",
    )
    action: DlpAction = Field(
        description="What a match does: block the message, redact the match, or log it."
    )
    keys: bool = Field(  # also scan object keys, not only string values
        default=True, description="Also scan object keys, not only string values."
    )

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str, info: ValidationInfo) -> str:
        name = info.data.get("name", "?")
        try:
            compiled = compile_pattern(pattern)
        except ValueError as error:
            raise ValueError(f"custom detector {name!r}: {error}") from None
        for probe in _EMPTY_MATCH_PROBES:
            if any(match.end() == match.start() for match in compiled.finditer(probe)):
                raise ValueError(
                    f"custom detector {name!r}: the pattern matches an empty string; "
                    "it must match at least one character"
                )
        return pattern


class DlpPolicy(ResourceModel):
    """Which detectors run on outgoing payloads, and the action each one's match takes."""

    enabled: bool = Field(default=True, description="Scan outgoing payloads at all.")
    detectors: dict[str, DlpAction] = Field(  # built-in name -> action
        default_factory=dict,
        description="Built-in detectors to run, each with its action (block, redact or log): "
        f"{', '.join(sorted(BUILTIN_DETECTORS))}.",
    )
    custom: list[CustomDetector] = Field(
        default_factory=list, description="Detectors defined by RE2 patterns."
    )

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: dict[str, DlpAction]) -> dict[str, DlpAction]:
        unknown = sorted(set(value) - BUILTIN_DETECTORS)
        if unknown:
            raise ValueError(
                f"unknown built-in detector(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(BUILTIN_DETECTORS))}"
            )
        return value

    @field_validator("custom")
    @classmethod
    def _distinct_names(cls, value: list[CustomDetector]) -> list[CustomDetector]:
        seen: set[str] = set()
        for detector in value:
            if detector.name in BUILTIN_DETECTORS:
                raise ValueError(
                    f"custom detector {detector.name!r} has the name of a built-in detector"
                )
            if detector.name in seen:
                raise ValueError(f"custom detector {detector.name!r} is defined twice")
            seen.add(detector.name)
        return value
