"""Payload logging: step requests and answers reach a real CloudEvents sink on loopback in binary
mode (parsed with the cloudevents SDK), per mode and sample; a slow or full sink never delays
the graph, and dropped events are counted in /metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event

from graph_router.errors import GraphValidationError
from graph_router.extensions import ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph

pytestmark = pytest.mark.asyncio


class Sink:
    """A CloudEvents receiver: parses every POST as a binary-mode event."""

    def __init__(self, delay: float = 0.0) -> None:
        self.events: list[Any] = []
        self.delay = delay
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        body = await request.read()
        self.events.append(from_binary_event(HTTPMessage(headers=dict(request.headers), body=body)))
        self.arrived.set()
        return web.Response(status=202)

    async def wait_for(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < n:
            assert time.monotonic() < deadline, f"{len(self.events)} of {n} events arrived"
            await asyncio.sleep(0.01)


async def _plan_with(start_service: Any, start_router: Any, logger: dict[str, Any], sink: Sink,
                     answers: tuple[int, Any] = (200, {"label": "cat"}), name: str = "logged") -> tuple[Any, Any]:
    model = await start_service({"/m": answers})
    sink_svc = await start_service({"/events": sink.handle})
    text = yaml.safe_dump({
        "kind": "InferenceGraph",
        "metadata": {"name": name, "annotations": {ANNOTATION: yaml.safe_dump(
            {"logger": {"url": sink_svc.url("/events"), **logger}})}},
        "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"name": "classify", "serviceUrl": model.url("/m")}]}}},
    })
    plan = compile_graph(load_graph_text(text, "g.yaml"))
    running = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": "http://127.0.0.1:9/unused"}]}}})
    running.router.swap(plan)
    return running, model


async def test_all_mode_sends_request_and_response_as_binary_cloudevents(start_service: Any,
                                                                        start_router: Any) -> None:
    sink = Sink()
    running, _ = await _plan_with(start_service, start_router, {"mode": "all"}, sink, name="g-all")
    status, body, _ = await running.post({"instances": [1]}, headers={"X-Request-Id": "req-42"})
    assert status == 200 and orjson.loads(body) == {"label": "cat"}
    await sink.wait_for(2)
    request, response = sorted(sink.events, key=lambda e: e.get_type())
    assert request.get_type() == "org.kubeflow.serving.inference.request"
    assert response.get_type() == "org.kubeflow.serving.inference.response"
    assert request.get_id() == response.get_id() == "req-42"
    assert request.get_specversion() == "1.0"
    assert request.get_source() == "graph-router/g-all/root/classify"
    assert request.get_data() == {"instances": [1]}
    assert response.get_data() == {"label": "cat"}
    assert response.get_extension("status") == "200"
    assert request.get_extension("inferencegraph") == "g-all"


@pytest.mark.parametrize(("mode", "answer", "types"), [
    ("request", (200, {"ok": 1}), ["request"]),
    ("response", (200, {"ok": 1}), ["response"]),
    ("failures", (200, {"ok": 1}), []),
    ("failures", (503, {"error": "busy"}), ["request", "response"]),
])
async def test_modes(start_service: Any, start_router: Any, mode: str, answer: tuple[int, Any],
                     types: list[str]) -> None:
    sink = Sink()
    running, _ = await _plan_with(start_service, start_router, {"mode": mode}, sink, answers=answer,
                                  name=f"g-{mode}-{answer[0]}")
    await running.post({"x": 1})
    await running.post({"x": 2})
    await asyncio.sleep(0.3)
    got = sorted(e.get_type().rsplit(".", 1)[1] for e in sink.events)
    assert got == sorted(types * 2)
    ids = {e.get_id() for e in sink.events}
    assert len(ids) == (2 if types else 0)  # one generated id per request, shared by its events


async def test_transport_failure_is_logged_as_a_failed_response(start_service: Any, start_router: Any) -> None:
    sink = Sink()
    sink_svc = await start_service({"/events": sink.handle})
    text = yaml.safe_dump({
        "kind": "InferenceGraph",
        "metadata": {"name": "g-down", "annotations": {ANNOTATION: yaml.safe_dump(
            {"logger": {"url": sink_svc.url("/events"), "mode": "failures"}})}},
        "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"name": "s", "serviceUrl": "http://127.0.0.1:9/down"}]}}},
    })
    running = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": "http://127.0.0.1:9/unused"}]}}})
    running.router.swap(compile_graph(load_graph_text(text, "g.yaml")))
    assert (await running.post({"x": 1}))[0] == 500
    await sink.wait_for(2)
    response = next(e for e in sink.events if e.get_type().endswith("response"))
    assert response.get_extension("failed") == "true"
    assert "cannot connect" in response.get_data()["error"]


async def test_sampling_zero_logs_nothing(start_service: Any, start_router: Any) -> None:
    sink = Sink()
    running, _ = await _plan_with(start_service, start_router, {"sample": 0}, sink, name="g-s0")
    for _ in range(5):
        assert (await running.post({}))[0] == 200
    await asyncio.sleep(0.2)
    assert sink.events == []


async def test_slow_sink_never_delays_requests_and_drops_are_counted(start_service: Any, start_router: Any) -> None:
    sink = Sink(delay=2.0)
    running, _ = await _plan_with(start_service, start_router, {"mode": "all"}, sink, name="g-slow")
    from graph_router import payload_logger

    log = next(v for k, v in payload_logger._LOGGERS.items() if k[0] == "g-slow")
    log._queue_size = 4
    started = time.monotonic()
    answers = await asyncio.gather(*(running.post({"i": i}) for i in range(20)))
    elapsed = time.monotonic() - started
    assert [a[0] for a in answers] == [200] * 20
    assert elapsed < 1.5, elapsed  # the sink takes 2 s per event
    async with running.session.get(running.url + "/metrics") as resp:
        text = await resp.text()
    dropped = [line for line in text.splitlines()
               if line.startswith('graph_router_logger_events_total{graph="g-slow",outcome="dropped"}')]
    assert dropped, text
    assert int(float(dropped[0].rsplit(" ", 1)[1])) >= 40 - 4 - 1  # 40 events, a queue of 4, one being sent


async def test_graph_without_logger_has_no_taps(start_service: Any) -> None:
    text = yaml.safe_dump({"kind": "InferenceGraph", "metadata": {"name": "plain"}, "spec": {"nodes": {
        "root": {"routerType": "Sequence", "steps": [{"serviceUrl": "http://127.0.0.1:9/m"}]}}}})
    plan = compile_graph(load_graph_text(text, "g.yaml"))
    assert all(s.tap is None for n in plan.nodes.values() for s in n.steps)


@pytest.mark.parametrize(("logger", "message"), [
    ({"url": "http://x/", "mode": "some"}, "logger.mode"),
    ({"url": "http://x/", "sample": 1.5}, "logger.sample"),
    ({"mode": "all"}, "logger.url"),
    ({"url": "sink:8080"}, "'sink:8080' is not an http:// or https:// URL"),
])
async def test_logger_mistakes_are_load_errors(logger: dict[str, Any], message: str) -> None:
    text = yaml.safe_dump({"kind": "InferenceGraph", "metadata": {"name": "bad", "annotations": {
        ANNOTATION: yaml.safe_dump({"logger": logger})}}, "spec": {"nodes": {
        "root": {"routerType": "Sequence", "steps": [{"serviceUrl": "http://127.0.0.1:9/m"}]}}}})
    with pytest.raises(GraphValidationError, match=message):
        compile_graph(load_graph_text(text, "g.yaml"))
