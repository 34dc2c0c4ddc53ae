"""Prometheus metrics kept as plain numbers and rendered only when scraped.

Why not prometheus_client on the request path: a labelled child's ``inc`` or
``observe`` takes a lock and costs 0.4-0.8 µs; a graph request touches two to three
series per step, which would add several microseconds to a router whose whole budget
is a few tens. Here every series is a dict entry or a list of bucket counts, bound
once per plan (:meth:`Metrics.bind`), so a request does a few integer additions and
one bucket search per histogram. The text exposition format is written at scrape time.

A scrape renders a *snapshot*: a JSON-able dict of every series. The same snapshot
is what sibling worker processes send each other, so one process can add up all
workers' snapshots (:func:`merge`) and render the sum (:func:`render`).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from typing import Any

from .. import __version__, compiled_modules
from ..llm.metrics import FAMILIES as LLM_FAMILIES
from ..llm.metrics import LLMMetrics
from ..llm.metrics import merge as llm_merge
from ..llm.metrics import render as llm_render
from ..plan import GraphPlan, StepPlan

# Upper bounds, in seconds. Request and step times span a cached answer (sub-ms) to
# an LLM call (a minute); the router's own time is tens of microseconds when healthy,
# so its buckets start there and stop where something is clearly wrong.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
OVERHEAD_BUCKETS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)

# Whether the request path runs compiled (see setup.py): a pure-Python build is slower.
_COMPILED = "true" if compiled_modules() else "false"

# The ``code`` label where no HTTP status exists.
CODE_ERROR = "error"  # the step call got no usable answer (refused, reset, timed out)
CODE_CANCELLED = "cancelled"  # the work was cancelled: the client left, a sibling failed, serverWrite passed

Code = int | str


class Histogram:
    """Bucket counts (the last one is +Inf) and the sum of observed values.

    Compiled, ``add`` is a C loop over at most a few tens of bounds: cheaper than a
    ``bisect`` call and the attribute traffic of ``counts[...] += 1`` from outside.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is >= it (Prometheus' ``le``)."""
        bounds = self.bounds
        i = 0
        n = len(bounds)
        while i < n:
            bound: float = bounds[i]  # a C double when compiled: the comparison stays in C
            if bound >= value:
                break
            i += 1
        self.counts[i] += 1
        self.sum += value


# Durations split by outcome code: the count of a code's histogram is that code's
# counter, so a request or step updates one histogram and no separate counter.
ByCode = dict[Code, Histogram]


class GraphSeries:
    """One graph's request series; kept across reloads of a graph with the same name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.by_code: ByCode = {}
        self.overhead = Histogram(OVERHEAD_BUCKETS)
        self.in_flight = 0


class PlanSeries:
    """Every series one plan can touch, looked up once when the plan is bound."""

    def __init__(self, graph: GraphSeries, steps: dict[StepPlan, ByCode]) -> None:
        self.graph = graph
        self.steps = steps


def observe(by_code: ByCode, code: Code, seconds: float) -> None:
    """Count one outcome and its duration."""
    h = by_code.get(code)
    if h is None:
        h = by_code[code] = Histogram(DURATION_BUCKETS)
    h.add(seconds)


class Metrics:
    """All series of this process. Create one per process; bind each plan once."""

    def __init__(self) -> None:
        self._graphs: dict[str, GraphSeries] = {}
        self._steps: dict[tuple[str, str, str, str], ByCode] = {}
        self.reloads = 0
        self.reload_failures = 0
        self.logger_events: dict[tuple[str, str], int] = {}  # (graph, outcome): graph_router/payload_logger.py
        self.llm = LLMMetrics()  # graph_router/llm/metrics.py
        # Counters only, labelled by endpoint / mirror outcome (graph_router/endpoints.py, mirror.py):
        # (graph, node, step, endpoint, code) and (graph, node, step, outcome).
        self.endpoint_requests: dict[tuple[str, str, str, str, str], int] = {}
        self.mirror_requests: dict[tuple[str, str, str, str], int] = {}

    def bind(self, plan: GraphPlan) -> PlanSeries:
        """The series of ``plan``'s graph and steps, created on first use.

        A reloaded graph of the same name continues its counters; a step is labelled by
        its name, or its index when it has none.
        """
        graph = self._graphs.get(plan.name)
        if graph is None:
            graph = self._graphs[plan.name] = GraphSeries(plan.name)
        steps: dict[StepPlan, ByCode] = {}
        for node in plan.nodes.values():
            for step in node.steps:
                steps[step] = self._steps.setdefault((plan.name, node.name, step.label, step.target), {})
        return PlanSeries(graph, steps)

    def snapshot(self) -> dict[str, Any]:
        """Every series as plain JSON-able data: rows of labels, then bucket counts and sum."""
        return {
            "requests": [[g.name, str(code), h.counts, h.sum] for g in self._graphs.values()
                         for code, h in g.by_code.items()],
            "overhead": [[g.name, g.overhead.counts, g.overhead.sum] for g in self._graphs.values()],
            "in_flight": [[g.name, g.in_flight] for g in self._graphs.values()],
            "steps": [[*key, str(code), h.counts, h.sum] for key, by_code in self._steps.items()
                      for code, h in by_code.items()],
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
            "logger_events": [[*key, n] for key, n in self.logger_events.items()],
            "llm": self.llm.snapshot(),
            "endpoint_requests": [[*key, n] for key, n in self.endpoint_requests.items()],
            "mirror_requests": [[*key, n] for key, n in self.mirror_requests.items()],
        }


_HISTOGRAM_ROWS = ("requests", "overhead", "steps")
_COUNTER_ROWS = ("endpoint_requests", "mirror_requests", "logger_events")


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add up snapshots from several processes series by series.

    Histograms and in-flight gauges are summed; reload counters take the largest value,
    since every worker reloads the same file and a sum would count each reload once per
    worker.
    """
    snapshots_list = snapshots = list(snapshots)  # read more than once
    snapshots = list(snapshots)  # read twice: here and for the LLM series
    rows: dict[str, dict[tuple[str, ...], list[Any]]] = {name: {} for name in _HISTOGRAM_ROWS}
    in_flight: dict[str, int] = {}
    reloads = failures = 0
    for snap in snapshots_list:
        for name in _HISTOGRAM_ROWS:
            into = rows[name]
            for *labels, counts, total in snap[name]:
                key = tuple(labels)
                row = into.get(key)
                if row is None:
                    into[key] = [list(counts), total]
                else:
                    row[0] = [a + b for a, b in zip(row[0], counts, strict=True)]
                    row[1] += total
        for graph, n in snap["in_flight"]:
            in_flight[graph] = in_flight.get(graph, 0) + n
        reloads = max(reloads, snap["reloads"])
        failures = max(failures, snap["reload_failures"])
    merged: dict[str, Any] = {name: [[*key, *row] for key, row in rows[name].items()] for name in _HISTOGRAM_ROWS}
    merged["in_flight"] = [[graph, n] for graph, n in in_flight.items()]
    merged["reloads"] = reloads
    merged["reload_failures"] = failures
    merged["llm"] = llm_merge(snap.get("llm", {}) for snap in snapshots)
    for name in _COUNTER_ROWS:
        sums: dict[tuple[str, ...], int] = {}
        for snap in snapshots_list:
            for *labels, n in snap.get(name, ()):
                sums[tuple(labels)] = sums.get(tuple(labels), 0) + n
        merged[name] = [[*key, n] for key, n in sums.items()]
    return merged


# --- the text exposition format (version 0.0.4) ----------------------------------------

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

FAMILIES: dict[str, tuple[str, str]] = {
    "graph_router_requests_total": (
        "counter", "Graph requests answered, by graph and HTTP status code (cancelled: no answer was sent)."),
    "graph_router_request_duration_seconds": (
        "histogram", "Time from the router taking a graph request to its answer being ready."),
    "graph_router_overhead_seconds": (
        "histogram", "The router's own time per graph request: its duration minus the time spent waiting "
                     "on step calls."),
    "graph_router_in_flight_requests": ("gauge", "Graph requests being answered now."),
    "graph_router_step_requests_total": (
        "counter", "Steps run, by graph, node, step, service and outcome (HTTP status, error or cancelled)."),
    "graph_router_step_duration_seconds": ("histogram", "Time a step took, its retries included."),
    "graph_router_endpoint_requests_total": (
        "counter", "Calls to one endpoint of a step with several, by graph, node, step, endpoint and outcome."),
    "graph_router_mirror_requests_total": (
        "counter", "Mirrored step calls by outcome: same or different answer, error (no answer), dropped (cap)."),
    "graph_router_logger_events_total": (
        "counter", "Payload logger CloudEvents by graph and outcome: sent, failed (the sink refused or was "
                   "unreachable), dropped (its queue was full)."),
    "graph_router_graph_reloads_total": ("counter", "New graphs swapped in while serving (serve --reload)."),
    "graph_router_graph_reload_failures_total": (
        "counter", "Graph file contents rejected while serving; the previous graph kept serving."),
    "graph_router_build_info": ("gauge", "Always 1; the labels name the running build."),
    "graph_router_scrape_workers": ("gauge", "Worker processes whose series this scrape adds up."),
}


FAMILIES.update(LLM_FAMILIES)  # graph_router/llm/metrics.py


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _float(value: float) -> str:
    """A float as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` would write it."""
    if value == float("inf"):
        return "+Inf"
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str) -> None:
        kind, text = FAMILIES[name]
        self.lines.append(f"# HELP {name} {text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: list[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_float(value)}" if labels else f"{name} {_float(value)}")

    def histogram(self, name: str, labels: list[tuple[str, str]], bounds: tuple[float, ...],
                  counts: list[int], total: float) -> None:
        running = 0
        for bound, n in zip((*bounds, float("inf")), counts, strict=True):
            running += n
            self.sample(name + "_bucket", [*labels, ("le", _float(bound))], running)
        self.sample(name + "_sum", labels, total)
        self.sample(name + "_count", labels, running)


def _sum_by(rows: Iterable[list[Any]], width: int) -> dict[tuple[str, ...], tuple[list[int], float]]:
    """Histogram rows added up over all but their first ``width`` labels."""
    out: dict[tuple[str, ...], tuple[list[int], float]] = {}
    for row in rows:
        key, counts, total = tuple(row[:width]), row[-2], row[-1]
        seen = out.get(key)
        out[key] = (counts, total) if seen is None else (
            [a + b for a, b in zip(seen[0], counts, strict=True)], seen[1] + total)
    return out


def _code_order(row: list[Any]) -> tuple[Any, ...]:
    return (*row[:-3], row[-3].rjust(9))  # numeric codes in numeric order, words after


def _code_order_n(row: list[Any]) -> tuple[Any, ...]:
    return (*row[:-2], row[-2].rjust(9))


def render(snapshot: Mapping[str, Any], workers: int = 1) -> bytes:
    """The snapshot as Prometheus text exposition, every family with HELP and TYPE."""
    w = _Writer()
    requests = sorted(snapshot["requests"], key=_code_order)
    w.family("graph_router_requests_total")
    for graph, code, counts, _ in requests:
        w.sample("graph_router_requests_total", [("graph", graph), ("code", code)], sum(counts))
    w.family("graph_router_request_duration_seconds")
    for (graph,), (counts, total) in sorted(_sum_by(requests, 1).items()):
        w.histogram("graph_router_request_duration_seconds", [("graph", graph)], DURATION_BUCKETS, counts, total)
    w.family("graph_router_overhead_seconds")
    for graph, counts, total in sorted(snapshot["overhead"]):
        w.histogram("graph_router_overhead_seconds", [("graph", graph)], OVERHEAD_BUCKETS, counts, total)
    w.family("graph_router_in_flight_requests")
    for graph, n in sorted(snapshot["in_flight"]):
        w.sample("graph_router_in_flight_requests", [("graph", graph)], n)
    steps = sorted(snapshot["steps"], key=_code_order)
    w.family("graph_router_step_requests_total")
    for graph, node, step, service, code, counts, _ in steps:
        w.sample("graph_router_step_requests_total",
                 [("graph", graph), ("node", node), ("step", step), ("service", service), ("code", code)],
                 sum(counts))
    w.family("graph_router_step_duration_seconds")
    for (graph, node, step), (counts, total) in sorted(_sum_by(steps, 3).items()):
        w.histogram("graph_router_step_duration_seconds", [("graph", graph), ("node", node), ("step", step)],
                    DURATION_BUCKETS, counts, total)
    w.family("graph_router_endpoint_requests_total")
    for graph, node, step, endpoint, code, n in sorted(snapshot.get("endpoint_requests", ()), key=_code_order_n):
        w.sample("graph_router_endpoint_requests_total", [("graph", graph), ("node", node), ("step", step),
                                                          ("endpoint", endpoint), ("code", code)], n)
    w.family("graph_router_mirror_requests_total")
    for graph, node, step, outcome, n in sorted(snapshot.get("mirror_requests", ())):
        w.sample("graph_router_mirror_requests_total",
                 [("graph", graph), ("node", node), ("step", step), ("outcome", outcome)], n)
    llm_render(w, snapshot.get("llm", {}))
    w.family("graph_router_logger_events_total")
    for graph, outcome, n in sorted(snapshot.get("logger_events", ())):
        w.sample("graph_router_logger_events_total", [("graph", graph), ("outcome", outcome)], n)
    w.family("graph_router_graph_reloads_total")
    w.sample("graph_router_graph_reloads_total", [], snapshot["reloads"])
    w.family("graph_router_graph_reload_failures_total")
    w.sample("graph_router_graph_reload_failures_total", [], snapshot["reload_failures"])
    w.family("graph_router_build_info")
    w.sample("graph_router_build_info",
             [("version", __version__), ("python", platform.python_version()), ("compiled", _COMPILED)], 1)
    w.family("graph_router_scrape_workers")
    w.sample("graph_router_scrape_workers", [], workers)
    w.lines.append("")
    return "\n".join(w.lines).encode("utf-8")
