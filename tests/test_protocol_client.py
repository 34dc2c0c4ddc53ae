"""Protocol conformance of the step client (issue 12, client side), byte by byte.

Every service here is a raw asyncio server on loopback that writes exact bytes, so each
test pins one framing rule of RFC 9110/9112 as a misbehaving model service would probe
it. The real client is driven directly (HTTPClient) or through the real router.
"""

from __future__ import annotations

import asyncio
import gzip
import resource
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from graph_router import httpclient
from graph_router.http1 import content_coding
from graph_router.http1 import response_reader as rr
from graph_router.http1.response_reader import ResponseReader
from graph_router.httpclient import HTTPClient
from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamSettings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawService:
    """A loopback server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests: list[bytes] = []

    async def start(self) -> RawService:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass  # the test is over, or the client left
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/v1/models/m:predict") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        """One request's body (Content-Length framed, as the client sends them)."""
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append(body)
        return body

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def raw_service() -> AsyncIterator[Callable[[Handler], Awaitable[RawService]]]:
    started: list[RawService] = []

    async def start(handler: Handler) -> RawService:
        service = await RawService(handler).start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.close()


@pytest.fixture
async def client() -> AsyncIterator[HTTPClient]:
    c = HTTPClient(per_host=4, max_body=1024 * 1024)
    yield c
    await c.close()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(h + "\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def chain(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": list(steps)}}}


async def raw_post(url: str, body: bytes) -> tuple[int, bytes, Any]:
    """POST to the router without undoing any content coding (what a proxy's client sees)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session, session.post(url, data=body) as resp:
        return resp.status, await resp.read(), resp.headers


# Rule 1: no answer crosses clients (Go: "Unsolicited response received on idle HTTP channel").

async def test_bytes_on_an_idle_connection_close_it(raw_service: Any, client: HTTPClient) -> None:
    """A pooled connection that receives bytes while no request is outstanding is closed,
    never reused: the stray answer's body must not become the next request's answer."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(answer(b"one"))
        if service.connections == 1:
            await asyncio.sleep(0.05)  # idle now: a stray head and half a body
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nstale")
        await service.read_request(reader)
        writer.write(answer(b"fresh"))
        await asyncio.sleep(1)

    service = await raw_service(handle)
    assert (await client.post(service.url(), {}, b"1")).body == b"one"
    await asyncio.sleep(0.2)
    second = await client.post(service.url(), {}, b"2", timeout=2)
    assert (second.status, second.body) == (200, b"one")  # a new connection's first answer
    assert service.connections == 2


@pytest.mark.parametrize("extra", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nstale",  # a second answer, cut short
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale",  # a whole second answer
    b"\r\n",  # even a blank line, which llhttp would skip silently
], ids=["partial-second-answer", "whole-second-answer", "crlf"])
async def test_bytes_after_the_framed_end_make_the_connection_unusable(
        raw_service: Any, client: HTTPClient, extra: bytes) -> None:
    """An answer is complete at its framed end (RFC 9112 §6.3); any byte after it in the
    same read is unsolicited: the answer stands, the connection is not reused."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(answer(b"one") + (extra if service.connections == 1 else b""))
        await service.read_request(reader)
        writer.write(answer(b"fresh"))
        await asyncio.sleep(1)

    service = await raw_service(handle)
    assert (await client.post(service.url(), {}, b"1")).body == b"one"
    second = await client.post(service.url(), {}, b"2", timeout=2)
    assert second.body == b"one"  # the first answer of a new connection
    assert service.connections == 2


async def test_connection_close_is_never_reused(raw_service: Any, client: HTTPClient) -> None:
    """``Connection: close`` (RFC 9112 §9.6) ends the connection after this answer, even
    if the service leaves the socket open (a loopback stand-in for nginx's keepalive_requests)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(answer(b"{}", "Connection: close"))
        await asyncio.sleep(1)  # socket left open: only the header says it is over

    service = await raw_service(handle)
    for _ in range(3):
        assert (await client.post(service.url(), {}, b"", timeout=2)).body == b"{}"
    assert service.connections == 3


# Rule 5: a service's header section has its own limit, enforced while it arrives.

async def test_service_head_over_the_limit_is_502_naming_the_service(raw_service: Any, start_router: Any) -> None:
    """A 100 KiB header section against the 64 KiB default: 502, naming the service."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(answer(b"{}", "X-Big: " + "a" * 100_000, "Content-Type: application/json"))
        await asyncio.sleep(1)

    service = await raw_service(handle)
    router = await start_router(chain({"serviceUrl": service.url()}))
    status, body, _ = await router.post({"a": 1})
    assert status == 502
    cause = orjson.loads(body)["cause"]
    assert f"127.0.0.1:{service.port}" in cause and "header section" in cause


async def test_endless_head_line_is_cut_while_it_arrives(raw_service: Any, client: HTTPClient) -> None:
    """A header line that never ends is refused once the limit is crossed, not when it ends."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        for _ in range(64):  # 4 MiB of one line, then silence
            writer.write(b"a" * 65536)
            await writer.drain()
        await asyncio.sleep(5)

    service = await raw_service(handle)
    started = time.monotonic()
    with pytest.raises(httpclient.ClientError, match="header section"):
        await client.post(service.url(), {}, b"", timeout=4)
    assert time.monotonic() - started < 2


# Rule 6: compressed answers. Relayed: byte for byte with Content-Encoding. Read: decoded, bounded.

async def test_relayed_answer_keeps_its_content_encoding(raw_service: Any, start_router: Any) -> None:
    """The graph's answer is a step's answer unchanged: its gzip bytes and header pass through."""
    zipped = gzip.compress(b'{"predictions": [1]}')

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(answer(zipped, "Content-Type: application/json", "Content-Encoding: gzip"))
        await asyncio.sleep(1)

    service = await raw_service(handle)
    router = await start_router(chain({"serviceUrl": service.url()}))
    status, body, headers = await raw_post(router.url, b"{}")
    assert (status, body, headers.get("Content-Encoding")) == (200, zipped, "gzip")
    assert headers["Content-Type"] == "application/json"  # sniffed on the decoded bytes


async def test_relayed_stream_keeps_its_content_encoding(raw_service: Any, start_router: Any) -> None:
    """A streamed answer is relayed as it arrives, still gzip, with its Content-Encoding."""
    zipped = gzip.compress(b"data: one\n\ndata: two\n\n")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(zipped), 10):
            piece = zipped[i:i + 10]
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await asyncio.sleep(1)

    service = await raw_service(handle)
    router = await start_router(chain({"serviceUrl": service.url()}))
    status, body, headers = await raw_post(router.url, b"{}")
    assert (status, body, headers.get("Content-Encoding")) == (200, zipped, "gzip")


async def test_relayed_unknown_coding_keeps_its_header(raw_service: Any, start_router: Any) -> None:
    """A coding the router cannot undo is still relayed as sent, never with the header dropped."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(answer(b"\x8b\x02\x80{}\x03", "Content-Type: application/json", "Content-Encoding: br"))
        await asyncio.sleep(1)

    service = await raw_service(handle)
    router = await start_router(chain({"serviceUrl": service.url()}))
    status, body, headers = await raw_post(router.url, b"{}")
    assert (status, body, headers.get("Content-Encoding")) == (200, b"\x8b\x02\x80{}\x03", "br")


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


READ_BODIES = {
    # RFC 9112 §7.2 / RFC 1952 §2.2: a gzip body may be several members, all of it is the body.
    "multi-member-gzip": (gzip.compress(b'{"predictions": ') + gzip.compress(b"[1, 2]}"), "gzip"),
    # RFC 9110 §8.4: codings listed in the order applied, so undone last first.
    "gzip-then-deflate": (_deflate(gzip.compress(b'{"predictions": [1, 2]}')), "gzip, deflate"),
    "identity-and-gzip": (gzip.compress(b'{"predictions": [1, 2]}'), "identity, gzip"),
}


@pytest.mark.parametrize("case", list(READ_BODIES))
async def test_bodies_the_router_reads_are_decoded_whole(raw_service: Any, start_router: Any, case: str) -> None:
    """``data: $response`` with mapPredictionsToInstances reads the first answer: decoded whole."""
    encoded, coding = READ_BODIES[case]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await service.read_request(reader)
            if len(service.requests) % 2 == 1:
                writer.write(answer(encoded, "Content-Type: application/json", f"Content-Encoding: {coding}"))
            else:
                writer.write(answer(body, "Content-Type: application/json"))

    service = await raw_service(handle)
    router = await start_router(chain(
        {"serviceUrl": service.url()},
        {"serviceUrl": service.url(), "data": "$response", "mapPredictionsToInstances": True},
    ))
    status, body, _ = await router.post({"a": 1})
    assert status == 200
    assert orjson.loads(service.requests[1]) == {"instances": [1, 2]}
    assert orjson.loads(body) == {"instances": [1, 2]}


async def test_unknown_coding_of_a_read_body_is_502_naming_it(raw_service: Any, start_router: Any) -> None:
    """A body the router must read in a coding it cannot undo: 502 naming the coding and the
    service, never the raw bytes passed on as if decoded."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await service.read_request(reader)
            writer.write(answer(b"\x8b\x02\x80{}\x03", "Content-Type: application/json", "Content-Encoding: br"))

    service = await raw_service(handle)
    router = await start_router(chain({"serviceUrl": service.url()},
                                      {"serviceUrl": service.url(), "data": "$response"}))
    status, body, _ = await router.post({"a": 1})
    assert status == 502
    cause = orjson.loads(body)["cause"]
    assert "'br'" in cause and f"127.0.0.1:{service.port}" in cause
    assert len(service.requests) == 1  # the next step never ran


async def test_gzip_bomb_is_502_with_bounded_memory(raw_service: Any, start_router: Any) -> None:
    """A 1 MB gzip body that inflates to about 1 GiB is cut at the decoded limit while it
    inflates: 502, and the process's peak memory stays near the limit."""
    bomb = gzip.compress(b"\0" * (1024 * 1024 * 1024), 9)
    assert len(bomb) < 1_100_000

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await service.read_request(reader)
            writer.write(answer(bomb, "Content-Type: application/json", "Content-Encoding: gzip"))

    service = await raw_service(handle)
    limit = 8 * 1024 * 1024
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              upstream=UpstreamSettings(max_response_bytes=limit))
    router = await start_router(chain({"serviceUrl": service.url()},
                                      {"serviceUrl": service.url(), "data": "$response"}), settings=settings)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    status, body, _ = await router.post({"a": 1})
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert status == 502
    assert f"over the {limit}-byte limit" in orjson.loads(body)["cause"]
    assert grown_mib < 64
    assert len(service.requests) == 1


# Rule 7: trailers are never merged into the answer's headers (RFC 9110 §6.5.1).

async def test_trailers_do_not_change_the_answer(raw_service: Any, client: HTTPClient) -> None:
    """Content-Type and Content-Encoding sent as trailer fields are ignored."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await service.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"8\r\n{\"a\": 1}\r\n0\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\r\n")
        await asyncio.sleep(1)

    service = await raw_service(handle)
    got = await client.post(service.url(), {}, b"", timeout=2)
    assert (got.status, got.body, got.content_type) == (200, b'{"a": 1}', "application/json")
    assert getattr(got, "encoding", None) is None


# Rule 12: 204 and 304 carry no body (RFC 9110 §6.4.1, RFC 9112 §6.3 rule 1).

@pytest.mark.parametrize("head", [
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n",
], ids=["204-with-length", "304-chunked"])
async def test_204_and_304_end_at_their_head(raw_service: Any, client: HTTPClient, head: bytes) -> None:
    """The client does not wait for a body the status rules out, even when the head declares one."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await service.read_request(reader)
            writer.write(head)

    service = await raw_service(handle)
    for stream in (False, True):
        got = await client.post(service.url(), {}, b"", timeout=1, stream=stream)
        assert (got.body, got.stream) == (b"", None)
    assert service.connections == 1  # the bodiless answer ended at its framed end: reusable


# Rule 13: an answer that comes before our request was written.

async def test_early_answer_before_the_upload_was_written_is_not_reused(raw_service: Any, client: HTTPClient) -> None:
    """A service that answers 413 without reading our 32 MiB body: the rest of that body is
    still ours to write, so the connection must never carry the next request."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if service.connections == 1:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer(b"", status="413 Content Too Large"))
            await writer.drain()
            await asyncio.sleep(0.5)
            while await reader.read(1 << 20):  # drain what we never wanted
                pass
            return
        await service.read_request(reader)
        writer.write(answer(b'{"ok": true}'))
        await asyncio.sleep(1)

    service = await raw_service(handle)
    big = HTTPClient(per_host=4)
    try:
        first = await big.post(service.url(), {}, b"x" * (32 * 1024 * 1024), timeout=5)
        assert first.status == 413
        second = await big.post(service.url(), {}, b"{}", timeout=2)
        assert (second.status, second.body) == (200, b'{"ok": true}')
        assert service.connections == 2
    finally:
        await big.close()


# The sans-IO reader and the decoder on their own: bytes in, state out.

def _read_all(reader: ResponseReader, data: bytes, split: int) -> int:
    reader.expect()
    state = reader.state
    for piece in (data[:split], data[split:]):
        if piece:
            state = reader.feed(piece)
    return state


@pytest.mark.parametrize("wire, body", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: 1\r\n\r\n", b"hello"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", b""),
], ids=["length", "chunked-with-trailer", "after-100", "204"])
def test_reader_frames_an_answer_split_anywhere(wire: bytes, body: bytes) -> None:
    """Wherever the bytes are split, the answer ends at its framed end with the same body."""
    reader = ResponseReader(64 * 1024, 1024)
    for split in range(len(wire) + 1):
        assert _read_all(reader, wire, split) == rr.DONE, split
        assert (reader.body(), reader.keep_alive) == (body, True)
        assert reader.feed(b"H") == rr.UNSOLICITED  # nothing is outstanding any more
        assert not reader.keep_alive


@pytest.mark.parametrize("wire, extra", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n", b""),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n", b"\n"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\r\n\r\n", b""),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\r\n\r\n", b"\r\n"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\r\n\r\n0\r\n\r\n", b""),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\r\n\r\n0\r\n\r\n", b"\r"),
    (b"HTTP/1.1 304 Not Modified\r\n\r\n", b""),
    (b"HTTP/1.1 304 Not Modified\r\n\r\n", b"\n\n"),
])
def test_reader_counts_blank_lines_past_the_framed_end(wire: bytes, extra: bytes) -> None:
    """CR/LF after the framed end (llhttp skips them between messages) still retire the
    connection; CR/LF that belong to the answer do not, wherever the bytes are split."""
    reader = ResponseReader(64 * 1024, 1024)
    data = wire + extra
    for split in range(len(data) + 1):
        # Split at or past the answer's end: the extra bytes come in a read of their own.
        alone = bool(extra) and len(wire) <= split < len(data)
        assert _read_all(reader, data, split) == (rr.UNSOLICITED if alone else rr.DONE), split
        reader.body()
        assert reader.keep_alive == (not extra), split


def test_reader_body_until_close_ends_at_eof() -> None:
    """No Content-Length, no chunking: the body is delimited by the close (RFC 9112 §6.3 rule 8)."""
    reader = ResponseReader(64 * 1024, 1024)
    assert _read_all(reader, b"HTTP/1.1 200 OK\r\n\r\nuntil", 0) == rr.BODY
    assert reader.eof() == rr.DONE
    assert (reader.body(), reader.keep_alive) == (b"until", False)
    reader.expect()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    assert reader.eof() == rr.ERROR and reader.error_kind == rr.CLOSED


@pytest.mark.parametrize("encoded, coding, plain", [
    (gzip.compress(b"a") + gzip.compress(b"b"), "gzip", b"ab"),
    (zlib.compress(b"zlib"), "deflate", b"zlib"),
    (zlib.compress(b"raw")[2:-4], "deflate", b"raw"),  # raw deflate, as some servers send
    (gzip.compress(zlib.compress(b"two")), "deflate, gzip", b"two"),
    (b"plain", "identity", b"plain"),
    (b"", "gzip", b""),
])
def test_decode_undoes_codings(encoded: bytes, coding: str, plain: bytes) -> None:
    assert content_coding.decode(encoded, coding, 1024) == plain


@pytest.mark.parametrize("encoded, coding, error", [
    (b"xx", "br", content_coding.UnsupportedCoding),
    (b"xx", "gzip, zstd", content_coding.UnsupportedCoding),
    (gzip.compress(b"abc")[:-6], "gzip", content_coding.CorruptBody),
    (gzip.compress(b"abc") + b"junk", "gzip", content_coding.CorruptBody),
    (gzip.compress(b"\0" * 10_000_000), "gzip", content_coding.DecodedTooLarge),
])
def test_decode_refuses_what_it_cannot_undo(encoded: bytes, coding: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        content_coding.decode(encoded, coding, 1024 * 1024)


# Pool fairness: past per_host, callers are served in arrival order.

async def test_pool_serves_waiting_callers_in_arrival_order(raw_service: Any) -> None:
    """A released connection goes to the longest waiter, not back to the caller that just let it go.

    Three callers each send requests back to back over one pooled connection (the
    closed loop of a load generator's connections): they must take turns. Were the
    connection pooled as idle first, the caller that released it would take it again
    at once and the others would starve until it stopped.
    """
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await service.read_request(reader)
            writer.write(answer(body))
            await writer.drain()

    service = await raw_service(serve)
    client = HTTPClient(per_host=1, max_body=1024 * 1024)

    async def caller(name: bytes) -> None:
        for _ in range(20):
            got = await client.post(service.url(), {}, name)
            assert got.body == name

    try:
        await asyncio.wait_for(asyncio.gather(caller(b"a"), caller(b"b"), caller(b"c")), 10)
    finally:
        await client.close()
    longest = run = 1
    for before, now in zip(service.requests, service.requests[1:], strict=False):
        run = run + 1 if now == before else 1
        longest = max(longest, run)
    assert longest <= 2, f"one caller was served {longest} times in a row while others waited"


async def test_cancelled_waiters_lose_no_connection(raw_service: Any) -> None:
    """Waiters that leave the queue are passed over: the connection goes to the next one, and no slot is lost."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await service.read_request(reader)
            await asyncio.sleep(0.01)
            writer.write(answer(body))
            await writer.drain()

    service = await raw_service(serve)
    client = HTTPClient(per_host=1, max_body=1024 * 1024)
    try:
        first = asyncio.ensure_future(client.post(service.url(), {}, b"1"))
        await asyncio.sleep(0)
        waiting = [asyncio.ensure_future(client.post(service.url(), {}, b"%d" % i)) for i in range(2, 6)]
        await asyncio.sleep(0)
        for task in waiting[:3]:
            task.cancel()
        await first
        last = await asyncio.wait_for(waiting[3], 2)
        assert last.body == b"5"
        again = await asyncio.wait_for(client.post(service.url(), {}, b"6"), 2)
        assert again.body == b"6"
    finally:
        await client.close()
    assert service.connections == 1
