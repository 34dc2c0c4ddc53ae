"""Protocol conformance of the router's listening side: one test per rule of issue 12.

Each test drives the real server over a raw loopback socket and checks the bytes that
come back, so a framing mistake cannot hide behind a forgiving client. The RFC rule
each one holds is in its docstring; README "Reliability" maps rules to tests.
(The client side, step calls to services, is held by tests/test_protocol_client.py.)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import echo

from graph_router.http1.request_reader import Request
from graph_router.httpserver import HTTPServer, Response, ServerLimits, StreamingResponse, _wake_now


def one_step(url: str, **timeouts: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}}}
    if timeouts:
        spec["routerTimeouts"] = timeouts
    return spec


class Wire:
    """A raw client connection: write exact bytes, read exact answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, url: str) -> Wire:
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_closed(self, seconds: float = 3.0) -> bytes:
        """Everything the server sends until it closes the connection."""
        async with asyncio.timeout(seconds):
            return await self.reader.read()

    async def answer(self, seconds: float = 3.0) -> tuple[bytes, bytes]:
        """One answer framed by Content-Length (or none): (head, body)."""
        async with asyncio.timeout(seconds):
            head = await self.reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
            body = await self.reader.readexactly(int(match.group(1))) if match else b""
        return head, body

    def close(self) -> None:
        self.writer.close()


def statuses(raw: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"HTTP/1\.[01] (\d{3}) ", raw)]


@pytest.fixture
async def start_http() -> AsyncIterator[Callable[..., Awaitable[HTTPServer]]]:
    """A bare HTTPServer with an inline handler, for rules below the router."""
    servers: list[HTTPServer] = []

    async def start(handler: Callable[[Request], Awaitable[Response | StreamingResponse]],
                    limits: ServerLimits | None = None) -> HTTPServer:
        server = HTTPServer(handler, limits)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.shutdown(1)


async def slow_echo(request: web.Request) -> web.Response:
    await asyncio.sleep(0.3)
    return web.Response(body=await request.read(), content_type="application/json")


class Chunks:
    """A streamed answer's source: a few pieces, then the end."""

    def __init__(self, pieces: list[bytes], delay: float = 0.0) -> None:
        self._pieces = list(pieces)
        self._delay = delay

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        if not self._pieces:
            raise StopAsyncIteration
        await asyncio.sleep(self._delay)
        return self._pieces.pop(0)

    async def aclose(self) -> None:
        self._pieces.clear()


# --- Rule 2: answers in request order (RFC 9112 §9.3.2) -----------------------------------

async def test_error_for_a_later_pipelined_request_waits_for_the_earlier_answer(
        start_service: Any, start_router: Any) -> None:
    """A malformed request pipelined behind a slow one gets its 400 only after the 200, then the connection closes."""
    svc = await start_service({"/m": slow_echo})
    router = await start_router(one_step(svc.url("/m")))
    wire = await Wire.open(router.url)
    await wire.send(b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n{"n":1}'
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
    raw = await wire.until_closed()
    assert statuses(raw) == [200, 400]
    first, second = raw.split(b"HTTP/1.1 400 ", 1)
    assert first.endswith(b'{"n":1}')
    assert b"Connection: close" in second
    assert len(svc.received) == 1  # the bad request never ran the graph


async def test_error_for_a_later_request_is_not_written_inside_a_streamed_answer(start_http: Any) -> None:
    """A bad request behind a streamed answer gets its 400 after the stream's last chunk, never inside it."""
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, Chunks([b"one", b"two", b"three"], delay=0.1), "text/plain")

    server = await start_http(stream)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
    raw = await wire.until_closed()
    stream_part, error_part = raw.split(b"HTTP/1.1 400 ", 1)
    assert stream_part.endswith(b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n")
    assert statuses(raw) == [200, 400]
    assert b"more than one Host" in error_part


async def test_one_error_answer_per_bad_request(start_http: Any) -> None:
    """A request that breaks several limits at once gets one error answer, not one per broken limit."""
    async def ok(request: Request) -> Response:
        return Response(200, b"{}", "application/json")

    server = await start_http(ok, ServerLimits(max_header_bytes=1024, max_body_bytes=10))
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"POST /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 4000
                    + b"\r\nContent-Length: 99\r\n\r\n" + b"c" * 99)
    raw = await wire.until_closed()
    assert statuses(raw) == [414]


async def test_read_timeout_of_a_later_request_is_answered_in_order(start_service: Any, start_router: Any) -> None:
    """A pipelined request that stalls while an earlier one runs gets its 408 after the earlier 200."""
    async def slower(request: web.Request) -> web.Response:
        await asyncio.sleep(1.6)
        return web.Response(body=await request.read(), content_type="application/json")

    svc = await start_service({"/m": slower})
    router = await start_router(one_step(svc.url("/m"), serverRead=1))
    wire = await Wire.open(router.url)
    await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
    raw = await wire.until_closed(6)
    assert statuses(raw) == [200, 408]
    assert raw.index(b"HTTP/1.1 200") < raw.index(b"HTTP/1.1 408")
    assert len(svc.received) == 1


async def test_after_head_runs_once_the_head_is_written_before_the_rest(start_http: Any) -> None:
    """A streamed answer's after_head hook runs once, with its head and first bytes out, not at the stream's end."""
    release = asyncio.Event()
    calls: list[str] = []

    class Held(Chunks):
        async def __anext__(self) -> bytes:
            await release.wait()
            return await super().__anext__()

    async def stream(request: Request) -> StreamingResponse:
        answer = StreamingResponse(200, Held([b"rest"]), "text/plain", first=b"first")
        answer.after_head = lambda: calls.append("head")
        return answer

    server = await start_http(stream)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(3):
        head = await wire.reader.readuntil(b"5\r\nfirst\r\n")  # the head and the first bytes, in one write
    assert head.startswith(b"HTTP/1.1 200 ")
    assert calls == ["head"]  # already, while the rest is held back
    release.set()
    async with asyncio.timeout(3):
        rest = await wire.reader.readuntil(b"0\r\n\r\n")
    assert rest == b"4\r\nrest\r\n0\r\n\r\n"
    assert calls == ["head"]  # once


class Ready:
    """What a step's stream has in hand when its head arrives (``ready()``, taken once)."""

    def __init__(self, first: bytes | None) -> None:
        self.first = first

    def ready(self) -> bytes | None:
        first, self.first = self.first, None
        return first


async def test_a_head_written_early_is_the_answer_s_only_head(start_http: Any) -> None:
    """stream_head writes the head and the bytes in hand at once, before the handler returns;
    the StreamingResponse it then returns goes on after them, with no second head."""
    written: list[bool] = []

    async def stream(request: Request) -> StreamingResponse:
        conn = request.connection
        written.append(conn.stream_head(request, 200, "text/event-stream", [("Cache-Control", "no-cache")],
                                        Ready(b"data: 0\n\n")))
        await asyncio.sleep(0.2)  # the head is out meanwhile
        return StreamingResponse(200, Chunks([b"data: 1\n\n"]), "text/event-stream")

    server = await start_http(stream)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(0.15):  # well before the handler returns
        early = await wire.reader.readuntil(b"9\r\ndata: 0\n\n\r\n")
    assert early.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\nCache-Control: no-cache\r\n" in early
    assert b"\r\nTransfer-Encoding: chunked\r\n\r\n" in early
    async with asyncio.timeout(3):
        rest = await wire.reader.readuntil(b"0\r\n\r\n")
    assert rest == b"9\r\ndata: 1\n\n\r\n0\r\n\r\n"
    assert written == [True]
    await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # the connection goes on
    raw = await wire.until_closed()
    assert statuses(raw) == [200] and b"Connection: close" in raw and raw.endswith(b"0\r\n\r\n")


async def test_an_answer_that_fails_after_an_early_head_cuts_the_stream(start_http: Any) -> None:
    """Once the head is out, a handler that ends in an error cannot send a second head: the
    client sees a stream without its last chunk, and the connection closes (as for a stream
    that fails after its first byte)."""
    async def failing(request: Request) -> Response:
        request.connection.stream_head(request, 200, "text/event-stream", [], Ready(b"data: 0\n\n"))
        return Response(502, b'{"error":"late"}', "application/json")

    server = await start_http(failing)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = await wire.until_closed()
    assert statuses(raw) == [200]
    assert raw.endswith(b"9\r\ndata: 0\n\n\r\n") and b"late" not in raw


@pytest.mark.parametrize("request_line", [b"HEAD / HTTP/1.1", b"GET / HTTP/1.0"])
async def test_no_early_head_where_the_usual_path_differs(start_http: Any, request_line: bytes) -> None:
    """HEAD (no content) and HTTP/1.0 (no chunked coding) are written by the usual path only."""
    written: list[bool] = []

    async def stream(request: Request) -> StreamingResponse:
        written.append(request.connection.stream_head(request, 200, "text/plain", [], Ready(b"early")))
        return StreamingResponse(200, Chunks([b"body"]), "text/plain")

    server = await start_http(stream)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await wire.until_closed()
    assert written == [False]
    assert len(statuses(raw)) == 1 and b"early" not in raw
    assert raw.endswith(b"\r\n\r\n" if request_line.startswith(b"HEAD") else b"\r\n\r\nbody")


async def test_reading_pauses_past_the_pipelining_limit_and_resumes_as_answers_go_out(start_http: Any) -> None:
    """More requests pipelined than ``max_pipelined``: the connection stops reading, and
    reads again once the queue is short; every request is answered, in order."""
    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.02)
        return Response(200, request.path.encode(), "text/plain")

    server = await start_http(slow, ServerLimits(max_pipelined=2))
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(6)))
    await asyncio.sleep(0.05)  # read and queued: past the limit, reading is paused
    await wire.send(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(6, 9))
                    + b"GET /9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await wire.until_closed(5)
    assert statuses(raw) == [200] * 10
    assert re.findall(rb"\r\n\r\n(/\d)", raw) == [b"/%d" % i for i in range(10)]


async def test_a_waiting_task_steps_inside_the_callback_that_wakes_it() -> None:
    """_wake_now (used when a kept-alive connection's next request is read): the task waiting
    on the future runs its next step before the waking callback returns, not a loop pass
    later; from inside another task it falls back to the usual queued wake-up."""
    loop = asyncio.get_running_loop()
    steps: list[str] = []

    async def waiting(waiter: asyncio.Future[None]) -> None:
        await waiter
        steps.append("resumed")

    def wake(waiter: asyncio.Future[None]) -> None:  # a plain loop callback, as data_received is
        _wake_now(waiter, loop)
        steps.append("callback returned")

    waiter: asyncio.Future[None] = loop.create_future()
    task = asyncio.ensure_future(waiting(waiter))
    await asyncio.sleep(0)  # the task now waits on the future
    loop.call_soon(wake, waiter)
    await asyncio.wait_for(task, 3)
    assert steps == ["resumed", "callback returned"]

    steps.clear()
    waiter = loop.create_future()
    task = asyncio.ensure_future(waiting(waiter))
    await asyncio.sleep(0)
    _wake_now(waiter, loop)  # inside this test's task: asyncio forbids stepping another task here
    steps.append("caller went on")
    await asyncio.wait_for(task, 3)
    assert steps == ["caller went on", "resumed"]


# --- Rule 3: HEAD never carries content (RFC 9110 §9.3.2) -------------------------------

async def test_head_of_a_streamed_answer_has_no_content(start_http: Any) -> None:
    """HEAD on a streamed answer sends the head only (not even a last chunk); the connection stays usable."""
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, Chunks([b"data: 1\n\n"]), "text/event-stream")

    server = await start_http(stream)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await wire.until_closed()
    answers = raw.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2
    for answer in answers:
        assert answer.endswith(b"\r\n\r\n") and answer.count(b"\r\n\r\n") == 1


async def test_head_of_a_whole_answer_has_length_but_no_content(start_http: Any) -> None:
    """HEAD gets the Content-Length a GET would have, and no content."""
    async def fixed(request: Request) -> Response:
        return Response(200, b'{"a":1}', "application/json")

    server = await start_http(fixed)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await wire.until_closed()
    assert b"Content-Length: 7\r\n" in raw and raw.endswith(b"\r\n\r\n")


# --- Rule 4: memory released at once, and capped ------------------------------------------

async def test_abandoned_upload_frees_its_buffer_without_the_cycle_collector(start_http: Any) -> None:
    """A client that leaves mid-body gives its buffered bytes back at once, with the collector off."""
    async def ok(request: Request) -> Response:
        return Response(200)

    server = await start_http(ok)
    gc.disable()
    try:
        wire = await Wire.open(f"http://127.0.0.1:{server.port}")
        await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 30000000\r\n\r\n" + b"x" * 4_000_000)
        for _ in range(100):
            if server.budget.used >= 4_000_000:
                break
            await asyncio.sleep(0.02)
        assert server.budget.used >= 4_000_000
        wire.writer.transport.abort()
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.02)
        assert not server.connections
        assert server.budget.used == 0
    finally:
        gc.enable()


async def test_buffered_bodies_are_capped_across_connections(start_http: Any) -> None:
    """Past the server-wide cap on buffered bodies, a new body gets 503 with Retry-After; later ones fit again."""
    async def ok(request: Request) -> Response:
        return Response(200, b"{}", "application/json")

    server = await start_http(ok, ServerLimits(max_buffered_bytes=1_000_000))
    url = f"http://127.0.0.1:{server.port}"
    holder = await Wire.open(url)
    await holder.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n" + b"x" * 800_000)
    for _ in range(100):
        if server.budget.used >= 800_000:
            break
        await asyncio.sleep(0.02)
    late = await Wire.open(url)
    await late.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n")
    raw = await late.until_closed()
    assert statuses(raw) == [503]
    assert b"Retry-After: 1\r\n" in raw
    await holder.send(b"x" * 100_000)
    head, _ = await holder.answer()
    assert head.startswith(b"HTTP/1.1 200")
    assert server.budget.used == 0
    holder.close()


async def test_router_setting_caps_buffered_bodies(start_service: Any, start_router: Any) -> None:
    """The router's max_buffered_bytes setting reaches its server: a body past it gets 503, no step runs."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")), max_buffered_bytes=1000)
    wire = await Wire.open(router.url)
    await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000)
    raw = await wire.until_closed()
    assert statuses(raw) == [503] and b"Retry-After: 1" in raw
    assert svc.received == []


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc to read RSS")
async def test_rss_stays_flat_after_abandoned_uploads(tmp_path: Path) -> None:
    """40 uploads of 30 MiB abandoned mid-body, one at a time: the real `serve` grows by under 50 MiB."""
    graph = tmp_path / "g.yaml"
    graph.write_text("apiVersion: serving.kserve.io/v1alpha1\nkind: InferenceGraph\nmetadata: {name: g}\n"
                     "spec:\n  nodes:\n    root:\n      routerType: Sequence\n      steps:\n"
                     "        - serviceUrl: http://127.0.0.1:9/v1/models/m:predict\n")
    port = _free_port()
    # Started once, before any traffic: nothing else waits on the loop meanwhile.
    proc = subprocess.Popen([sys.executable, "-m", "graph_router", "serve", "--graph", str(graph), "--host",  # noqa: ASYNC220
                             "127.0.0.1", "--port", str(port), "--log-level", "WARNING", "--drain-seconds", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        await _wait_listening(proc, port)
        url = f"http://127.0.0.1:{port}"
        piece = b"x" * (1 << 20)
        start = None
        for i in range(41):
            wire = await Wire.open(url)
            await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 31457280\r\n\r\n")
            for _ in range(20):
                await wire.send(piece)
            await asyncio.sleep(0.05)
            wire.writer.transport.abort()
            await asyncio.sleep(0.05)
            if i == 0:
                start = _rss_mib(proc.pid)  # after one upload: the allocator's arenas are warm
        await asyncio.sleep(0.3)
        assert start is not None
        grown = _rss_mib(proc.pid) - start
        assert grown < 50, f"RSS grew by {grown:.1f} MiB"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise AssertionError("serve did not listen")


# --- Rule 5: limits enforced while reading -------------------------------------------------

async def test_an_endless_header_line_gets_431_before_it_ends(start_http: Any) -> None:
    """A header line streamed past the limit is answered 431 while it is still arriving; others are served meanwhile."""
    async def ok(request: Request) -> Response:
        return Response(200, b"{}", "application/json")

    server = await start_http(ok)
    url = f"http://127.0.0.1:{server.port}"
    wire = await Wire.open(url)
    await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    piece = b"a" * 65536
    sent = 0
    for _ in range(1600):  # at most 100 MiB, never ending the line
        try:
            await wire.send(piece)
        except ConnectionError:
            break
        sent += len(piece)
        if wire.reader._buffer:  # type: ignore[attr-defined]
            break
    answer = await wire.until_closed()
    assert statuses(answer) == [431]
    assert sent < 4 * 1024 * 1024, f"{sent} bytes were read before the 431"
    other = await Wire.open(url)
    await other.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(await other.until_closed()) == [200]


async def test_an_endless_request_line_gets_414_before_it_ends(start_http: Any) -> None:
    """A request target streamed past the limit is answered 414 while it is still arriving."""
    async def ok(request: Request) -> Response:
        return Response(200)

    server = await start_http(ok)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"GET /")
    sent = 0
    for _ in range(1600):
        try:
            await wire.send(b"a" * 65536)
        except ConnectionError:
            break
        sent += 65536
        if wire.reader._buffer:  # type: ignore[attr-defined]
            break
    answer = await wire.until_closed()
    assert statuses(answer) == [414]
    assert sent < 4 * 1024 * 1024


# --- Rule 7: trailers never merged (RFC 9110 §6.5.1) ---------------------------------------

async def test_trailers_are_not_merged_into_the_headers(start_service: Any, start_router: Any) -> None:
    """Trailer fields of a chunked request reach no service and do not switch on X-Graph-Explain."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")), propagate_headers="")
    wire = await Wire.open(router.url)
    await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Head: h\r\n\r\n"
                    b"2\r\n{}\r\n0\r\nX-Graph-Explain: 1\r\nX-Trailer: t\r\n\r\n")
    head, body = await wire.answer()
    wire.close()
    assert head.startswith(b"HTTP/1.1 200") and body == b"{}"
    assert b"x-graph-explain" not in head.lower()
    got = svc.received[0]
    assert got.header_values("X-Head") == ["h"]
    assert got.header_values("X-Trailer") == [] and got.header_values("X-Graph-Explain") == []


# --- Rule 8: Upgrade and CONNECT refused ---------------------------------------------------

@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
     b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
])
async def test_upgrade_and_connect_are_refused_without_running_the_graph(
        start_service: Any, start_router: Any, caplog: pytest.LogCaptureFixture, raw: bytes, status: int) -> None:
    """Upgrade (RFC 9110 §7.8) and CONNECT (§9.3.6) get one 4xx; no step runs, nothing is logged as an error."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")))
    caplog.set_level(logging.DEBUG)
    wire = await Wire.open(router.url)
    await wire.send(raw)
    answer = await wire.until_closed()
    assert statuses(answer) == [status]
    assert orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]
    assert svc.received == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# --- Rule 9: HTTP/1.0 clients ----------------------------------------------------------------

async def test_http10_streamed_answer_is_close_delimited(start_http: Any) -> None:
    """An HTTP/1.0 client gets no chunked coding (RFC 9112 §7.1): the raw content, ended by closing."""
    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(200, Chunks([b"data: 1\n\n", b"data: 2\n\n"]), "text/event-stream")

    server = await start_http(stream)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    raw = await wire.until_closed()
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head.lower()
    assert b"Connection: close" in head
    assert body == b"data: 1\n\ndata: 2\n\n"


async def test_http10_client_gets_no_100_continue(start_http: Any) -> None:
    """No 1xx answer is sent to an HTTP/1.0 client (RFC 9110 §15.2), even when it sends Expect."""
    async def ok(request: Request) -> Response:
        return Response(200, request.body, "application/json")

    server = await start_http(ok)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    await asyncio.sleep(0.3)
    await wire.send(b"{}")
    raw = await wire.until_closed()
    assert statuses(raw) == [200]
    assert raw.endswith(b"{}")


async def test_http10_keep_alive_is_acknowledged(start_http: Any) -> None:
    """An HTTP/1.0 client that asked for keep-alive is told the connection stays open, and it does."""
    async def ok(request: Request) -> Response:
        return Response(200, b"{}", "application/json")

    server = await start_http(ok)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head, _ = await wire.answer()
    assert b"Connection: keep-alive\r\n" in head
    await wire.send(b"GET / HTTP/1.0\r\n\r\n")
    raw = await wire.until_closed()
    assert statuses(raw) == [200] and b"Connection: close" in raw


# --- Rule 10: Host (RFC 9112 §3.2) ---------------------------------------------------------

@pytest.mark.parametrize(("raw", "status"), [
    (b"GET / HTTP/1.1\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: u@x\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: x/y\r\n\r\n", 400),
    (b"GET / HTTP/1.0\r\n\r\n", 200),
    (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 200),
    (b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n", 200),
])
async def test_host_header_rules(start_http: Any, raw: bytes, status: int) -> None:
    """HTTP/1.1 without Host, any request with two, or an invalid Host value, is 400; HTTP/1.0 may omit it."""
    ran: list[Request] = []

    async def ok(request: Request) -> Response:
        ran.append(request)
        return Response(200, b"{}", "application/json")

    server = await start_http(ok)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(raw)
    assert statuses(await wire.until_closed()) == [status]
    assert len(ran) == (1 if status == 200 else 0)


@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /\r\nHost: x\r\n\r\n", 400),  # HTTP/0.9 has no headers (RFC 9112 Appendix C.1)
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),  # RFC 9110 §15.6.6
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", 501),
    (b"HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
])
async def test_versions_and_codings_the_router_cannot_serve(start_http: Any, raw: bytes, status: int) -> None:
    """A request line without a version is 400, another version 505, an unknown transfer coding 501
    (RFC 9112 §6.1); none runs the handler, and a rejected HEAD gets no content."""
    ran: list[Request] = []

    async def ok(request: Request) -> Response:
        ran.append(request)
        return Response(200, b"{}", "application/json")

    server = await start_http(ok)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(raw)
    answer = await wire.until_closed()
    assert statuses(answer) == [status] and ran == []
    if raw.startswith(b"HEAD"):
        assert answer.endswith(b"\r\n\r\n")


# --- Rule 11: hop-by-hop headers (RFC 9110 §7.6.1) -----------------------------------------

async def test_hop_by_hop_and_connection_named_headers_never_reach_a_service(
        start_service: Any, start_router: Any) -> None:
    """With PROPAGATE_HEADERS matching everything, no hop-by-hop, proxy or Connection-named header reaches a service."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")), propagate_headers="")
    wire = await Wire.open(router.url)
    await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Private, x-other\r\n"
                    b"Keep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\n"
                    b"TE: trailers\r\nTrailer: X-T\r\nUpgrade-Insecure-Requests: 1\r\nX-Private: secret\r\n"
                    b"X-Other: 1\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\n{}")
    head, _ = await wire.answer()
    wire.close()
    assert head.startswith(b"HTTP/1.1 200")
    names = {name.lower() for name, _ in svc.received[0].headers}
    assert "x-kept" in names
    leaked = names & {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
                      "x-private", "x-other"}
    assert leaked == set()
    assert "secret" not in str(svc.received[0].headers)


# --- Rule 12: 204 and 304 (RFC 9110 §8.6, §6.4.1) ------------------------------------------

@pytest.mark.parametrize("status", [204, 304])
async def test_no_content_answers_carry_no_length_and_no_body(start_http: Any, status: int) -> None:
    """204 and 304 answers have no Content-Length and no content, even if the handler gave a body."""
    async def empty(request: Request) -> Response:
        return Response(status, b"ignored", "application/json")

    server = await start_http(empty)
    wire = await Wire.open(f"http://127.0.0.1:{server.port}")
    await wire.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await wire.until_closed()
    assert statuses(raw) == [status, status]
    assert b"content-length" not in raw.lower() and b"ignored" not in raw


async def test_service_204_is_relayed_without_length(start_service: Any, start_router: Any) -> None:
    """A step answering 204 gives the client a 204 with no Content-Length and no content."""
    async def nothing(request: web.Request) -> web.Response:
        return web.Response(status=204)

    svc = await start_service({"/m": nothing})
    router = await start_router(one_step(svc.url("/m")))
    wire = await Wire.open(router.url)
    await wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
                    b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await wire.until_closed()
    assert statuses(raw) == [204, 200]
    first = raw.split(b"HTTP/1.1 200")[0]
    assert b"content-length" not in first.lower() and first.endswith(b"\r\n\r\n")
