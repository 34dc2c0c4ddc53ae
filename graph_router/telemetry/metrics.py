"""Prometheus metrics kept as plain numbers and rendered only when scraped.

Why not prometheus_client on the request path: a labelled child's ``inc`` or
``observe`` takes a lock and costs 0.4-0.8 µs; a graph request touches two to three
series per step, which would add several microseconds to a router whose whole budget
is a few tens. Here every series is a dict entry or a list of bucket counts, bound
once per plan (:meth:`Metrics.bind`), so a request does a few integer additions and
one ``bisect`` per histogram. The text exposition format is written at scrape time.

A scrape renders a *snapshot*: a JSON-able dict of every series. The same snapshot
is what sibling worker processes send each other, so one process can add up all
workers' snapshots (:func:`merge`) and render the sum (:func:`render`).
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import __version__
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

# The ``code`` label where no HTTP status exists.
CODE_ERROR = "error"  # the step call got no usable answer (refused, reset, timed out)
CODE_CANCELLED = "cancelled"  # the work was cancelled: the client left, a sibling failed, serverWrite passed

Code = int | str


class Histogram:
    """Bucket counts (the last one is +Inf) and the sum of observed values."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, which is Prometheus' ``le`` bucket.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class GraphSeries:
    """One graph's request series; kept across reloads of a graph with the same name."""

    __slots__ = ("duration", "in_flight", "name", "overhead", "requests")

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: dict[Code, int] = {}
        self.duration = Histogram(DURATION_BUCKETS)
        self.overhead = Histogram(OVERHEAD_BUCKETS)
        self.in_flight = 0

    def answered(self, code: Code, total: float, own: float) -> None:
        requests = self.requests
        requests[code] = requests.get(code, 0) + 1
        # Histogram.observe inlined: this runs once per request.
        h = self.duration
        h.counts[bisect_left(h.bounds, total)] += 1
        h.sum += total
        h = self.overhead
        h.counts[bisect_left(h.bounds, own)] += 1
        h.sum += own


class StepSeries:
    """One step's series: outcomes by code (with its service) and durations."""

    __slots__ = ("codes", "duration")

    def __init__(self, codes: dict[Code, int], duration: Histogram) -> None:
        self.codes = codes
        self.duration = duration

    def observe(self, code: Code, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.duration.observe(seconds)


@dataclass(frozen=True, slots=True)
class PlanSeries:
    """Every series one plan can touch, looked up once when the plan is bound."""

    graph: GraphSeries
    steps: Mapping[StepPlan, StepSeries]


class Metrics:
    """All series of this process. Create one per process; bind each plan once."""

    def __init__(self) -> None:
        self._graphs: dict[str, GraphSeries] = {}
        self._step_codes: dict[tuple[str, str, str, str], dict[Code, int]] = {}
        self._step_durations: dict[tuple[str, str, str], Histogram] = {}
        self.reloads = 0
        self.reload_failures = 0

    def bind(self, plan: GraphPlan) -> PlanSeries:
        """The series of ``plan``'s graph and steps, created on first use.

        A reloaded graph of the same name continues its counters; a step is labelled by
        its name, or its index when it has none.
        """
        graph = self._graphs.get(plan.name)
        if graph is None:
            graph = self._graphs[plan.name] = GraphSeries(plan.name)
        steps: dict[StepPlan, StepSeries] = {}
        for node in plan.nodes.values():
            for step in node.steps:
                codes = self._step_codes.setdefault((plan.name, node.name, step.label, step.target), {})
                duration = self._step_durations.get((plan.name, node.name, step.label))
                if duration is None:
                    duration = self._step_durations[(plan.name, node.name, step.label)] = Histogram(DURATION_BUCKETS)
                steps[step] = StepSeries(codes, duration)
        return PlanSeries(graph, steps)

    def snapshot(self) -> dict[str, Any]:
        """Every series as plain JSON-able data (codes become strings)."""
        return {
            "graphs": [
                [g.name, _codes(g.requests), g.duration.counts, g.duration.sum, g.overhead.counts, g.overhead.sum,
                 g.in_flight]
                for g in self._graphs.values()
            ],
            "step_codes": [[*key, _codes(codes)] for key, codes in self._step_codes.items()],
            "step_durations": [[*key, h.counts, h.sum] for key, h in self._step_durations.items()],
            "reloads": self.reloads,
            "reload_failures": self.reload_failures,
        }


def _codes(codes: Mapping[Code, int]) -> dict[str, int]:
    return {str(code): n for code, n in codes.items()}


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Add up snapshots from several processes series by series.

    Counters, histograms and in-flight gauges are summed; reload counters take the
    largest value, since every worker reloads the same file and a sum would count
    each reload once per worker.
    """
    graphs: dict[str, list[Any]] = {}
    step_codes: dict[tuple[str, ...], dict[str, int]] = {}
    step_durations: dict[tuple[str, ...], list[Any]] = {}
    reloads = failures = 0
    for snap in snapshots:
        for name, codes, dcounts, dsum, ocounts, osum, in_flight in snap["graphs"]:
            g = graphs.get(name)
            if g is None:
                graphs[name] = [name, dict(codes), list(dcounts), dsum, list(ocounts), osum, in_flight]
                continue
            _add_codes(g[1], codes)
            _add_counts(g[2], dcounts)
            g[3] += dsum
            _add_counts(g[4], ocounts)
            g[5] += osum
            g[6] += in_flight
        for *key, codes in snap["step_codes"]:
            _add_codes(step_codes.setdefault(tuple(key), {}), codes)
        for *key, counts, total in snap["step_durations"]:
            h = step_durations.get(tuple(key))
            if h is None:
                step_durations[tuple(key)] = [list(counts), total]
            else:
                _add_counts(h[0], counts)
                h[1] += total
        reloads = max(reloads, snap["reloads"])
        failures = max(failures, snap["reload_failures"])
    return {
        "graphs": list(graphs.values()),
        "step_codes": [[*key, codes] for key, codes in step_codes.items()],
        "step_durations": [[*key, h[0], h[1]] for key, h in step_durations.items()],
        "reloads": reloads,
        "reload_failures": failures,
    }


def _add_codes(into: dict[str, int], codes: Mapping[str, int]) -> None:
    for code, n in codes.items():
        into[code] = into.get(code, 0) + n


def _add_counts(into: list[int], counts: list[int]) -> None:
    for i, n in enumerate(counts):
        into[i] += n


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
    "graph_router_graph_reloads_total": ("counter", "New graphs swapped in while serving (serve --reload)."),
    "graph_router_graph_reload_failures_total": (
        "counter", "Graph file contents rejected while serving; the previous graph kept serving."),
    "graph_router_build_info": ("gauge", "Always 1; the labels name the running build."),
    "graph_router_scrape_workers": ("gauge", "Worker processes whose series this scrape adds up."),
}


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


def render(snapshot: Mapping[str, Any], workers: int = 1) -> bytes:
    """The snapshot as Prometheus text exposition, every family with HELP and TYPE."""
    w = _Writer()
    graphs = sorted(snapshot["graphs"])
    w.family("graph_router_requests_total")
    for name, codes, *_ in graphs:
        for code in sorted(codes):
            w.sample("graph_router_requests_total", [("graph", name), ("code", code)], codes[code])
    w.family("graph_router_request_duration_seconds")
    for name, _, dcounts, dsum, *_ in graphs:
        w.histogram("graph_router_request_duration_seconds", [("graph", name)], DURATION_BUCKETS, dcounts, dsum)
    w.family("graph_router_overhead_seconds")
    for name, *_, ocounts, osum, _ in graphs:
        w.histogram("graph_router_overhead_seconds", [("graph", name)], OVERHEAD_BUCKETS, ocounts, osum)
    w.family("graph_router_in_flight_requests")
    for name, *_, in_flight in graphs:
        w.sample("graph_router_in_flight_requests", [("graph", name)], in_flight)
    w.family("graph_router_step_requests_total")
    for graph, node, step, service, codes in sorted(snapshot["step_codes"]):
        for code in sorted(codes):
            w.sample("graph_router_step_requests_total",
                     [("graph", graph), ("node", node), ("step", step), ("service", service), ("code", code)],
                     codes[code])
    w.family("graph_router_step_duration_seconds")
    for graph, node, step, counts, total in sorted(snapshot["step_durations"]):
        w.histogram("graph_router_step_duration_seconds", [("graph", graph), ("node", node), ("step", step)],
                    DURATION_BUCKETS, counts, total)
    w.family("graph_router_graph_reloads_total")
    w.sample("graph_router_graph_reloads_total", [], snapshot["reloads"])
    w.family("graph_router_graph_reload_failures_total")
    w.sample("graph_router_graph_reload_failures_total", [], snapshot["reload_failures"])
    w.family("graph_router_build_info")
    w.sample("graph_router_build_info",
             [("version", __version__), ("python", platform.python_version())], 1)
    w.family("graph_router_scrape_workers")
    w.sample("graph_router_scrape_workers", [], workers)
    w.lines.append("")
    return "\n".join(w.lines).encode("utf-8")
