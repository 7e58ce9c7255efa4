"""Reading Prometheus' text exposition format in tests: what a scrape of ``/metrics`` holds."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

# The sample names of each metric type, after the family's name.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


class Scrape:
    """The samples of one scrape, by name and labels."""

    def __init__(self, text: str) -> None:
        families = list(text_string_to_metric_families(text))
        self.samples = [sample for family in families for sample in family.samples]
        self.families = {family.name: family.type for family in families}

    @property
    def exported(self) -> set[str]:
        """Every name a query can select: the samples present, and those each declared family
        has once it has a series (a labelled metric has none before its first event)."""
        names = set(self.names)
        for name, kind in self.families.items():
            names |= {name + suffix for suffix in _SUFFIXES.get(kind, ("",))}
        return names

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
