"""Reading Prometheus' text exposition format in tests: what a scrape of ``/metrics`` holds."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The samples of one scrape, by name and labels."""

    def __init__(self, text: str) -> None:
        self.samples = [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    @property
    def names(self) -> set[str]:
        """Every sample name (``_total``, ``_bucket``, ``_count``, ... included)."""
        return {sample.name for sample in self.samples}

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """The value of the sample ``name`` with exactly ``labels``; None when absent."""
        wanted = dict(labels or {})
        for sample in self.samples:
            if sample.name == name and sample.labels == wanted:
                return float(sample.value)
        return None

    def labels_of(self, name: str) -> list[dict[str, str]]:
        """The label sets of every sample ``name``."""
        return [dict(sample.labels) for sample in self.samples if sample.name == name]


async def scrape(session: aiohttp.ClientSession, url: str, **headers: str) -> Scrape:
    """GET ``url`` (a ``/metrics``) and parse it."""
    async with session.get(url, headers=headers) as answer:
        assert answer.status == 200, await answer.text()
        return Scrape(await answer.text())
