"""Reading the router's /metrics in tests, with prometheus_client's own parser (not ours)."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One /metrics answer: samples by name and labels, plus the raw text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.samples if n == name]


async def scrape(url: str, session: aiohttp.ClientSession | None = None) -> Scrape:
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.get(url + "/metrics") as resp:
            assert resp.status == 200, resp.status
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return Scrape(await resp.text())
    finally:
        if own:
            await session.close()
