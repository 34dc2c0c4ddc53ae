"""What the router records per graph request, in one place outside the request logic.

:class:`Telemetry` is made once per process and decides everything up front (tracer
or none, sibling workers or none, explain allowed or not). Per request,
:meth:`Telemetry.begin` reads the few headers it cares about in one pass and returns
a :class:`RequestProbe`; the executor reports each step to the probe, and the router
hands the answer to :meth:`RequestProbe.end`, which updates the metrics, adds
``Server-Timing`` (and ``X-Graph-Explain`` when asked) and writes the request's one
log line.

The router's own time is the request's duration minus the time during which at
least one step call was outstanding (Ensemble members overlap: their union counts
once). It includes parsing and building bodies, conditions, merges and our HTTP
client's work, and excludes time the services take.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from contextvars import Token
from time import perf_counter
from typing import TypeVar

from opentelemetry.context import Context
from opentelemetry.trace import Span

from ..errors import RequestError
from ..httpserver import Request, Response, StreamingResponse
from ..plan import GraphPlan, NodePlan, StepPlan
from .exchange import SnapshotExchange, WorkerGroup
from .explain import REQUEST_HEADER, RESPONSE_HEADER, header_value, wanted
from .logs import FIELDS
from .metrics import CODE_CANCELLED, CODE_ERROR, CONTENT_TYPE, Metrics, PlanSeries, merge, render
from .tracing import GraphTracer

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer", Response, StreamingResponse)


class Telemetry:
    """The process's metrics, tracer and explain switch.

    tracer: None (the default) is tracing off. workers: this process's place in a
    ``--workers`` group, so that a scrape adds up every worker. explain: whether
    clients may ask for ``X-Graph-Explain`` (it shows service URLs).
    """

    def __init__(self, *, tracer: GraphTracer | None = None, workers: WorkerGroup | None = None,
                 explain: bool = True) -> None:
        self.metrics = Metrics()
        self.tracer = tracer
        self.explain = explain
        self._exchange = SnapshotExchange(workers, self.metrics.snapshot) if workers is not None else None

    async def start(self) -> None:
        """Start answering sibling workers' scrapes (no-op for a single process)."""
        if self._exchange is not None:
            await self._exchange.start()

    async def close(self) -> None:
        """Stop answering siblings and flush spans still buffered."""
        if self._exchange is not None:
            await self._exchange.close()
        if self.tracer is not None:
            await asyncio.to_thread(self.tracer.shutdown)

    def bind(self, plan: GraphPlan) -> PlanSeries:
        return self.metrics.bind(plan)

    async def scrape(self) -> Response:
        """``GET /metrics``: this process's series plus every sibling worker's that answers."""
        snapshots = [self.metrics.snapshot()]
        if self._exchange is not None:
            snapshots += await self._exchange.gather()
        return Response(200, render(merge(snapshots), len(snapshots)), CONTENT_TYPE)

    def begin(self, plan: GraphPlan, series: PlanSeries, request: Request) -> RequestProbe:
        """Start recording one graph request."""
        probe = RequestProbe(self.tracer, series)
        # One pass over the headers, comparing names only when their length matches.
        for name, value in request.headers:
            n = len(name)
            if n == 15:
                if self.explain and name.lower() == REQUEST_HEADER and wanted(value):
                    probe.explain = []
            elif n == 12:
                if name.lower() == "x-request-id":
                    probe.request_id = value
            elif n == 11:
                if name.lower() == "traceparent":
                    probe.traceparent = value
            elif n == 10 and name.lower() == "tracestate":
                probe.tracestate = value
        series.graph.in_flight += 1
        if self.tracer is not None:
            probe.span, probe.token = self.tracer.start_request(
                plan.name, request.method, request.path, probe.traceparent, probe.tracestate)
        return probe


class RequestProbe:
    """One graph request's records: step outcomes, time spent waiting on steps, its span.

    ``explain`` is the executor's path record when the client asked for it.
    """

    # Defaults live on the class: a request writes only what it uses (four attributes
    # for a plain request, rather than fourteen slots).
    explain: list[dict[str, object]] | None = None
    request_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    span: Span | None = None
    token: Token[Context] | None = None
    waited = 0.0  # seconds during which at least one step call was outstanding
    outstanding = 0
    wait_from = 0.0

    def __init__(self, tracer: GraphTracer | None, series: PlanSeries) -> None:
        self.started = perf_counter()
        self.tracer = tracer
        self.series = series
        self.steps = series.steps

    @property
    def graph(self) -> str:
        return self.series.graph.name

    # --- steps (called by the executor) ---------------------------------------------
    def call_started(self, now: float) -> None:
        """A step call to a service went out at ``now`` (perf_counter seconds)."""
        if self.outstanding == 0:
            self.wait_from = now
        self.outstanding += 1

    def step_done(self, node: NodePlan, step: StepPlan, status: int, started: float) -> None:
        """A step answered ``status``; it started at ``started``. Inlined: runs once per step."""
        end = perf_counter()
        if step.url is not None:
            self.outstanding -= 1
            if not self.outstanding:
                self.waited += end - self.wait_from
            if not 200 <= status <= 299:
                self._warn_step(node, step, {"status": status})
        series = self.steps[step]
        codes = series.codes
        codes[status] = codes.get(status, 0) + 1
        h = series.duration
        h.counts[bisect_left(h.bounds, end - started)] += 1
        h.sum += end - started

    def step_failed(self, node: NodePlan, step: StepPlan, exc: BaseException, started: float) -> None:
        """A step ended without an answer: an error, or cancelled."""
        end = perf_counter()
        cancelled = not isinstance(exc, RequestError)
        if step.url is not None:
            self._call_ended(end)
            code: int | str = CODE_CANCELLED if cancelled else CODE_ERROR
            if isinstance(exc, RequestError):
                self._warn_step(node, step, {"cause": exc.cause})
        else:
            code = exc.status if isinstance(exc, RequestError) else CODE_CANCELLED
        self.steps[step].observe(code, end - started)

    def _call_ended(self, now: float) -> None:
        self.outstanding -= 1
        if self.outstanding == 0:
            self.waited += now - self.wait_from

    def _warn_step(self, node: NodePlan, step: StepPlan, outcome: dict[str, object]) -> None:
        if logger.isEnabledFor(logging.WARNING):
            logger.warning("step failed", extra={FIELDS: {
                "graph": self.graph, "node": node.name, "step": step.label, "service": step.target,
                **outcome, "request_id": self.request_id, "trace_id": self.trace_id,
            }})

    # --- the answer (called by the router) ------------------------------------------
    @property
    def trace_id(self) -> str | None:
        """This request's trace: our span's, else the caller's ``traceparent``'s."""
        if self.span is not None:
            return format(self.span.get_span_context().trace_id, "032x")
        tp = self.traceparent
        if tp is not None and len(tp) >= 55 and tp[2] == "-":
            return tp[3:35]
        return None

    def end(self, answer: Answer, cause: str | None = None) -> Answer:
        """Record the answer (``cause``: the graph failed) and add the timing headers to it."""
        total = perf_counter() - self.started
        own = total - self.waited
        graph = self.series.graph
        graph.in_flight -= 1
        # GraphSeries.answered, inlined: this runs once per request.
        requests = graph.requests
        requests[answer.status] = requests.get(answer.status, 0) + 1
        h = graph.duration
        h.counts[bisect_left(h.bounds, total)] += 1
        h.sum += total
        h = graph.overhead
        h.counts[bisect_left(h.bounds, own)] += 1
        h.sum += own
        timing = ("Server-Timing", "total;dur=%.3f, router;dur=%.3f" % (total * 1000, own * 1000))  # noqa: UP031
        headers = answer.headers
        if headers is None:
            answer.headers = headers = [timing]
        else:
            headers.append(timing)
        if self.explain is not None:
            headers.append((RESPONSE_HEADER, header_value(self.explain)))
        if self.span is not None:
            GraphTracer.end_request(self.span, self.token, answer.status, cause)
        level = logging.WARNING if cause is not None else logging.INFO
        if logger.isEnabledFor(level):
            self._log(level, answer.status, total, own, cause)
        return answer

    def abandon(self, exc: BaseException) -> None:
        """The request ended without an answer from us: cancelled, or a bug (answered 500)."""
        total = perf_counter() - self.started
        graph = self.series.graph
        graph.in_flight -= 1
        cancelled = isinstance(exc, asyncio.CancelledError)
        graph.answered(CODE_CANCELLED if cancelled else 500, total, total - self.waited)
        if self.span is not None:
            GraphTracer.end_request(self.span, self.token, None if cancelled else 500, type(exc).__name__)
        if logger.isEnabledFor(logging.INFO):
            self._log(logging.INFO, None, total, total - self.waited, "cancelled" if cancelled else repr(exc))

    def _log(self, level: int, status: int | None, total: float, own: float, cause: str | None) -> None:
        fields: dict[str, object] = {
            "graph": self.graph, "status": status, "duration_ms": round(total * 1000, 3),
            "router_ms": round(own * 1000, 3), "request_id": self.request_id, "trace_id": self.trace_id,
        }
        if cause is not None:
            fields["cause"] = cause
        logger.log(level, "graph request", extra={FIELDS: fields})
