"""Traffic mirroring: the primary's answer and latency never depend on the mirror; outcomes are counted."""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from conftest import Service

from graph_router import mirror
from graph_router.extensions import ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph

ONE_STEP = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "llm", "serviceName": "llm"}]}}}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mirrored_graph(mirror_spec: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "kind": "InferenceGraph",
        "metadata": {"name": "g", "annotations": {
            ANNOTATION: yaml.safe_dump({"steps": {"root/llm": {"mirror": mirror_spec}}})}},
        "spec": ONE_STEP,
    })


async def serve(start_router: Any, primary: str, mirror_spec: dict[str, Any], **settings: Any) -> Any:
    running = await start_router(ONE_STEP, services={"llm": primary}, name="g", **settings)
    running.router.swap(compile_graph(load_graph_text(mirrored_graph(mirror_spec), "g.yaml"), {"llm": primary}))
    return running


async def outcome_counts(running: Any) -> dict[str, float]:
    async with running.session.get(running.url + "/metrics") as resp:
        text = await resp.text()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("graph_router_mirror_requests_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


async def model(start_service: Any, answer: dict[str, Any], delay: float = 0.0, status: int = 200) -> Service:
    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if delay:
            await asyncio.sleep(delay)
        return web.json_response(answer, status=status)

    service: Service = await start_service({"/m": handle})
    return service


async def timed(running: Any, n: int) -> tuple[list[float], set[bytes]]:
    times, bodies = [], set()
    for i in range(n):
        started = time.perf_counter()
        status, body, _ = await running.post({"i": i})
        times.append(time.perf_counter() - started)
        assert status == 200
        bodies.add(body)
    return times, bodies


async def test_a_hanging_mirror_changes_neither_answer_nor_latency(start_service: Any, start_router: Any) -> None:
    primary = await model(start_service, {"answer": 1}, delay=0.01)
    hanging = await model(start_service, {"answer": 1}, delay=30)
    plain = await start_router(ONE_STEP, services={"llm": primary.url("/m")})
    base, base_bodies = await timed(plain, 20)
    running = await serve(start_router, primary.url("/m"), {"serviceUrl": hanging.url("/m"), "timeoutSeconds": 20})
    times, bodies = await timed(running, 20)
    assert bodies == base_bodies == {b'{"answer": 1}'}
    assert statistics.median(times) < statistics.median(base) + 0.005  # noise, not the mirror's 30 s
    assert max(times) < 1.0
    assert len(hanging.received) == 20  # every call was mirrored, and is still hanging there
    for task in list(mirror.POOL.tasks):
        task.cancel()


async def test_a_failing_mirror_changes_nothing_and_counts_errors(start_service: Any, start_router: Any) -> None:
    primary = await model(start_service, {"answer": 1})
    running = await serve(start_router, primary.url("/m"), {"serviceUrl": f"http://127.0.0.1:{closed_port()}/m"})
    _, bodies = await timed(running, 8)
    assert bodies == {b'{"answer": 1}'}
    await mirror.POOL.drain(5)
    assert await outcome_counts(running) == {"error": 8}


async def test_outcomes_same_and_different(start_service: Any, start_router: Any) -> None:
    primary = await model(start_service, {"a": 1, "b": [1, 2]})
    same = await model(start_service, {"b": [1, 2], "a": 1})  # equal as JSON, not as bytes
    running = await serve(start_router, primary.url("/m"), {"serviceUrl": same.url("/m")})
    await timed(running, 5)
    await mirror.POOL.drain(5)
    assert await outcome_counts(running) == {"same": 5}
    assert [r.json() for r in same.received] == [{"i": i} for i in range(5)]  # the same bodies
    different = await model(start_service, {"a": 2, "b": [1, 2]})
    running = await serve(start_router, primary.url("/m"), {"serviceUrl": different.url("/m")})
    await timed(running, 3)
    failing = await model(start_service, {"a": 1, "b": [1, 2]}, status=500)  # a status is part of the answer
    running.router.swap(compile_graph(load_graph_text(mirrored_graph({"serviceUrl": failing.url("/m")}), "g.yaml"),
                                      {"llm": primary.url("/m")}))
    await timed(running, 2)
    await mirror.POOL.drain(5)
    assert await outcome_counts(running) == {"different": 5}


async def test_percent_and_propagated_headers(start_service: Any, start_router: Any) -> None:
    primary = await model(start_service, {"ok": True})
    shadow = await model(start_service, {"ok": True})
    running = await serve(start_router, primary.url("/m"), {"serviceUrl": shadow.url("/m"), "percent": 25},
                          propagate_headers="X-Tenant")
    for i in range(400):
        status, _, _ = await running.post({"i": i}, headers={"X-Tenant": "t1"})
        assert status == 200
    await mirror.POOL.drain(5)
    assert 60 < len(shadow.received) < 140
    assert all(r.header_values("X-Tenant") == ["t1"] for r in shadow.received)


async def test_over_the_cap_calls_are_dropped_and_counted(start_service: Any, start_router: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mirror.POOL, "cap", 2)
    primary = await model(start_service, {"ok": True})
    slow = await model(start_service, {"ok": True}, delay=0.5)
    running = await serve(start_router, primary.url("/m"), {"serviceUrl": slow.url("/m")})
    await timed(running, 6)
    await mirror.POOL.drain(5)
    assert await outcome_counts(running) == {"same": 2, "dropped": 4}


async def test_a_streamed_primary_is_mirrored_with_a_plain_request(start_service: Any, start_router: Any) -> None:
    events = b'data: {"t": "a"}\n\ndata: [DONE]\n\n'

    async def stream(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(events[:10])
        await asyncio.sleep(0.01)
        await resp.write(events[10:])
        await resp.write_eof()
        return resp

    primary = await start_service({"/m": stream})
    shadow = await start_service({"/m": stream})
    running = await serve(start_router, primary.url("/m"), {"serviceUrl": shadow.url("/m")})
    status, body, _ = await running.post({"stream": True})
    assert (status, body) == (200, events)
    await mirror.POOL.drain(5)
    assert await outcome_counts(running) == {"same": 1}


async def test_a_client_leaving_does_not_cancel_the_mirror(start_service: Any, start_router: Any) -> None:
    primary = await model(start_service, {"ok": True}, delay=1.0)
    done: list[bool] = []

    async def shadow_handler(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(0.3)
        done.append(True)
        return web.json_response({"ok": True})

    shadow = await start_service({"/m": shadow_handler})
    running = await serve(start_router, primary.url("/m"), {"serviceUrl": shadow.url("/m")})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(running.post({"x": 1}), 0.1)  # the client leaves
    await mirror.POOL.drain(5)
    assert done == [True]
    assert await outcome_counts(running) == {"different": 1}  # no primary answer to compare with


def test_same_answer_compares_status_and_json() -> None:
    assert mirror.same_answer((200, b'{"a": 1, "b": 2}'), 200, b'{"b":2,"a":1}')
    assert not mirror.same_answer((200, b'{"a": 1}'), 201, b'{"a": 1}')
    assert not mirror.same_answer((200, b"text"), 200, b"text!")
    assert mirror.same_answer((200, b"text"), 200, b"text")
    assert orjson.loads(b"1") == 1


def test_worker_snapshots_add_up_endpoint_and_mirror_counts() -> None:
    """--workers: the scraped worker sums its siblings' counters (and reads snapshots without them)."""
    from graph_router.telemetry.metrics import Metrics, merge, render

    a, b = Metrics(), Metrics()
    a.mirror_requests[("g", "root", "llm", "same")] = 2
    b.mirror_requests[("g", "root", "llm", "same")] = 3
    b.endpoint_requests[("g", "root", "llm", "http://10.0.0.1:8000/x", "200")] = 4
    older = a.snapshot()
    del older["mirror_requests"], older["endpoint_requests"]
    text = render(merge([a.snapshot(), b.snapshot(), older])).decode()
    assert 'graph_router_mirror_requests_total{graph="g",node="root",step="llm",outcome="same"} 5' in text
    assert ('graph_router_endpoint_requests_total{graph="g",node="root",step="llm",'
            'endpoint="http://10.0.0.1:8000/x",code="200"} 4') in text


def test_a_mirror_url_that_cannot_be_called_is_refused_at_load() -> None:
    from graph_router.errors import GraphValidationError

    with pytest.raises(GraphValidationError, match=r"mirror\.serviceUrl"):
        compile_graph(load_graph_text(mirrored_graph({"serviceUrl": "candidate:8080/m"}), "g.yaml"),
                      {"llm": "http://127.0.0.1:9/m"})


async def test_an_openai_stream_is_mirrored_plain_and_compared_by_its_text(start_service: Any,
                                                                           start_router: Any) -> None:
    def chunk(text: str, n: int) -> bytes:
        return b"data: " + orjson.dumps({"id": f"chatcmpl-{n}", "created": n, "object": "chat.completion.chunk",
                                         "choices": [{"index": 0, "delta": {"content": text}}]}) + b"\n\n"

    async def primary(request: web.Request) -> web.StreamResponse:
        assert (await request.json())["stream"] is True
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("Hello", " world"):
            await resp.write(chunk(piece, 1))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def candidate(content: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            doc = await request.json()
            assert doc["stream"] is False and "stream_options" not in doc  # a plain request
            return web.json_response({"id": "chatcmpl-other", "created": 2, "object": "chat.completion",
                                      "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        return handle

    main = await start_service({"/v1/chat/completions": primary})
    same = await start_service({"/m": candidate("Hello world")})
    other = await start_service({"/m": candidate("Hello there")})
    request = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
               "messages": [{"role": "user", "content": "hi"}]}
    for shadow, expected in ((same, {"same": 1}), (other, {"different": 1})):  # a new router each: new counts
        running = await serve(start_router, main.url("/v1/chat/completions"), {"serviceUrl": shadow.url("/m")})
        status, body, _ = await running.post(request)
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        await mirror.POOL.drain(5)
        assert await outcome_counts(running) == expected
