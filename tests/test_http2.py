"""Our HTTP/2 (RFC 9113), HPACK (RFC 7541) and gRPC transport, over loopback sockets.

HPACK is checked against the RFC's own examples (Appendix C). The server is driven by
hand-written frames where the test is about a protocol error, and by real grpcio
clients and servers otherwise; the client is checked against a real grpc.aio server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph_router.grpc import wire
from graph_router.grpc.client import Channel, RPCError
from graph_router.grpc.server import Abort, Call, LeanServer
from graph_router.http2 import connection as h2
from graph_router.http2 import hpack, huffman

ECHO = "/test.Echo/Echo"
SLOW = "/test.Echo/Slow"
BIG = 64 << 20
BIG_OPTIONS = [("grpc.max_receive_message_length", BIG), ("grpc.max_send_message_length", BIG)]


# --- HPACK: RFC 7541 Appendix C --------------------------------------------------------

def test_integer_representation_examples() -> None:
    """RFC 7541 §5.1 and C.1: 10 and 1337 with a 5-bit prefix, 42 on an octet boundary."""
    assert hpack.integer(10, 5, 0) == bytes([0b01010])
    assert hpack.integer(1337, 5, 0) == bytes([0b11111, 0b10011010, 0b00001010])
    assert hpack.integer(42, 8, 0) == bytes([42])
    assert hpack._integer(bytes([0b11111, 0b10011010, 0b00001010]), 0, 5) == (1337, 3)


@pytest.mark.parametrize(("block", "headers", "table"), [
    # C.2.1 literal with indexing, C.2.2 without indexing, C.2.3 never indexed, C.2.4 indexed.
    ("400a637573746f6d2d6b65790d637573746f6d2d686561646572", [("custom-key", "custom-header")],
     [("custom-key", "custom-header")]),
    ("040c2f73616d706c652f70617468", [(":path", "/sample/path")], []),
    ("100870617373776f726406736563726574", [("password", "secret")], []),
    ("82", [(":method", "GET")], []),
])
def test_header_field_representation_examples(block: str, headers: list[tuple[str, str]],
                                              table: list[tuple[str, str]]) -> None:
    """RFC 7541 C.2: each literal form, and what it leaves in the dynamic table."""
    decoder = hpack.Decoder()
    assert decoder.decode(bytes.fromhex(block)) == headers
    assert decoder.table == table


REQUESTS = [
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")],
    [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
     ("cache-control", "no-cache")],
    [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
     ("custom-key", "custom-value")],
]


@pytest.mark.parametrize("blocks", [
    # C.3: requests without Huffman coding; C.4: the same requests Huffman-coded.
    ["828684410f7777772e6578616d706c652e636f6d", "828684be58086e6f2d6361636865",
     "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"],
    ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
     "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"],
], ids=["C.3", "C.4"])
def test_request_examples_share_one_dynamic_table(blocks: list[str]) -> None:
    """RFC 7541 C.3 / C.4: three requests on one connection; the table grows to 164 octets."""
    decoder = hpack.Decoder()
    sizes = []
    for block, headers in zip(blocks, REQUESTS, strict=True):
        assert decoder.decode(bytes.fromhex(block)) == headers
        sizes.append(decoder.size)
    assert sizes == [57, 110, 164]
    assert decoder.table == [("custom-key", "custom-value"), ("cache-control", "no-cache"),
                             (":authority", "www.example.com")]


def test_response_examples_evict_from_a_256_octet_table() -> None:
    """RFC 7541 C.6: Huffman-coded responses with a 256-octet table, entries evicted as it fills."""
    decoder = hpack.Decoder(256)
    date = "Mon, 21 Oct 2013 20:13:21 GMT"
    first = decoder.decode(bytes.fromhex(
        "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3"))
    assert first == [(":status", "302"), ("cache-control", "private"), ("date", date),
                     ("location", "https://www.example.com")]
    assert decoder.size == 222
    second = decoder.decode(bytes.fromhex("4883640effc1c0bf"))
    assert second[0] == (":status", "307") and decoder.size == 222
    assert decoder.table[-1] == ("cache-control", "private")  # (":status", "302") was evicted
    third = decoder.decode(bytes.fromhex(
        "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f"
        "3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"))
    assert third[-1] == ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")
    assert decoder.size == 215 and len(decoder.table) == 3


def test_huffman_code_matches_the_rfc_and_rejects_bad_padding() -> None:
    """RFC 7541 §5.2 and Appendix B: the derived codes, C.4.1's string, EOS and padding refused."""
    assert (huffman.CODES[0], huffman.LENGTHS[0]) == (0x1FF8, 13)
    assert (huffman.CODES[256], huffman.LENGTHS[256]) == (0x3FFFFFFF, 30)
    assert huffman.CODES[ord("a")] == 0x3 and huffman.CODES[255] == 0x3FFFFEE
    assert huffman.encode(b"www.example.com").hex() == "f1e3c2e5f23a6ba0ab90f4ff"
    every = bytes(range(256))
    assert huffman.decode(huffman.encode(every)) == every
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(b"\xff\xff\xff\xff")  # EOS inside the string
    with pytest.raises(huffman.HuffmanError):
        huffman.decode(bytes([0b00000000]))  # '0' then 3 zero bits: padding must be ones


def test_decoder_refuses_malformed_blocks() -> None:
    """RFC 7541 §2.3.3 (an index past the table), §4.2 (a size update above the limit), §5.1."""
    for block in ("be", "80", "3fe21f", "0f", "4085"):
        with pytest.raises(hpack.HPACKError):
            hpack.Decoder().decode(bytes.fromhex(block))


def test_our_blocks_decode_to_what_we_encoded() -> None:
    """RFC 7541 §6.1 / §6.2.2: static indexes and literals without indexing, nothing added to the table."""
    headers = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-message", "a%20b"),
               ("x-bytes", "\xff\x00")]
    decoder = hpack.Decoder()
    assert decoder.decode(hpack.encode(headers)) == headers
    assert decoder.table == []


def test_grpc_timeout_and_message_encodings() -> None:
    """gRPC over HTTP/2: grpc-timeout units, grpc-message percent-encoding."""
    assert wire.parse_timeout("300m") == pytest.approx(0.3)
    assert wire.parse_timeout("2S") == 2.0 and wire.parse_timeout("1H") == 3600.0
    assert wire.parse_timeout("123456789S") is None and wire.parse_timeout("5x") is None
    assert wire.parse_timeout(wire.format_timeout(1.5)) == pytest.approx(1.5, abs=1e-5)
    text = "ünï 100% \n"
    assert wire.percent_encode(text) == "%C3%BCn%C3%AF 100%25 %0A"
    assert wire.percent_decode(wire.percent_encode(text)) == text


# --- a raw peer, for protocol errors ------------------------------------------------------


class RawPeer:
    """A client speaking HTTP/2 frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = hpack.Decoder()

    @classmethod
    async def connect(cls, port: int, preface: bytes = h2.PREFACE) -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer)
        writer.write(preface)
        return peer

    def frame(self, kind: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        self.writer.write(h2.frame_head(len(payload), kind, flags, stream_id) + payload)

    def settings(self, *pairs: tuple[int, int]) -> None:
        self.frame(h2.SETTINGS, 0, 0, b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs))

    def call(self, stream_id: int, path: str, message: bytes, extra: list[tuple[str, str]] | None = None,
             end: bool = True, flag: int = 0) -> None:
        block = hpack.encode([(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                              ("content-type", "application/grpc"), ("te", "trailers"), *(extra or [])])
        self.frame(h2.HEADERS, h2.END_HEADERS, stream_id, block)
        body = bytes([flag]) + len(message).to_bytes(4, "big") + message
        self.frame(h2.DATA, h2.END_STREAM if end else 0, stream_id, body)

    async def read(self, timeout: float = 5.0) -> tuple[int, int, int, bytes] | None:
        """The next frame, or None when the server closed the connection."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(9), timeout)
        except asyncio.IncompleteReadError:
            return None
        length = int.from_bytes(head[:3], "big")
        payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload

    async def until(self, kind: int, stream_id: int | None = None) -> tuple[int, int, bytes]:
        """(flags, stream, payload) of the next frame of ``kind`` (on ``stream_id``); headers decoded."""
        while True:
            frame = await self.read()
            assert frame is not None, f"connection closed before a frame of type {kind}"
            got, flags, sid, payload = frame
            if got == h2.HEADERS:
                self.last_headers = self.decoder.decode(payload)
            if got == kind and (stream_id is None or sid == stream_id):
                return flags, sid, payload

    async def closed(self) -> bool:
        while True:
            frame = await self.read()
            if frame is None:
                return True

    def close(self) -> None:
        self.writer.close()


# --- our server -----------------------------------------------------------------------------


class Echo:
    """Handlers that record what they saw."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.started = asyncio.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.metadata: list[list[tuple[str, str]]] = []
        self.release = asyncio.Event()
        self.tasks: list[tuple[asyncio.Task[Any] | None, int]] = []  # each echo call's task, and its cancel requests

    async def echo(self, call: Call) -> bytes:
        self.metadata.append(call.metadata)
        task = asyncio.current_task()
        self.tasks.append((task, task.cancelling() if task is not None else -1))
        if call.request.startswith(b"abort:"):
            raise Abort(wire.INVALID_ARGUMENT, call.request[6:].decode())
        return call.request

    async def slow(self, call: Call) -> bytes:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.started.set()
        try:
            await asyncio.wait_for(self.release.wait(), 10)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.in_flight -= 1
        return b"done:" + call.request


@pytest.fixture
async def served() -> AsyncIterator[tuple[LeanServer, Echo, int]]:
    echo = Echo()
    server = LeanServer({ECHO: echo.echo, SLOW: echo.slow}, {})
    port = await server.start("127.0.0.1", 0)
    yield server, echo, port
    await server.stop(0)


async def grpc_call(port: int, path: str, message: bytes, **kwargs: Any) -> bytes:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=BIG_OPTIONS) as channel:
        answer: bytes = await channel.unary_unary(path)(message, **kwargs)
        return answer


async def test_a_bad_preface_gets_goaway_protocol_error(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §3.4: an invalid connection preface is a connection error of type PROTOCOL_ERROR."""
    peer = await RawPeer.connect(served[2], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    _, sid, payload = await peer.until(h2.GOAWAY)
    assert sid == 0 and int.from_bytes(payload[4:8], "big") == h2.PROTOCOL_ERROR
    assert await peer.closed()


async def test_an_oversize_frame_is_a_frame_size_error(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §4.2: a frame over SETTINGS_MAX_FRAME_SIZE (16,384 by default) is a FRAME_SIZE_ERROR."""
    peer = await RawPeer.connect(served[2])
    peer.settings()
    peer.frame(h2.DATA, 0, 1, b"\0" * 16385)
    _, _, payload = await peer.until(h2.GOAWAY)
    assert int.from_bytes(payload[4:8], "big") == h2.FRAME_SIZE_ERROR
    assert await peer.closed()


async def test_frames_out_of_place_are_protocol_errors(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §6.10 (a frame inside a header block), §6.5 (SETTINGS ACK with a payload), §6.7 (PING size)."""
    cases = [
        lambda p: (p.frame(h2.HEADERS, 0, 1, hpack.encode([(":method", "POST")])), p.frame(h2.PING, 0, 0, b"\0" * 8)),
        lambda p: p.frame(h2.SETTINGS, h2.ACK, 0, b"\0" * 6),
        lambda p: p.frame(h2.PING, 0, 0, b"\0" * 7),
        lambda p: p.frame(h2.HEADERS, h2.END_HEADERS, 2, hpack.encode([(":method", "POST")])),  # even id
        lambda p: p.frame(h2.HEADERS, h2.END_HEADERS, 1, b"\xbe"),  # HPACK index past the table
    ]
    codes = []
    for send in cases:
        peer = await RawPeer.connect(served[2])
        peer.settings()
        send(peer)
        _, _, payload = await peer.until(h2.GOAWAY)
        codes.append(int.from_bytes(payload[4:8], "big"))
        peer.close()
    assert codes == [h2.PROTOCOL_ERROR, h2.FRAME_SIZE_ERROR, h2.FRAME_SIZE_ERROR, h2.PROTOCOL_ERROR,
                     h2.COMPRESSION_ERROR]


async def test_ping_is_answered_and_settings_acknowledged(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §6.7: PING comes back with ACK and the same payload; §6.5.3: SETTINGS gets an ACK."""
    peer = await RawPeer.connect(served[2])
    peer.settings((h2.INITIAL_WINDOW_SIZE, 1 << 20))
    flags, _, _ = await peer.until(h2.SETTINGS)
    assert not flags & h2.ACK  # the server's own SETTINGS come first (§3.4)
    flags, _, _ = await peer.until(h2.SETTINGS)
    assert flags & h2.ACK
    peer.frame(h2.PING, 0, 0, b"pingpong")
    flags, _, payload = await peer.until(h2.PING)
    assert flags & h2.ACK and payload == b"pingpong"
    peer.close()


async def test_a_compressed_message_is_unimplemented(served: tuple[LeanServer, Echo, int]) -> None:
    """gRPC over HTTP/2: a compressed message we cannot decode is UNIMPLEMENTED (INTERNAL without grpc-encoding)."""
    peer = await RawPeer.connect(served[2])
    peer.settings()
    peer.call(1, ECHO, b"x", [("grpc-encoding", "gzip")], flag=1)
    flags, _, _ = await peer.until(h2.HEADERS, 1)
    assert flags & h2.END_STREAM  # trailers-only
    assert wire.status_of(peer.last_headers) == (wire.UNIMPLEMENTED, "grpc-encoding 'gzip' is not supported: "
                                                                     "send uncompressed")
    peer.call(3, ECHO, b"x", flag=1)
    await peer.until(h2.HEADERS, 3)
    assert wire.status_of(peer.last_headers) == (wire.INTERNAL, "a compressed message without grpc-encoding")
    peer.close()


async def test_a_message_split_over_padded_frames_and_continuation(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §6.1 (DATA split anywhere, padding skipped), §6.10 (a header block over CONTINUATION)."""
    peer = await RawPeer.connect(served[2])
    peer.settings()
    block = hpack.encode([(":method", "POST"), (":scheme", "http"), (":path", ECHO), (":authority", "x"),
                          ("content-type", "application/grpc"), ("te", "trailers")])
    peer.frame(h2.HEADERS, 0, 1, block[:5])
    peer.frame(h2.CONTINUATION, h2.END_HEADERS, 1, block[5:])
    body = b"\0" + (11).to_bytes(4, "big") + b"hello world"
    peer.frame(h2.DATA, 0, 1, body[:2])
    peer.frame(h2.DATA, h2.PADDED, 1, bytes([3]) + body[2:9] + b"\0\0\0")
    peer.frame(h2.DATA, h2.END_STREAM, 1, body[9:])
    _, _, payload = await peer.until(h2.DATA, 1)
    assert payload == body
    peer.close()


async def test_a_reset_stream_answers_nothing_and_the_connection_goes_on(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §6.4: RST_STREAM ends one stream; the next stream on the connection is answered."""
    _, echo, port = served
    peer = await RawPeer.connect(port)
    peer.settings()
    peer.call(1, SLOW, b"a")
    await asyncio.wait_for(echo.started.wait(), 5)
    peer.frame(h2.RST_STREAM, 0, 1, h2.CANCEL.to_bytes(4, "big"))
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    peer.call(3, ECHO, b"after")
    _, _, payload = await peer.until(h2.DATA, 3)
    assert payload == b"\0\0\0\0\x05after"
    peer.close()


async def test_calls_in_flight_are_counted_until_they_end(served: tuple[LeanServer, Echo, int]) -> None:
    """A call stops counting toward --max-in-flight when it ends, when it is reset, and when its
    connection is lost; a repeated header block is parsed once, each call getting its own metadata."""
    server, echo, port = served
    peer = await RawPeer.connect(port)
    peer.settings()
    for sid in (1, 3):
        peer.call(sid, ECHO, b"x", [("x-id", "same")])
        await peer.until(h2.DATA, sid)
    assert echo.metadata == [[("x-id", "same")], [("x-id", "same")]] and echo.metadata[0] is not echo.metadata[1]
    assert server.in_flight == 0
    peer.call(5, SLOW, b"a")
    await asyncio.wait_for(echo.started.wait(), 5)
    peer.frame(h2.RST_STREAM, 0, 5, h2.CANCEL.to_bytes(4, "big"))
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    peer.call(7, SLOW, b"b")  # still running when the connection goes
    assert await _settles(lambda: server.in_flight == 1 and echo.in_flight == 1)
    peer.close()
    assert await _settles(lambda: server.in_flight == 0)


async def test_unary_calls_reuse_a_worker_task_through_cancellations(served: tuple[LeanServer, Echo, int]) -> None:
    """Calls run on reused worker tasks: one after another on the same task; a call cancelled while it
    runs (RST_STREAM) or before it begins ends that call only, the worker goes on with no cancellation
    pending; stop() ends the idle workers."""
    server, echo, port = served
    peer = await RawPeer.connect(port)
    peer.settings()
    for sid in (1, 3, 5):
        peer.call(sid, ECHO, b"x")
        await peer.until(h2.DATA, sid)
    first = echo.tasks[0][0]
    assert first is not None and [t for t, _ in echo.tasks] == [first] * 3 and len(server.idle) == 1
    peer.call(7, SLOW, b"a")  # cancelled while it runs
    await asyncio.wait_for(echo.started.wait(), 5)
    peer.frame(h2.RST_STREAM, 0, 7, h2.CANCEL.to_bytes(4, "big"))
    await asyncio.wait_for(echo.cancelled.wait(), 5)
    peer.call(9, ECHO, b"y")
    await peer.until(h2.DATA, 9)
    assert echo.tasks[-1] == (first, 0)  # the same task, not being cancelled
    peer.call(11, ECHO, b"z")  # reset at once: cancelled before it began, or while it ran
    peer.frame(h2.RST_STREAM, 0, 11, h2.CANCEL.to_bytes(4, "big"))
    peer.call(13, ECHO, b"w")
    _, _, payload = await peer.until(h2.DATA, 13)
    assert payload.endswith(b"w") and echo.tasks[-1][1] == 0
    assert await _settles(lambda: server.in_flight == 0 and len(server.idle) >= 1)
    workers = [w.task for w in server.idle]
    await server.stop(0)
    assert await _settles(lambda: all(t is not None and t.done() for t in workers)) and not server.idle
    peer.close()


async def _settles(check: Callable[[], bool]) -> bool:
    """Whether ``check`` holds within a second."""
    for _ in range(100):
        if check():
            return True
        await asyncio.sleep(0.01)
    return check()


async def test_grpcio_cancelling_a_call_cancels_the_handler(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §6.4 with a real peer: grpcio cancels a call by RST_STREAM; the handler is cancelled."""
    _, echo, port = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(SLOW)(b"x")
        await asyncio.wait_for(echo.started.wait(), 5)
        call.cancel()
        await asyncio.wait_for(echo.cancelled.wait(), 5)


async def test_grpcio_client_round_trips_big_messages_under_flow_control(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §5.2 / §6.9: 3 MiB each way, through windows of 64 KiB (grpcio's) and 1 MiB (ours)."""
    message = bytes(range(256)) * (3 * 4096)
    assert await grpc_call(served[2], ECHO, message) == message


async def test_grpcio_metadata_and_status(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 7541 §5.2: grpcio's Huffman-coded metadata is read; gRPC status and message travel in trailers."""
    _, echo, port = served
    value = "a long metadata value, Huffman-coded by grpcio: 0123456789"
    await grpc_call(port, ECHO, b"hi", metadata=(("x-request-id", value),))
    assert ("x-request-id", value) in echo.metadata[-1]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(port, ECHO, "abort:bad ünï 100%".encode())
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and info.value.details() == "bad ünï 100%"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(port, "/test.Echo/Nope", b"")
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_concurrent_calls_share_one_connection(served: tuple[LeanServer, Echo, int]) -> None:
    """RFC 9113 §5: 40 calls in flight at once on one grpcio channel, each answered on its own stream."""
    server, echo, port = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary(SLOW)
        calls = [method(str(i).encode()) for i in range(40)]
        for _ in range(200):
            if echo.in_flight == 40:
                break
            await asyncio.sleep(0.01)
        assert echo.in_flight == 40 and len(server.connections) == 1
        echo.release.set()
        answers = await asyncio.gather(*calls)
    assert answers == [b"done:" + str(i).encode() for i in range(40)]


async def test_goaway_on_shutdown_lets_calls_in_flight_finish() -> None:
    """RFC 9113 §6.8: stop() sends GOAWAY with the last stream taken; that call still gets its answer."""
    echo = Echo()
    server = LeanServer({ECHO: echo.echo, SLOW: echo.slow}, {})
    port = await server.start("127.0.0.1", 0)
    peer = await RawPeer.connect(port)
    peer.settings()
    peer.call(1, SLOW, b"late")
    await asyncio.wait_for(echo.started.wait(), 5)
    stopping = asyncio.create_task(server.stop(5))
    _, _, payload = await peer.until(h2.GOAWAY)
    assert int.from_bytes(payload[:4], "big") == 1 and int.from_bytes(payload[4:8], "big") == h2.NO_ERROR
    echo.release.set()
    _, _, data = await peer.until(h2.DATA, 1)
    assert data.endswith(b"done:late")
    flags, _, _ = await peer.until(h2.HEADERS, 1)
    assert flags & h2.END_STREAM and wire.status_of(peer.last_headers) == (wire.OK, "")
    assert await peer.closed()  # nothing left in flight: the server closes the connection
    await asyncio.wait_for(stopping, 5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(port, ECHO, b"x", timeout=2)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


# --- our client against grpc.aio -------------------------------------------------------------


@pytest.fixture
async def grpcio_server() -> AsyncIterator[tuple[int, list[str]]]:
    seen: list[str] = []

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        meta = dict((k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str))
        seen.append(f"timeout={context.time_remaining() is not None} id={meta.get('x-request-id')}")
        if request.startswith(b"abort:"):
            await context.abort(grpc.StatusCode.NOT_FOUND, request[6:].decode())
        if request == b"sleep":
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
        return request

    server = grpc.aio.server(options=BIG_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, seen
    await server.stop(0)


async def test_our_client_against_grpcio_flow_control_status_and_deadline(
        grpcio_server: tuple[int, list[str]]) -> None:
    """RFC 9113 §5.2 (3 MiB each way under grpcio's windows), §8.1 (status in trailers), §6.4 (deadline: RST_STREAM)."""
    port, seen = grpcio_server
    channel = Channel("127.0.0.1", port, BIG)
    message = bytes(range(256)) * (3 * 4096) + b"tail"
    assert await channel.unary(ECHO, [message[:1000], message[1000:]], len(message), [("x-request-id", "r1")],
                               5.0) == message
    assert seen[-1] == "timeout=True id=r1"
    with pytest.raises(RPCError) as info:
        await channel.unary(ECHO, ["abort:nö model 100%".encode()], len("abort:nö model 100%".encode()), None, None)
    assert (info.value.code, info.value.details, info.value.transport) == (wire.NOT_FOUND, "nö model 100%", False)
    with pytest.raises(RPCError) as info:
        await channel.unary(ECHO, [b"sleep"], 5, None, 0.2)
    assert info.value.code == wire.DEADLINE_EXCEEDED
    for _ in range(100):
        if "cancelled" in seen:
            break
        await asyncio.sleep(0.02)
    assert "cancelled" in seen
    answers = await asyncio.gather(*(channel.unary(ECHO, [str(i).encode()], len(str(i)), None, 5.0)
                                     for i in range(50)))
    assert answers == [str(i).encode() for i in range(50)]
    channel.close()


async def test_our_client_reports_transport_failures_as_unavailable() -> None:
    """No listener, and a server that drops the connection mid-call: UNAVAILABLE, flagged as transport."""
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RPCError) as info:
        await Channel("127.0.0.1", port, BIG).unary(ECHO, [b"x"], 1, None, 2.0)
    assert info.value.code == wire.UNAVAILABLE and info.value.transport

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(RPCError) as info:
        await Channel("127.0.0.1", port, BIG).unary(ECHO, [b"x"], 1, None, 2.0)
    assert info.value.code == wire.UNAVAILABLE and info.value.transport
    server.close()


def test_sans_io_connection_windows_and_frame_sizes() -> None:
    """RFC 9113 §6.9.1: DATA waits for the peer's window and is cut to its SETTINGS_MAX_FRAME_SIZE."""
    client, server = h2.Connection(True), h2.Connection(False)

    def pump() -> None:
        while client.out or server.out:
            to_server, client.out = b"".join(bytes(p) for p in client.out), []
            server.receive(to_server)
            to_client, server.out = b"".join(bytes(p) for p in server.out), []
            client.receive(to_client)

    stream = client.open_stream()  # before the server's SETTINGS arrive: the default windows apply
    client.send_headers(stream, hpack.encode([(":method", "POST"), (":path", "/x")]))
    body = b"y" * (200 * 1024)
    client.send_data(stream, [body], True)
    sizes = [int.from_bytes(bytes(p[:3]), "big") for p in client.out if len(p) == 9 and p[3] == h2.DATA]
    assert sizes and max(sizes) <= 16384 and sum(sizes) == 65535  # the default stream window, then blocked
    pump()  # the server's SETTINGS (a 1 MiB stream window) lets the rest go
    ended = [s for kind, s, _ in server.events if kind == h2.EV_END]
    assert ended and b"".join(bytes(c) for c in ended[0].chunks) == body


def test_frame_heads_and_reserved_bits() -> None:
    """§4.1: a frame head is 24-bit length, type, flags, R bit + 31-bit stream id; R is ignored on receipt.

    Both are read and written in C in the compiled build: the bytes must be the RFC's.
    """
    assert h2.frame_head(0x123456, 7, 0x25, 0x7FFFFFFF) == bytes.fromhex("123456" "07" "25" "7fffffff")
    assert h2.frame_head(0, h2.DATA, 0, 1) == bytes.fromhex("000000" "00" "00" "00000001")
    server = h2.Connection(False)
    server.receive(h2.PREFACE + h2.frame_head(0, h2.SETTINGS, 0, 0))
    window = server.send_window
    # The connection window grows by 100: the reserved bit of the increment is not part of it (§6.9).
    server.receive(h2.frame_head(4, h2.WINDOW_UPDATE, 0, 0) + (0x80000000 | 100).to_bytes(4, "big"))
    assert server.send_window == window + 100 and not server.closed
    # A HEADERS frame whose stream id carries the R bit opens stream 1 (the bit dropped).
    block = hpack.encode([(":method", "POST"), (":path", "/x")])
    head = bytearray(h2.frame_head(len(block), h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1))
    head[5] |= 0x80
    server.receive(bytes(head) + block)
    assert [(kind, s.id) for kind, s, _ in server.events if s is not None][:1] == [(h2.EV_HEADERS, 1)]
    # Bytes-like input (not only bytes) is read the same.
    other = h2.Connection(False)
    other.receive(memoryview(h2.PREFACE + h2.frame_head(0, h2.SETTINGS, 0, 0) + bytes(head) + block))
    assert [s.id for kind, s, _ in other.events if kind == h2.EV_HEADERS] == [1]


async def test_calls_past_the_in_flight_limit_are_resource_exhausted() -> None:
    """As grpc.aio's maximum_concurrent_rpcs: past max_in_flight calls, RESOURCE_EXHAUSTED, then room again."""
    echo = Echo()
    server = LeanServer({ECHO: echo.echo, SLOW: echo.slow}, {}, max_in_flight=1)
    port = await server.start("127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            first = channel.unary_unary(SLOW)(b"1")
            await asyncio.wait_for(echo.started.wait(), 5)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await channel.unary_unary(ECHO)(b"2")
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            echo.release.set()
            assert await first == b"done:1"
            assert await channel.unary_unary(ECHO)(b"3") == b"3"
    finally:
        await server.stop(0)


async def test_a_request_over_the_limit_is_answered_early_and_the_stream_ends() -> None:
    """RFC 9113 §8.1: the server answers (RESOURCE_EXHAUSTED) before the request is all sent, then resets it."""
    echo = Echo()
    server = LeanServer({ECHO: echo.echo}, {}, max_message=1 << 20)
    port = await server.start("127.0.0.1", 0)
    channel = Channel("127.0.0.1", port, BIG)
    try:
        message = b"z" * (3 << 20)
        with pytest.raises(RPCError) as info:
            await channel.unary(ECHO, [message], len(message), None, 5.0)
        assert info.value.code == wire.RESOURCE_EXHAUSTED and not echo.metadata
        assert channel._conn is not None and not channel._conn.h2.streams  # nothing left half-sent
        assert await channel.unary(ECHO, [b"small"], 5, None, 5.0) == b"small"  # the connection goes on
    finally:
        channel.close()
        await server.stop(0)


async def test_our_client_and_server_move_big_messages_both_ways_at_once() -> None:
    """RFC 9113 §5.2: eight 3 MiB echoes at once on one connection, flow control both ways, no stall."""
    echo = Echo()
    server = LeanServer({ECHO: echo.echo}, {})
    port = await server.start("127.0.0.1", 0)
    channel = Channel("127.0.0.1", port, BIG)
    try:
        messages = [bytes([i]) * (3 << 20) for i in range(8)]
        answers = await asyncio.wait_for(asyncio.gather(
            *(channel.unary(ECHO, [m], len(m), None, 30.0) for m in messages)), 60)
        assert answers == messages
    finally:
        channel.close()
        await server.stop(0)


def _client_bytes(bodies: list[bytes], pad: int) -> bytes:
    """A client's preface, SETTINGS and one call per body (DATA cut in 3 frames, the middle one padded)."""
    out = [h2.PREFACE, h2.frame_head(0, h2.SETTINGS, 0, 0)]
    block = hpack.encode([(":method", "POST"), (":path", ECHO), ("x-long", "v" * 300)])
    for n, body in enumerate(bodies):
        sid = 2 * n + 1
        out.append(h2.frame_head(20, h2.HEADERS, 0, sid) + block[:20])
        out.append(h2.frame_head(len(block) - 20, h2.CONTINUATION, h2.END_HEADERS, sid) + block[20:])
        a, b = len(body) // 3, 2 * len(body) // 3
        out.append(h2.frame_head(a, h2.DATA, 0, sid) + body[:a])
        middle = bytes([pad]) + body[a:b] + b"\0" * pad
        out.append(h2.frame_head(len(middle), h2.DATA, h2.PADDED, sid) + middle)
        out.append(h2.frame_head(len(body) - b, h2.DATA, h2.END_STREAM, sid) + body[b:])
        out.append(h2.frame_head(8, h2.PING, 0, 0) + b"p" * 8)
    return b"".join(out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies=st.lists(st.binary(max_size=40000), min_size=1, max_size=4), pad=st.integers(0, 255),
       cuts=st.lists(st.integers(1, 200000), max_size=12))
def test_bytes_split_anywhere_read_the_same(bodies: list[bytes], pad: int, cuts: list[int]) -> None:
    """RFC 9113 §4.1: frames are a byte stream; however TCP cuts it, the server reads the same calls."""
    data = _client_bytes(bodies, pad)
    server = h2.Connection(False)
    points = sorted({c % len(data) for c in cuts} | {0, len(data)})
    got: dict[int, bytes] = {}
    for start, end in itertools.pairwise(points):
        server.receive(data[start:end])
        for kind, stream, _ in server.events:
            assert kind != h2.EV_CLOSED
            if kind == h2.EV_END and stream is not None:
                assert stream.headers is not None and ("x-long", "v" * 300) in stream.headers
                got[stream.id] = b"".join(bytes(c) for c in stream.chunks)
        server.events.clear()
    assert got == {2 * n + 1: body for n, body in enumerate(bodies)}
    pongs = [p for p in server.out if bytes(p[3:5]) == bytes([h2.PING, h2.ACK])]
    assert len(pongs) == len(bodies)
