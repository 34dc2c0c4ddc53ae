"""What the router records per graph request, in one place outside the request logic.

:class:`Telemetry` is made once per process and decides everything up front (tracer
or none, sibling workers or none, explain allowed or not). Per request,
:meth:`Telemetry.begin` makes a :class:`RequestProbe`, which picks out the few headers it
cares about; the executor reports each step to the probe, and the router
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
from collections.abc import Callable
from contextvars import Token
from functools import partial
from time import perf_counter
from typing import TypeVar

from multidict import CIMultiDict
from opentelemetry.context import Context
from opentelemetry.trace import Span

from ..errors import RequestError
from ..http1.request_reader import Request  # not through httpserver: compiled, it cimports Request
from ..httpserver import Response, StreamingResponse
from ..llm.answer import settle
from ..llm.step import LLMRequest
from ..plan import GraphPlan, NodePlan, StepPlan
from .accesslog import AccessLog
from .exchange import SnapshotExchange, WorkerGroup
from .explain import REQUEST_HEADER, RESPONSE_HEADER, header_value, wanted
from .logs import FIELDS
from .metrics import (
    CODE_CANCELLED,
    CODE_ERROR,
    CONTENT_TYPE,
    Code,
    GraphSeries,
    Histogram,
    Metrics,
    PlanSeries,
    merge,
    observe,
    render,
)
from .tracing import GraphTracer

logger = logging.getLogger(__name__)

Answer = TypeVar("Answer", Response, StreamingResponse)


class Telemetry:
    """The process's metrics, tracer and explain switch.

    tracer: None (the default) is tracing off. workers: this process's place in a
    ``--workers`` group, so that a scrape adds up every worker. explain: whether
    clients may ask for ``X-Graph-Explain`` (it shows service URLs). Whether successful
    requests are logged (INFO enabled for this module), and how each request's line is
    written (see :mod:`.accesslog`), is decided here, once: configure logging before
    making the Telemetry.
    """

    def __init__(self, *, tracer: GraphTracer | None = None, workers: WorkerGroup | None = None,
                 explain: bool = True) -> None:
        self.metrics = Metrics()
        self.tracer = tracer
        self.explain = explain
        self.access = AccessLog(logger)
        self.log_requests = self.access.enabled(False)
        self._exchange = SnapshotExchange(workers, self.metrics.snapshot) if workers is not None else None
        # ``begin(plan, series, request)`` starts recording one graph request. A partial,
        # not a method: the probe's constructor does the work, one Python frame fewer.
        self.begin: Callable[[GraphPlan, PlanSeries, Request], RequestProbe] = partial(RequestProbe, self)

    async def start(self) -> None:
        """Start answering sibling workers' scrapes (no-op for a single process)."""
        if self._exchange is not None:
            await self._exchange.start()

    async def close(self) -> None:
        """Stop answering siblings, write the request lines still queued, flush spans still buffered."""
        self.access.flush()
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


class RequestProbe:
    """One graph request's records: step outcomes, time spent waiting on steps, its span.

    ``explain`` is the executor's path record when the client asked for it. The methods
    the request path calls are written out flat (no helper calls): each runs once per
    request or step, and CPython charges for every call and attribute lookup.
    """

    def __init__(self, telemetry: Telemetry, plan: GraphPlan, series: PlanSeries, request: Request) -> None:
        self.started = perf_counter()
        self.explain: list[dict[str, object]] | None = None
        self.request_id: str | None = None
        self.traceparent: str | None = None
        self.tracestate: str | None = None
        self.span: Span | None = None
        self.token: Token[Context] | None = None
        self.extras = False  # explain or a span: work beyond the metrics
        self.tracer: GraphTracer | None = None  # set when this request makes node and step spans
        self.unsampled = False  # traced, but left out by the sampler
        self._process_tracer: GraphTracer | None = None
        self.waited = 0.0  # seconds during which at least one step call was outstanding
        self.outstanding = 0
        self.wait_from = 0.0
        self.llm: LLMRequest | None = None  # LLM figures and tenant (graph_router/llm)
        self.endpoint: str | None = None  # the endpoint chosen for a step with several (the last one)
        self.telemetry = telemetry
        self.steps: dict[StepPlan, dict[Code, Histogram]] = series.steps
        self.series: GraphSeries = series.graph
        graph = self.series
        graph.in_flight += 1
        # Our four headers all start with x or t: one test per header skips the others
        # (Host, Content-Type, ...) without lowercasing them. (A regular expression over
        # the joined names measured several times slower for a handful of headers.)
        for name, value in request.headers:
            if name[:1] in "xXtT":
                self._header(telemetry, name.lower(), value)
        tracer = telemetry.tracer
        if tracer is not None:
            self.span, self.token = tracer.start_request(
                plan.name, request.method, request.path, self.traceparent, self.tracestate)
            self.extras = True
            self.unsampled = not self.span.is_recording()
            if not self.unsampled:  # a request the sampler left out makes no node or step spans
                self.tracer = tracer
            self._process_tracer = tracer

    def _header(self, telemetry: Telemetry, name: str, value: str) -> None:
        if name == REQUEST_HEADER:
            if telemetry.explain and wanted(value):
                self.explain = []
                self.extras = True
        elif name == "x-request-id":
            self.request_id = value
        elif name == "traceparent":
            self.traceparent = value
        elif name == "tracestate":
            self.tracestate = value

    @property
    def graph(self) -> str:
        return self.series.name

    def step_headers(self, headers: CIMultiDict[str]) -> CIMultiDict[str]:
        """The headers for this request's step calls (the router calls it when ``extras``).

        A sampled request's calls get their own client span's context, one per call; an
        unsampled one's carry the request's context, put in here once.
        """
        if self.unsampled and self._process_tracer is not None:
            return self._process_tracer.carried(headers)
        return headers

    # --- steps (called by the executor) ---------------------------------------------
    def call_started(self) -> float:
        """A step call to a service goes out now; returns the time (perf_counter seconds)."""
        now = perf_counter()
        if not self.outstanding:
            self.wait_from = now
        self.outstanding += 1
        return now

    def call_done(self, node: NodePlan, step: StepPlan, status: int, started: float) -> None:
        """A call to a service answered ``status``; it went out at ``started``."""
        end = perf_counter()
        self.outstanding -= 1
        if not self.outstanding:
            self.waited += end - self.wait_from
        if status // 100 != 2:
            self._warn_step(node, step, {"status": status})
        by_code: dict[Code, Histogram] = self.steps[step]
        h = by_code.get(status)
        if h is None:
            observe(by_code, status, end - started)
        else:
            h.add(end - started)

    def step_done(self, step: StepPlan, status: int, started: float) -> None:
        """A step that ran a node answered ``status``."""
        observe(self.steps[step], status, perf_counter() - started)

    def step_failed(self, node: NodePlan, step: StepPlan, exc: BaseException, started: float) -> None:
        """A step ended without an answer: an error, or cancelled."""
        end = perf_counter()
        code: Code
        if step.url is not None:
            self.outstanding -= 1
            if not self.outstanding:
                self.waited += end - self.wait_from
            if isinstance(exc, RequestError):
                code = CODE_ERROR
                self._warn_step(node, step, {"cause": exc.cause})
            else:
                code = CODE_CANCELLED
        else:
            code = exc.status if isinstance(exc, RequestError) else CODE_CANCELLED
        observe(self.steps[step], code, end - started)

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
        graph = self.series
        graph.in_flight -= 1
        status = answer.status
        streamed = False
        if isinstance(answer, StreamingResponse):
            # Its head goes out first: the histograms and the log line follow (head_sent).
            streamed = True
            self._status: int = status
            self._total: float = total
            self._own: float = own
            self._cause: str | None = cause
            self._log_after_head: bool = False
            answer.after_head = self.head_sent
        else:
            h = graph.by_code.get(status)
            if h is None:
                observe(graph.by_code, status, total)
            else:
                h.add(total)
            graph.overhead.add(own)
        timing = ("Server-Timing", _server_timing(total, own))
        headers = answer.headers
        if headers is None:
            answer.headers = headers = [timing]
        else:
            headers.append(timing)
        if self.llm is not None and settle(self.llm, self, answer, status, total, own, cause):
            return answer  # a stream still being tallied: its span and log line end with it
        if self.extras:
            if self.explain is not None:
                headers.append((RESPONSE_HEADER, header_value(self.explain)))
            if self.span is not None:
                GraphTracer.end_request(self.span, self.token, status, cause)
        if streamed:
            self._log_after_head = True
            return answer
        if cause is not None:
            self._log(logging.WARNING, status, total, own, cause)
        elif self.telemetry.log_requests:
            self._log(logging.INFO, status, total, own, None)
        return answer

    def timing_now(self) -> tuple[str, str]:
        """``Server-Timing`` for a head written before ``end`` (a step's call still counts as waited)."""
        now = perf_counter()
        waited = self.waited
        if self.outstanding:
            waited += now - self.wait_from
        total = now - self.started
        return ("Server-Timing", _server_timing(total, total - waited))

    def head_sent(self) -> None:
        """A streamed answer's head is written: its histograms, and its log line unless that
        waits for the stream's end (an OpenAI step's figures). Off the first byte's path."""
        graph = self.series
        status, total, own = self._status, self._total, self._own
        h = graph.by_code.get(status)
        if h is None:
            observe(graph.by_code, status, total)
        else:
            h.add(total)
        graph.overhead.add(own)
        if self._log_after_head:
            self._log_after_head = False
            self.write_log(status, total, own, self._cause)

    def write_log(self, status: int, total: float, own: float, cause: str | None) -> None:
        """The request's line, written when its answer is known (a tallied stream's: at its end)."""
        if cause is not None:
            self._log(logging.WARNING, status, total, own, cause)
        elif self.telemetry.log_requests:
            self._log(logging.INFO, status, total, own, None)

    def abandon(self, exc: BaseException) -> None:
        """The request ended without an answer from us: cancelled, or a bug (answered 500)."""
        total = perf_counter() - self.started
        graph = self.series
        graph.in_flight -= 1
        cancelled = isinstance(exc, asyncio.CancelledError)
        observe(graph.by_code, CODE_CANCELLED if cancelled else 500, total)
        graph.overhead.add(total - self.waited)
        if self.span is not None:
            GraphTracer.end_request(self.span, self.token, None if cancelled else 500, type(exc).__name__)
        self._log(logging.INFO, None, total, total - self.waited, "cancelled" if cancelled else repr(exc))

    def _log(self, level: int, status: int | None, total: float, own: float, cause: str | None) -> None:
        access = self.telemetry.access
        warning = level == logging.WARNING
        if access.enabled(warning):
            if self.llm is not None:  # with the LLM figures (graph_router/llm) after the usual fields
                access.request_with(self.llm.fields(), warning, self.series.name, status, total, own,
                                    self.request_id, self.trace_id, cause, self.endpoint)
                return
            access.request(warning, self.series.name, status, total, own, self.request_id, self.trace_id, cause,
                           self.endpoint)


# "000" to "999": milliseconds written with three decimals without float formatting,
# which is a large share of what recording a request costs.
_FRACTION = tuple(f"{i:03d}" for i in range(1000))


def _server_timing(total: float, own: float) -> str:
    """``Server-Timing``'s value: the request's time and the router's own, in ms."""
    t = int(total * 1_000_000) if total > 0 else 0
    o = int(own * 1_000_000) if own > 0 else 0
    return f"total;dur={t // 1000}.{_FRACTION[t % 1000]}, router;dur={o // 1000}.{_FRACTION[o % 1000]}"
