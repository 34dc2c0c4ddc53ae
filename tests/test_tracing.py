"""Traces: span tree and attributes, W3C context continued into step calls, OTLP export when asked."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from conftest import echo
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from graph_router.settings import ServerSettings
from graph_router.telemetry import GraphTracer, Telemetry, tracer_from_env

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced(exporter: InMemorySpanExporter) -> Telemetry:
    """Telemetry with tracing on, spans kept in memory."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Telemetry(tracer=GraphTracer(provider))


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {s.name: s for s in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    ctx = span.context
    assert ctx is not None
    return ctx.span_id


async def test_span_tree_of_nested_graph(start_service: Any, start_router: Any, traced: Telemetry,
                                         exporter: InMemorySpanExporter) -> None:
    """Server span, node spans and client spans nest as the graph does, with their attributes."""
    svc = await start_service({"/a": echo, "/b": echo, "/c": echo})
    router = await start_router({"nodes": {
        "root": {"routerType": "Sequence", "steps": [
            {"name": "first", "serviceUrl": svc.url("/a")},
            {"name": "fan", "nodeName": "both", "data": "$response"}]},
        "both": {"routerType": "Ensemble", "steps": [
            {"name": "b", "serviceUrl": svc.url("/b")}, {"serviceUrl": svc.url("/c")}]}}}, telemetry=traced)
    assert (await router.post({"x": 1}))[0] == 200
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"graph test", "node root", "step root/first", "node both", "step both/b", "step both/1"}
    server = spans["graph test"]
    assert server.kind == SpanKind.SERVER and server.parent is None
    assert server.attributes is not None and server.attributes["http.response.status_code"] == 200
    assert parent_of(spans["node root"]) == span_id(server)
    assert parent_of(spans["step root/first"]) == span_id(spans["node root"])
    assert parent_of(spans["node both"]) == span_id(spans["node root"])
    for member in ("step both/b", "step both/1"):
        assert parent_of(spans[member]) == span_id(spans["node both"])
        assert spans[member].kind == SpanKind.CLIENT
    first = spans["step root/first"].attributes
    assert first is not None
    assert dict(first) == {"graph_router.graph": "test", "graph_router.node": "root", "graph_router.step": "first",
                           "graph_router.service": svc.url("/a"), "url.full": svc.url("/a"),
                           "http.response.status_code": 200}
    assert spans["node both"].attributes == {"graph_router.graph": "test", "graph_router.node": "both",
                                             "graph_router.node.kind": "Ensemble",
                                             "http.response.status_code": 200}
    assert len({s.context.trace_id for s in spans.values() if s.context is not None}) == 1


async def test_incoming_traceparent_is_continued_into_every_step_call(
        start_service: Any, start_router: Any, traced: Telemetry, exporter: InMemorySpanExporter) -> None:
    """The caller's trace continues: each service receives the router's client span as its parent."""
    svc = await start_service({"/a": echo, "/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/a")}, {"serviceUrl": svc.url("/b")}]}}}, telemetry=traced)
    status, _, _ = await router.post({"x": 1}, headers={"traceparent": TRACEPARENT, "tracestate": "vendor=abc"})
    assert status == 200
    spans = by_name(exporter.get_finished_spans())
    server = spans["graph test"]
    assert server.parent is not None and format(server.parent.span_id, "016x") == CALLER_SPAN
    for received, step in zip(svc.received, ("step root/0", "step root/1"), strict=True):
        [tp] = received.header_values("traceparent")
        version, trace_id, parent, flags = tp.split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
        assert parent == format(span_id(spans[step]), "016x")
        assert received.header_values("tracestate") == ["vendor=abc"]


async def test_traceparent_replaced_once_when_propagate_headers_lists_it(
        start_service: Any, start_router: Any, traced: Telemetry) -> None:
    """With PROPAGATE_HEADERS matching traceparent, the service still gets exactly one: the router's span."""
    svc = await start_service({"/a": echo})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, propagate_headers="Traceparent|X-Id")
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/a")}]}}}, settings=settings, telemetry=traced)
    await router.post({"x": 1}, headers={"traceparent": TRACEPARENT, "X-Id": "7"})
    [received] = svc.received
    [tp] = received.header_values("traceparent")
    assert tp.split("-")[1] == TRACE_ID and tp.split("-")[2] != CALLER_SPAN
    assert received.header_values("X-Id") == ["7"]


async def test_new_trace_without_incoming_context(start_service: Any, start_router: Any, traced: Telemetry,
                                                  exporter: InMemorySpanExporter) -> None:
    """Without a traceparent the router starts a trace and still injects it into step calls."""
    svc = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/a")}]}}}, telemetry=traced)
    await router.post({"x": 1})
    spans = by_name(exporter.get_finished_spans())
    ctx = spans["graph test"].context
    assert ctx is not None
    [tp] = svc.received[0].header_values("traceparent")
    assert tp.split("-")[1] == format(ctx.trace_id, "032x")


async def test_failures_mark_spans_as_errors(start_service: Any, start_router: Any, traced: Telemetry,
                                             exporter: InMemorySpanExporter) -> None:
    """A service's 503 marks its client span; a Hard step's failure marks the server span with status 503."""
    svc = await start_service({"/down": (503, {"error": "busy"})})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/down"), "dependency": "Hard"}]}}}, telemetry=traced)
    assert (await router.post({"x": 1}))[0] == 503
    spans = by_name(exporter.get_finished_spans())
    assert spans["step root/0"].status.status_code == StatusCode.ERROR
    assert spans["graph test"].status.status_code == StatusCode.ERROR
    assert spans["graph test"].attributes is not None
    assert spans["graph test"].attributes["http.response.status_code"] == 503


async def test_transport_error_is_recorded_on_the_client_span(start_router: Any, traced: Telemetry,
                                                              exporter: InMemorySpanExporter) -> None:
    """A refused connection ends the client span with an error status and the exception recorded."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/m"
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": dead}]}}}, telemetry=traced)
    assert (await router.post({"x": 1}))[0] == 500
    spans = by_name(exporter.get_finished_spans())
    step = spans["step root/0"]
    assert step.status.status_code == StatusCode.ERROR
    assert [e.name for e in step.events] == ["exception"]
    assert spans["graph test"].status.status_code == StatusCode.ERROR


async def test_unsampled_request_still_carries_its_context(start_service: Any, start_router: Any,
                                                           exporter: InMemorySpanExporter) -> None:
    """A request the sampler leaves out records no span, yet its step calls carry its trace, not sampled."""
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    svc = await start_service({"/a": echo, "/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/a")}, {"serviceUrl": svc.url("/b")}]}}},
        telemetry=Telemetry(tracer=GraphTracer(provider)))
    assert (await router.post({"x": 1}, headers={"traceparent": TRACEPARENT}))[0] == 200
    assert exporter.get_finished_spans() == ()
    for received in svc.received:
        [tp] = received.header_values("traceparent")
        version, trace_id, parent, flags = tp.split("-")
        assert (version, trace_id, flags) == ("00", TRACE_ID, "00")
        assert parent != CALLER_SPAN


async def test_tracing_off_adds_no_trace_headers(start_service: Any, start_router: Any) -> None:
    """With tracing off (the default) the router makes no spans: the caller's traceparent passes unchanged."""
    svc = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/a")}]}}})
    assert router.router.telemetry.tracer is None
    await router.post({"x": 1}, headers={"traceparent": TRACEPARENT})
    await router.post({"x": 1})
    assert svc.received[0].header_values("traceparent") == [TRACEPARENT]
    assert svc.received[1].header_values("traceparent") == []


@pytest.mark.parametrize(("env", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, False),
])
def test_tracing_is_on_only_when_the_environment_asks(env: dict[str, str], on: bool) -> None:
    """OTEL_* variables decide: an exporter or endpoint turns tracing on; unset, none or disabled keep it off."""
    tracer = tracer_from_env(env)
    assert (tracer is not None) == on
    if tracer is not None:
        tracer.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_spans_are_exported_over_otlp(start_service: Any, tmp_path: Path) -> None:
    """``serve`` with OTEL_EXPORTER_OTLP_ENDPOINT posts the request's spans to that collector as OTLP/HTTP."""
    batches: list[ExportTraceServiceRequest] = []

    async def collect(request: web.Request) -> web.Response:
        batch = ExportTraceServiceRequest()
        batch.ParseFromString(await request.read())
        batches.append(batch)
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector = await start_service({"/v1/traces": collect})
    svc = await start_service({"/m": echo})
    graph = tmp_path / "g.json"
    graph.write_bytes(orjson.dumps({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/m")}]}}}))
    port = free_port()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.base, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_SERVICE_NAME": "router-under-test"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph", str(graph), "--name", "otlp", "--host",
        "127.0.0.1", "--port", str(port), "--drain-seconds", "0", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.post(f"http://127.0.0.1:{port}/", json={"x": 1},
                                            headers={"traceparent": TRACEPARENT}) as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        for _ in range(100):
            if batches:
                break
            await asyncio.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    spans = [(rs, span) for b in batches for rs in b.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert sorted(s.name for _, s in spans) == ["graph otlp", "node root", "step root/0"]
    assert {s.trace_id.hex() for _, s in spans} == {TRACE_ID}
    services = {a.value.string_value for rs, _ in spans for a in rs.resource.attributes if a.key == "service.name"}
    assert services == {"router-under-test"}
