"""Streaming answers: incremental delivery, client disconnect, failures before and after the first byte."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from conftest import echo
from metrics_scrape import scrape
from test_resilience import one_step, serve_with_extensions

from graph_router.httpclient import HTTPClient
from graph_router.settings import ServerSettings
from graph_router.telemetry import Telemetry
from graph_router.telemetry.logs import FIELDS
from graph_router.upstream import UpstreamSettings


def sse_service(events: int, gap: float, log: dict[str, Any], *, die_after: int | None = None) -> Any:
    """A stand-in LLM that streams ``events`` SSE events ``gap`` seconds apart."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        try:
            for i in range(events):
                if die_after is not None and i == die_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                await resp.write(f"data: {{\"i\": {i}}}\n\n".encode())
                log.setdefault("sent_at", []).append(loop.time())
                await asyncio.sleep(gap)
            await resp.write(b"data: [DONE]\n\n")
            log["finished"] = True
        except (ConnectionResetError, aiohttp.ClientConnectionResetError, asyncio.CancelledError):
            log["disconnected_at"] = loop.time()
            raise
        return resp

    return handler


def llm_graph(prefix_url: str, llm_url: str) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"name": "prep", "serviceUrl": prefix_url},
        {"name": "llm", "serviceUrl": llm_url, "data": "$response"}]}}}


async def test_events_arrive_incrementally_and_in_order(start_service: Any, start_router: Any) -> None:
    """The last step's event stream reaches the client as it is produced, every event intact and in order."""
    log: dict[str, Any] = {}
    prep = await start_service({"/p": echo})
    llm = await start_service({"/l": sse_service(5, 0.2, log)})
    router = await start_router(llm_graph(prep.url("/p"), llm.url("/l")))
    loop = asyncio.get_running_loop()
    received: list[tuple[float, bytes]] = []
    async with router.session.post(router.url, data=b'{"q": 1}') as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        buffer = b""
        async for chunk in resp.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                received.append((loop.time(), event))
    assert [e for _, e in received] == [f'data: {{"i": {i}}}'.encode() for i in range(5)] + [b"data: [DONE]"]
    first_at = received[0][0]
    assert first_at < log["sent_at"][-1], "the first event must arrive before the last one is produced"
    assert llm.received[0].body == b'{"q": 1}'


async def test_client_disconnect_cancels_upstream_stream(start_service: Any, start_router: Any) -> None:
    """A client that leaves mid-stream makes the router drop the stream from the service."""
    log: dict[str, Any] = {}
    prep = await start_service({"/p": echo})
    llm = await start_service({"/l": sse_service(100, 0.05, log)})
    router = await start_router(llm_graph(prep.url("/p"), llm.url("/l")))
    async with aiohttp.ClientSession() as session:
        resp = await session.post(router.url, data=b"{}")
        await resp.content.readuntil(b"\n\n")
        resp.close()
    for _ in range(60):
        if "disconnected_at" in log:
            break
        await asyncio.sleep(0.05)
    assert "disconnected_at" in log
    assert "finished" not in log


async def test_failure_after_first_byte_ends_with_sse_error(start_service: Any, start_router: Any) -> None:
    """A service that dies mid-stream: the client gets the events so far, then an SSE error event."""
    log: dict[str, Any] = {}
    prep = await start_service({"/p": echo})
    llm = await start_service({"/l": sse_service(5, 0.05, log, die_after=2)})
    router = await start_router(llm_graph(prep.url("/p"), llm.url("/l")))
    status, body, headers = await router.post({"q": 1})
    assert status == 200
    assert headers["Content-Type"] == "text/event-stream"
    events = body.strip().split(b"\n\n")
    assert events[:2] == [b'data: {"i": 0}', b'data: {"i": 1}']
    assert events[2].startswith(b"event: error\ndata: ")
    error = orjson.loads(events[2].split(b"data: ", 1)[1])
    assert error["error"] == "Failed to process request"
    assert "mid-answer" in error["cause"]


async def test_failure_before_first_byte_is_ordinary_error(start_service: Any, start_router: Any) -> None:
    """A streaming step that fails before answering gives the usual error status and JSON body."""
    prep = await start_service({"/p": echo})
    llm = await start_service({"/l": (503, {"error": "overloaded"})})
    router = await start_router(llm_graph(prep.url("/p"), llm.url("/l")))
    status, body, headers = await router.post({"q": 1})
    assert (status, orjson.loads(body)) == (503, {"error": "overloaded"})
    assert headers["Content-Type"] == "application/json"


async def test_streaming_step_that_is_not_last_is_buffered(start_service: Any, start_router: Any) -> None:
    """A step whose answer feeds another step is read whole before the next step runs."""
    log: dict[str, Any] = {}
    first = await start_service({"/s": sse_service(3, 0.01, log)})
    last = await start_service({"/e": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": first.url("/s")}, {"serviceUrl": last.url("/e"), "data": "$response"}]}}})
    status, body, headers = await router.post({})
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"  # the buffered SSE text is not JSON
    assert last.received[0].body == b'data: {"i": 0}\n\ndata: {"i": 1}\n\ndata: {"i": 2}\n\ndata: [DONE]\n\n'
    assert body == last.received[0].body


async def test_chunked_json_answer_streams_through_switch(start_service: Any, start_router: Any) -> None:
    """A chunked (non-SSE) answer from a Switch's chosen step is passed through as it arrives."""

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b'{"a":', b' [1, 2', b"]}"):
            await resp.write(part)
            await asyncio.sleep(0.02)
        return resp

    svc = await start_service({"/c": chunked})
    router = await start_router({"nodes": {"root": {"routerType": "Switch", "steps": [
        {"serviceUrl": svc.url("/c"), "condition": "x"}]}}})
    status, body, headers = await router.post({"x": 1})
    assert status == 200
    assert orjson.loads(body) == {"a": [1, 2]}
    assert headers["Content-Type"] == "application/json"


async def test_a_streamed_answer_is_counted_and_logged(start_service: Any, start_router: Any,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A relayed event stream (not an OpenAI step) is in the request series and has its access-log line,
    though both are recorded after its head is written."""
    caplog.set_level(logging.INFO, logger="graph_router.telemetry.recorder")
    llm = await start_service({"/l": sse_service(2, 0.05, {})})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": llm.url("/l")}]}}}, telemetry=Telemetry())
    for _ in range(2):
        async with router.session.post(router.url, data=b'{"q": 1}') as resp:
            assert resp.status == 200
            assert b"data: [DONE]" in await resp.read()
    m = await scrape(router.url)
    assert m.value("graph_router_requests_total", graph="test", code="200") == 2
    assert m.value("graph_router_request_duration_seconds_count", graph="test") == 2
    assert m.value("graph_router_overhead_seconds_count", graph="test") == 2
    lines = [getattr(r, FIELDS) for r in caplog.records if r.getMessage() == "graph request"]
    assert [line["status"] for line in lines] == [200, 200]


# --- the router's head written as the step's head is read (time to first byte) ----------------

class HeadHeard:
    """A head listener (httpclient.HeadListener): what it heard, and when, in ``order``."""

    def __init__(self, order: list[str]) -> None:
        self.order = order
        self.heads: list[tuple[int, str | None, str | None, bytes | None]] = []

    def stream_head(self, status: int, content_type: str | None, encoding: str | None, stream: Any) -> None:
        self.heads.append((status, content_type, encoding, stream.ready()))
        self.order.append("head")


async def test_a_head_listener_hears_a_streamed_head_before_the_caller_resumes(start_service: Any) -> None:
    """The listener runs in the callback that read the head; the bytes it takes are not handed on twice."""
    svc = await start_service({"/s": sse_service(3, 0.05, {}), "/j": (200, {"a": 1})})
    client = HTTPClient()
    order: list[str] = []
    heard = HeadHeard(order)
    try:
        answer = await client.post(svc.url("/s"), None, b"{}", False, None, True, heard)
        order.append("resumed")
        assert order == ["head", "resumed"]
        status, content_type, encoding, first = heard.heads[0]
        assert (status, content_type, encoding) == (200, "text/event-stream", None)
        assert answer.stream is not None
        rest = b"".join([chunk async for chunk in answer.stream])
        events = b"".join(f'data: {{"i": {i}}}\n\n'.encode() for i in range(3)) + b"data: [DONE]\n\n"
        assert (first or b"") + rest == events
        quiet = HeadHeard([])  # an answer that does not stream is never heard of early
        plain = await client.post(svc.url("/j"), None, b"{}", False, None, True, quiet)
        assert quiet.heads == [] and orjson.loads(plain.body) == {"a": 1}
    finally:
        await client.close()


async def test_an_early_head_carries_what_the_usual_head_carries(start_service: Any, start_router: Any) -> None:
    """Content-Type, Cache-Control, Server-Timing and Connection: close, with the first event,
    before the service's next event is produced."""
    svc = await start_service({"/l": sse_service(3, 0.5, {})})
    router = await start_router(one_step(svc.url("/l")))
    host, port = router.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        async with asyncio.timeout(0.4):
            head = await reader.readuntil(b"\r\n\r\n")
            first = await reader.readuntil(b"\n\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        for field in (b"Content-Type: text/event-stream", b"Cache-Control: no-cache", b"Server-Timing: total;dur=",
                      b"Connection: close", b"Transfer-Encoding: chunked"):
            assert b"\r\n" + field in head
        assert first.endswith(b'data: {"i": 0}\n\n')
        async with asyncio.timeout(5):
            rest = await reader.read()  # the stream, then the connection closes
        assert rest.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
    finally:
        writer.close()


async def test_a_streamed_retry_status_is_still_retried_under_a_policy(
    start_service: Any, start_router: Any
) -> None:
    """A step with a retry policy has no early head: its streamed 503 is retried, not relayed."""
    calls: list[int] = []

    async def flaky(request: web.Request) -> web.StreamResponse:
        await request.read()
        calls.append(1)
        resp = web.StreamResponse(status=503 if len(calls) == 1 else 200, headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: %d\n\n" % len(calls))
        return resp

    svc = await start_service({"/m": flaky})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, upstream=UpstreamSettings(breaker_failures=0))
    router = await serve_with_extensions(start_router, svc.url("/m"),
                                         {"steps": {"root/s": {"policy": {"retries": 2, "backoffSeconds": 0.001}}}},
                                         settings=settings)
    status, body, _ = await router.post({})
    assert (status, body, len(calls)) == (200, b"data: 2\n\n", 2)
