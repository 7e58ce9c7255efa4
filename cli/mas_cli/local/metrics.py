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


@dataclass(frozen=True)
class MessageCounts:
    """Messages sent and deliveries made by one sidecar; ``None`` when unknown."""

    sent: float | None = None
    delivered: float | None = None


def message_counts(text: str) -> MessageCounts:
    """Sum the samples of the sent and delivered counters, whatever their labels."""
    totals: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in (SENT, DELIVERED):
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    except ValueError:
        return MessageCounts()
    return MessageCounts(sent=totals.get(SENT), delivered=totals.get(DELIVERED))


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
