"""The LLM series: tokens, time to first token, time between tokens, fallbacks, budget rejections.

Kept as plain numbers like the rest of :mod:`graph_router.telemetry.metrics`, which
adds them to its snapshot, merges them across workers and renders them.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

TTFT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
INTER_TOKEN_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)

FAMILIES: dict[str, tuple[str, str]] = {
    "graph_router_llm_tokens_total": (
        "counter", "Tokens read from OpenAI steps' usage, by kind (prompt or completion)."),
    "graph_router_step_time_to_first_token_seconds": (
        "histogram", "From an OpenAI step call going out to its first streamed event with content."),
    "graph_router_step_inter_token_seconds": (
        "histogram", "Mean time between content events of one streamed OpenAI answer."),
    "graph_router_fallbacks_total": ("counter", "Step calls that moved on to a fallback, by the fallback taken."),
    "graph_router_budget_rejections_total": ("counter", "Requests turned away by a tenant budget, by limit."),
}


class StepSeries:
    """One OpenAI step's series."""

    __slots__ = ("completion", "itl", "itl_sum", "prompt", "ttft", "ttft_sum")

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0
        self.ttft = [0] * (len(TTFT_BUCKETS) + 1)
        self.ttft_sum = 0.0
        self.itl = [0] * (len(INTER_TOKEN_BUCKETS) + 1)
        self.itl_sum = 0.0

    def observe_ttft(self, seconds: float) -> None:
        self.ttft[bisect_left(TTFT_BUCKETS, seconds)] += 1
        self.ttft_sum += seconds

    def observe_itl(self, seconds: float) -> None:
        self.itl[bisect_left(INTER_TOKEN_BUCKETS, seconds)] += 1
        self.itl_sum += seconds


class LLMMetrics:
    """This process's LLM series, created on first use (only LLM steps and budgets touch them)."""

    def __init__(self) -> None:
        self.steps: dict[tuple[str, str, str], StepSeries] = {}
        self.fallbacks: dict[tuple[str, str, str, str], int] = {}
        self.rejections: dict[tuple[str, str, str], int] = {}

    def step(self, graph: str, node: str, step: str) -> StepSeries:
        key = (graph, node, step)
        series = self.steps.get(key)
        if series is None:
            series = self.steps[key] = StepSeries()
        return series

    def fallback(self, graph: str, node: str, step: str, to: str) -> None:
        key = (graph, node, step, to)
        self.fallbacks[key] = self.fallbacks.get(key, 0) + 1

    def rejected(self, graph: str, tenant: str, limit: str) -> None:
        key = (graph, tenant, limit)
        self.rejections[key] = self.rejections.get(key, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "tokens": [[*k, "prompt", s.prompt] for k, s in self.steps.items()]
            + [[*k, "completion", s.completion] for k, s in self.steps.items()],
            "ttft": [[*k, s.ttft, s.ttft_sum] for k, s in self.steps.items() if any(s.ttft)],
            "itl": [[*k, s.itl, s.itl_sum] for k, s in self.steps.items() if any(s.itl)],
            "fallbacks": [[*k, n] for k, n in self.fallbacks.items()],
            "rejections": [[*k, n] for k, n in self.rejections.items()],
        }


_COUNTERS = ("tokens", "fallbacks", "rejections")
_HISTOGRAMS = ("ttft", "itl")


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several processes' LLM snapshots added up, series by series."""
    counters: dict[str, dict[tuple[Any, ...], int]] = {name: {} for name in _COUNTERS}
    histograms: dict[str, dict[tuple[Any, ...], list[Any]]] = {name: {} for name in _HISTOGRAMS}
    for snap in snapshots:
        for name in _COUNTERS:
            for *labels, n in snap.get(name, ()):
                key = tuple(labels)
                counters[name][key] = counters[name].get(key, 0) + n
        for name in _HISTOGRAMS:
            for *labels, counts, total in snap.get(name, ()):
                key = tuple(labels)
                row = histograms[name].get(key)
                if row is None:
                    histograms[name][key] = [list(counts), total]
                else:
                    row[0] = [a + b for a, b in zip(row[0], counts, strict=True)]
                    row[1] += total
    out: dict[str, Any] = {name: [[*k, n] for k, n in counters[name].items()] for name in _COUNTERS}
    for name in _HISTOGRAMS:
        out[name] = [[*k, *row] for k, row in histograms[name].items()]
    return out


class Writer(Protocol):
    def family(self, name: str) -> None: ...
    def sample(self, name: str, labels: list[tuple[str, str]], value: float) -> None: ...
    def histogram(self, name: str, labels: list[tuple[str, str]], bounds: tuple[float, ...],
                  counts: list[int], total: float) -> None: ...


def render(w: Writer, snap: Mapping[str, Any]) -> None:
    """Write the LLM families (HELP and TYPE always, samples when there are any)."""
    w.family("graph_router_llm_tokens_total")
    for graph, node, step, kind, n in sorted(snap.get("tokens", ())):
        w.sample("graph_router_llm_tokens_total",
                 [("graph", graph), ("node", node), ("step", step), ("kind", kind)], n)
    for family, name, bounds in (("graph_router_step_time_to_first_token_seconds", "ttft", TTFT_BUCKETS),
                                 ("graph_router_step_inter_token_seconds", "itl", INTER_TOKEN_BUCKETS)):
        w.family(family)
        for graph, node, step, counts, total in sorted(snap.get(name, ())):
            w.histogram(family, [("graph", graph), ("node", node), ("step", step)], bounds, counts, total)
    w.family("graph_router_fallbacks_total")
    for graph, node, step, to, n in sorted(snap.get("fallbacks", ())):
        w.sample("graph_router_fallbacks_total", [("graph", graph), ("node", node), ("step", step), ("to", to)], n)
    w.family("graph_router_budget_rejections_total")
    for graph, tenant, limit, n in sorted(snap.get("rejections", ())):
        w.sample("graph_router_budget_rejections_total", [("graph", graph), ("tenant", tenant), ("limit", limit)], n)
