"""OpenTelemetry spans for graph requests: server, node and step-call spans.

A graph request is one SERVER span (continuing the caller's W3C ``traceparent`` and
``tracestate``), each node run is an INTERNAL span under it, and each call to a
service is a CLIENT span under its node, whose context is injected into that call's
``traceparent``/``tracestate`` headers whatever ``PROPAGATE_HEADERS`` says: the
services' own spans then hang under the router's.

A request the sampler leaves out gets a non-recording server span and no node or
step spans (the executor then takes its untraced path); its step calls still carry
its context, flagged not sampled, so the services' parent-based samplers agree.

Off unless the standard ``OTEL_*`` variables ask for it (:func:`tracer_from_env`).
Off, there is no tracer at all: the request path tests one reference per request,
node and step call, and builds no span objects.

Spans ride on OpenTelemetry's context (a contextvar), so the Ensemble members, each
its own asyncio task, see their node's span as parent.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Token

from multidict import CIMultiDict
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import __version__
from ..plan import NodePlan, StepPlan
from ..upstream import StepResponse

logger = logging.getLogger(__name__)

SERVICE_NAME = "graph-router"

# Attribute names: OpenTelemetry's HTTP conventions where they fit, ours otherwise.
GRAPH = "graph_router.graph"
NODE = "graph_router.node"
NODE_KIND = "graph_router.node.kind"
STEP = "graph_router.step"
SERVICE = "graph_router.service"
STATUS = "http.response.status_code"
URL = "url.full"


class GraphTracer:
    """Makes the spans of graph requests; one per process, from a TracerProvider.

    ``provider`` is the seam: serving uses :func:`tracer_from_env`, tests pass a
    provider with an in-memory exporter.
    """

    def __init__(self, provider: trace.TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("graph_router", __version__)
        self._propagator = TraceContextTextMapPropagator()

    def start_request(self, graph: str, method: str, path: str,
                      traceparent: str | None, tracestate: str | None) -> tuple[Span, Token[Context]]:
        """The request's SERVER span, made current; returns it and the token for :meth:`end_request`."""
        parent: Context | None = None
        if traceparent is not None:
            carrier = {"traceparent": traceparent}
            if tracestate is not None:
                carrier["tracestate"] = tracestate
            parent = self._propagator.extract(carrier)
        span = self._tracer.start_span(
            f"graph {graph}", context=parent, kind=SpanKind.SERVER,
            attributes={GRAPH: graph, "http.request.method": method, "url.path": path},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def end_request(span: Span, token: Token[Context] | None, status: int | None, cause: str | None) -> None:
        """Close the SERVER span: status None means no answer was sent (cancelled)."""
        if status is not None:
            span.set_attribute(STATUS, status)
        if status is None or status >= 500:
            span.set_status(Status(StatusCode.ERROR, cause or "cancelled"))
        if token is not None:
            otel_context.detach(token)
        span.end()

    async def node(self, graph: str, node: NodePlan, run: Awaitable[StepResponse]) -> StepResponse:
        """Await a node's run inside its INTERNAL span."""
        with self._tracer.start_as_current_span(
            f"node {node.name}", kind=SpanKind.INTERNAL,
            attributes={GRAPH: graph, NODE: node.name, NODE_KIND: node.kind.value},
        ) as span:
            result = await run
            span.set_attribute(STATUS, result.status)
            return result

    async def call(self, graph: str, node: NodePlan, step: StepPlan, headers: CIMultiDict[str],
                   send: Callable[[CIMultiDict[str]], Awaitable[StepResponse]]) -> StepResponse:
        """Run ``send`` (one step call) inside a CLIENT span, with that span in its headers."""
        with self._tracer.start_as_current_span(
            f"step {node.name}/{step.label}", kind=SpanKind.CLIENT,
            attributes={GRAPH: graph, NODE: node.name, STEP: step.label, SERVICE: step.target, URL: step.url or ""},
        ) as span:
            result = await send(self.carried(headers))
            span.set_attribute(STATUS, result.status)
            if not result.ok:
                span.set_status(Status(StatusCode.ERROR, f"the service answered {result.status}"))
            return result

    def carried(self, headers: CIMultiDict[str]) -> CIMultiDict[str]:
        """A copy of ``headers`` carrying the current span's context, replacing any propagated one."""
        carried: CIMultiDict[str] = CIMultiDict(headers)
        carried.popall("traceparent", None)
        carried.popall("tracestate", None)
        self._propagator.inject(carried)
        return carried

    def shutdown(self) -> None:
        """Flush and stop exporting (blocking: call from a thread at shutdown)."""
        shutdown = getattr(self.provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def _exporters_wanted(env: Mapping[str, str]) -> list[str]:
    """Exporter names from ``OTEL_TRACES_EXPORTER``; unset means OTLP only if an endpoint is set.

    The specification's default is ``otlp``, but a router that starts exporting to
    localhost:4318 just because nothing was configured would log connection errors in
    every pod: we export only when asked to.
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = env.get("OTEL_TRACES_EXPORTER")
    if names is None:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    return [n.strip().lower() for n in names.split(",") if n.strip() and n.strip().lower() != "none"]


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter | None:
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    logger.error("OTLP protocol %r is not supported (use http/protobuf); traces are not exported", protocol)
    return None


def tracer_from_env(env: Mapping[str, str] | None = None) -> GraphTracer | None:
    """A tracer when the ``OTEL_*`` variables ask for traces; None (tracing off) otherwise.

    ``OTEL_TRACES_EXPORTER`` (otlp, console, none), the OTLP endpoint, headers, timeout
    and compression variables, ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER(_ARG)`` and ``OTEL_BSP_*`` are read by the SDK as usual.
    """
    env = os.environ if env is None else env
    processors: list[SpanProcessor] = []
    for name in _exporters_wanted(env):
        exporter: SpanExporter | None
        if name == "otlp":
            exporter = _otlp_exporter(env)
        elif name == "console":
            exporter = ConsoleSpanExporter()
        else:
            logger.error("OTEL_TRACES_EXPORTER %r is not supported (otlp, console, none); ignored", name)
            exporter = None
        if exporter is not None:
            processors.append(BatchSpanProcessor(exporter))
    if not processors:
        return None
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    for processor in processors:
        provider.add_span_processor(processor)
    logger.info("tracing on: exporting spans with %s", ", ".join(_exporters_wanted(env)))
    return GraphTracer(provider)
