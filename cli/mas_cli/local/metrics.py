"""Message counters scraped from a sidecar's ``/metrics`` for the ``mas up`` summary table.

:func:`message_counts` parses Prometheus text (pure); :func:`scrape` fetches it. Counters a
sidecar does not export, or a sidecar that does not answer, give ``None`` rather than an error.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from mas_core.sidecar_token import authorization

SENT = "mas_messages_sent_total"
DELIVERED = "mas_deliveries_total"
REPLIES = "mas_replies_total"
DECISIONS = "mas_gateway_decisions_total"
DEAD_LETTERS = "mas_dead_letters_total"
_COUNTED = (SENT, DELIVERED, REPLIES, DECISIONS, DEAD_LETTERS)


@dataclass(frozen=True)
class MessageCounts:
    """One sidecar's messages: sent, delivered to its agent, replies its requests got, refused by
    its gateway checks (any decision but ``accepted``) and dead-lettered; ``None`` when unknown."""

    sent: float | None = None
    delivered: float | None = None
    replies: float | None = None
    refused: float | None = None
    dead_letters: float | None = None


def message_counts(text: str) -> MessageCounts:
    """Sum the samples of each counter of :class:`MessageCounts`, whatever their labels."""
    totals: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            if f"{family.name}_total" in _COUNTED:
                totals.setdefault(f"{family.name}_total", 0.0)  # exported: 0 until counted
            for sample in family.samples:
                if sample.name in _COUNTED and sample.labels.get("decision") != "accepted":
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    except ValueError:
        return MessageCounts()
    return MessageCounts(
        sent=totals.get(SENT),
        delivered=totals.get(DELIVERED),
        replies=totals.get(REPLIES),
        refused=totals.get(DECISIONS),
        dead_letters=totals.get(DEAD_LETTERS),
    )


def scrape(base_url: str, token: str, timeout: float = 0.5) -> MessageCounts:
    """The counters of the sidecar at ``base_url`` (asked with its agent's ``token``); unknown
    when it does not answer."""
    request = urllib.request.Request(
        f"{base_url}/metrics", headers={"Authorization": authorization(token)}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return message_counts(answer.read().decode("utf-8", errors="replace"))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return MessageCounts()
