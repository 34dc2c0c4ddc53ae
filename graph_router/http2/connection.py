# cython: annotation_typing=False
"""A sans-IO HTTP/2 connection (RFC 9113), client or server side, for unary exchanges.

Bytes go in through :meth:`Connection.receive`; what the connection has to say (frames
to write) collects in :attr:`Connection.out`, and what happened (a stream's headers,
its end, a reset, a GOAWAY) in :attr:`Connection.events`, for the asyncio glue
(graph_router.grpc.server and .client) to write and act on. No I/O, no clock.

Why our own: grpc.aio costs about 185 µs of CPU per unary call on each side, more than
the whole REST path through the router; a gRPC call needs a small part of HTTP/2.

What it does, by RFC 9113 section:

- §3.4 the connection preface (checked on the server side, sent on the client side),
  then SETTINGS both ways (§6.5) with their ACKs; PING answered (§6.7);
- §4.2 frame size: frames over our SETTINGS_MAX_FRAME_SIZE are a FRAME_SIZE_ERROR;
  frames we send are cut to the peer's; §4.3 header blocks (HEADERS + CONTINUATION,
  nothing else in between) decoded by HPACK, a failure being a COMPRESSION_ERROR;
- §5.1 stream states: ids rise, odd for clients; §5.1.2 a stream over our
  SETTINGS_MAX_CONCURRENT_STREAMS is refused (REFUSED_STREAM);
- §5.2 / §6.9 flow control both ways: received DATA is counted against the windows we
  granted, and granted again (WINDOW_UPDATE) as it is taken in, in batches; DATA we send
  waits for the peer's windows;
- §5.4 errors: a connection error sends GOAWAY with its code and ends the connection;
  a stream error sends RST_STREAM and ends the stream only;
- §6.8 GOAWAY received: no new streams, and those above its last id failed (retryable).

Streams are unary-shaped: every DATA byte of a stream is kept (up to ``max_stream_bytes``)
until the stream ends, then handed over whole.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any

from .hpack import Decoder, HPACKError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (§6) and flags.
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (§7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# Settings (§6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = (
    range(1, 7))

# The same as C ints in the compiled module (see connection.pxd), for the per-frame paths:
# a module global read there is a dict lookup, and each test on it a boxed int.
_DATA, _HEADERS, _CONTINUATION, _WINDOW_UPDATE = DATA, HEADERS, CONTINUATION, WINDOW_UPDATE
_END_STREAM, _END_HEADERS, _PADDED, _PRIORITY_FLAG = END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG

MAX_WINDOW = 2**31 - 1
_MAX_WINDOW = MAX_WINDOW
DEFAULT_WINDOW = 65535
DEFAULT_FRAME = 16384
MAX_FRAME_LIMIT = 2**24 - 1

# Events (kind, stream, code) in Connection.events.
EV_HEADERS = 1  # a stream's (first) header block: stream.headers
EV_END = 2  # the peer ended the stream: stream.chunks hold its DATA, stream.trailers its trailers
EV_RESET = 3  # the stream ended abnormally: code is the RST_STREAM (or GOAWAY) error code
EV_TOO_LARGE = 4  # the stream's DATA passed max_stream_bytes (the rest is dropped)
EV_GOAWAY = 5  # the peer is going away (stream None; code its error code)
EV_CLOSED = 6  # a connection error: GOAWAY is in ``out``; write it and close


class ConnectionFailure(Exception):
    """A connection error (§5.4.1): the connection ends with GOAWAY(code)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class StreamError(Exception):
    """A stream error (§5.4.2): RST_STREAM(code) for that stream only."""

    def __init__(self, stream_id: int, code: int, message: str) -> None:
        super().__init__(message)
        self.stream_id = stream_id
        self.code = code


_HEAD = struct.Struct(">IBI")  # length (24 bits) and type in one word, flags, stream id: 9 octets
# DATA payloads up to this size are copied out of the read buffer rather than viewed.
_COPY_BELOW = 4096


def frame_head(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """The 9-octet frame header (§4.1).

    One struct pack: building it as a 72-bit int and ``to_bytes`` costs several
    thousand instructions per frame, and a unary call writes six frames or more.
    """
    return _HEAD.pack(length << 8 | kind, flags, stream_id)


class Stream:
    """One stream's state; ``user`` is the glue's (a future, a task)."""

    __slots__ = ("chunks", "headers", "id", "key", "local_closed", "pending", "pending_end", "pending_trailers",
                 "received", "recv_unacked", "remote_closed", "send_window", "too_large", "trailers", "user")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.key = stream_id  # the id as a Python int, made once: the key of the connection's dicts
        self.headers: list[tuple[str, str]] | None = None
        self.trailers: list[tuple[str, str]] | None = None
        self.chunks: list[Any] = []  # DATA payloads (bytes or memoryview slices), in order
        self.received = 0
        self.recv_unacked = 0
        self.remote_closed = False
        self.local_closed = False
        self.too_large = False
        self.send_window = send_window
        self.pending: deque[Any] | None = None  # DATA waiting for window
        self.pending_end = False
        self.pending_trailers: bytes | None = None
        self.user: Any = None


class Connection:
    """One HTTP/2 connection's state machine (see the module docstring)."""

    def __init__(self, client: bool, *, max_concurrent: int = 1000, stream_window: int = 1 << 20,
                 connection_window: int = 16 << 20, max_frame: int = DEFAULT_FRAME,
                 max_stream_bytes: int = 64 << 20, max_header_block: int = 256 * 1024) -> None:
        self.client = client
        self.out: list[Any] = []
        self.events: list[tuple[int, Stream | None, int]] = []
        self.streams: dict[int, Stream] = {}
        self.closed = False  # no more frames in or out (after a connection error or GOAWAY sent and done)
        self.goaway_received = False
        self.goaway_sent = False
        self.peer_last_stream = MAX_WINDOW  # from the peer's GOAWAY
        self.last_peer_stream = 0  # the highest stream id the peer opened (server side)
        self.next_stream_id = 1
        self.decoder = Decoder()
        self.max_stream_bytes = max_stream_bytes
        self.max_header_block = max_header_block
        # What we grant.
        self.local_max_frame = max_frame
        self.local_stream_window = stream_window
        self.local_connection_window = connection_window
        self.max_concurrent = max_concurrent
        self.recv_window = connection_window  # what the peer may still send us on the connection
        self.recv_unacked = 0
        # What the peer grants us.
        self.send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_FRAME
        self.peer_max_concurrent = MAX_WINDOW
        self.blocked: dict[int, Stream] = {}  # streams with DATA waiting for window
        # Reading state.
        self._buffer = b""
        self._preface_left = 0 if client else len(PREFACE)
        self._data_stream: Stream | None = None  # a DATA frame's payload still arriving
        self._data_left = 0
        self._pad_left = 0
        self._data_end = False
        self._block_stream = 0  # header block in progress (CONTINUATION expected)
        self._block: list[bytes] = []
        self._block_size = 0
        self._block_end = False
        self._open_peer_streams = 0
        self._scratch = bytearray(32)  # frame heads are written here, then copied out as bytes
        self._start()

    def _start(self) -> None:
        settings = [(MAX_CONCURRENT_STREAMS, self.max_concurrent), (INITIAL_WINDOW_SIZE, self.local_stream_window),
                    (MAX_FRAME_SIZE, self.local_max_frame), (ENABLE_PUSH, 0)]
        payload = b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in settings)
        if self.client:
            self.out.append(PREFACE)
        self.out.append(frame_head(len(payload), SETTINGS, 0, 0) + payload)
        if self.local_connection_window > DEFAULT_WINDOW:
            self.out.append(_window_update(0, self.local_connection_window - DEFAULT_WINDOW))

    # --- receiving -----------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Take bytes from the peer; frames to send land in ``out``, news in ``events``."""
        if self.closed:
            return
        if type(data) is not bytes:
            data = bytes(data)
        try:
            self._receive(data)
        except ConnectionFailure as exc:
            self.close(exc.code, str(exc))

    def _receive(self, data: bytes) -> None:
        if self._preface_left:
            want = self._preface_left
            start = len(PREFACE) - want
            got = data[:want]
            if got != PREFACE[start : start + len(got)]:
                raise ConnectionFailure(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            self._preface_left -= len(got)
            data = data[len(got):]
            if not data:
                return
        i = 0
        n = len(data)
        if self._data_left or self._pad_left:
            i = self._data_payload(data, 0, n)
        if self._buffer:
            data = self._buffer + data[i:]
            self._buffer = b""
            i = 0
            n = len(data)
        p = data  # compiled: a pointer to the bytes, the frame heads read in C
        while i < n:
            if n - i < 9:
                self._buffer = data[i:]
                return
            length = p[i] << 16 | p[i + 1] << 8 | p[i + 2]
            kind = p[i + 3]
            flags = p[i + 4]
            stream_id = (p[i + 5] & 0x7F) << 24 | p[i + 6] << 16 | p[i + 7] << 8 | p[i + 8]  # reserved bit dropped
            if length > self.local_max_frame:
                raise ConnectionFailure(FRAME_SIZE_ERROR,
                                        f"a {length}-octet frame, over the {self.local_max_frame} allowed")
            if self._block_stream and (kind != _CONTINUATION or stream_id != self._block_stream):
                raise ConnectionFailure(PROTOCOL_ERROR, "a header block interrupted by another frame")
            if kind == _DATA:
                i = self._data_head(data, i + 9, n, length, flags, stream_id)
                continue
            end = i + 9 + length
            if end > n:
                self._buffer = data[i:]
                return
            if kind == _WINDOW_UPDATE and length == 4:
                # Read in place: a peer sends one or two per call, and a payload slice costs
                # more than the update itself.
                increment = (p[i + 9] & 0x7F) << 24 | p[i + 10] << 16 | p[i + 11] << 8 | p[i + 12]  # top bit reserved
                i = end
                try:
                    self._window_increment(stream_id, increment)
                except StreamError as exc:
                    self.reset(exc.stream_id, exc.code)
                continue
            payload = p[i + 9 : end]  # compiled: bytes straight from the pointer, not a slice object
            i = end
            try:
                self._frame(kind, flags, stream_id, payload)
            except StreamError as exc:
                self.reset(exc.stream_id, exc.code)

    def _data_head(self, data: bytes, i: int, n: int, length: int, flags: int, stream_id: int) -> int:
        """A DATA frame's header is read: account for it, then take its payload as it comes."""
        if stream_id == 0:
            raise ConnectionFailure(PROTOCOL_ERROR, "DATA on stream 0")
        pad = 0
        if flags & _PADDED:
            if i >= n:  # the pad length is not here yet: keep the whole frame head
                self._buffer = data[i - 9:]
                return n
            pad = data[i]
            i += 1
            if pad >= length:
                raise ConnectionFailure(PROTOCOL_ERROR, "DATA padding as long as its frame")
        # Flow control counts the whole payload, padding included (§6.9.1).
        if length > self.recv_window:
            raise ConnectionFailure(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window -= length
        self.recv_unacked += length
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            self._grant_connection()
            if stream is None and stream_id > self._highest_id(stream_id):
                raise ConnectionFailure(PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            if stream is not None:  # half-closed (remote): a stream error (§5.1)
                self.reset(stream_id, STREAM_CLOSED)
            stream = None  # a closed stream's DATA (a reset one's, in flight) is dropped
        else:
            stream.recv_unacked += length
            if stream.recv_unacked > self.local_stream_window:
                self.reset(stream_id, FLOW_CONTROL_ERROR)
                stream = None
        body = length - pad - (1 if flags & _PADDED else 0)
        self._data_stream = stream
        self._data_left = body
        self._pad_left = pad
        self._data_end = bool(flags & _END_STREAM)
        i = self._data_payload(data, i, n)
        return i

    def _data_payload(self, data: bytes, i: int, n: int) -> int:
        """Take what has arrived of the current DATA frame's payload (and padding)."""
        take = min(self._data_left, n - i)
        stream = self._data_stream
        if take:
            if stream is not None and not stream.too_large:
                stream.received += take
                if stream.received > self.max_stream_bytes:
                    stream.too_large = True
                    stream.chunks.clear()
                    self.events.append((EV_TOO_LARGE, stream, 0))
                elif take == n and i == 0:
                    stream.chunks.append(data)
                elif take <= _COPY_BELOW:
                    p = data
                    stream.chunks.append(p[i : i + take])  # a small copy costs less than a view
                else:
                    stream.chunks.append(memoryview(data)[i : i + take])
            self._data_left -= take
            i += take
        if self._data_left == 0:
            skip = min(self._pad_left, n - i)
            self._pad_left -= skip
            i += skip
            if self._pad_left == 0:
                self._data_stream = None
                self._grant_connection()
                if stream is not None:
                    if self._data_end:
                        self._remote_end(stream)
                    elif stream.recv_unacked >= self.local_stream_window >> 1:
                        self.out.append(_window_update(stream.id, stream.recv_unacked))
                        stream.recv_unacked = 0
        return i

    def _grant_connection(self) -> None:
        if self.recv_unacked >= self.local_connection_window >> 1:
            self.out.append(_window_update(0, self.recv_unacked))
            self.recv_window += self.recv_unacked
            self.recv_unacked = 0

    def _highest_id(self, stream_id: int) -> int:
        """The highest id of the side that opens ``stream_id``'s parity of streams."""
        if (stream_id & 1) == (0 if self.client else 1):
            return self.last_peer_stream
        return self.next_stream_id - 2

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == _HEADERS:
            self._headers(flags, stream_id, payload)
        elif kind == _CONTINUATION:
            if not self._block_stream:
                raise ConnectionFailure(PROTOCOL_ERROR, "CONTINUATION without a header block")
            self._add_fragment(payload)
            if flags & END_HEADERS:
                self._block_done()
        elif kind == SETTINGS:
            self._settings(flags, stream_id, payload)
        elif kind == PING:
            if len(payload) != 8:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "PING is 8 octets")
            if stream_id:
                raise ConnectionFailure(PROTOCOL_ERROR, "PING on a stream")
            if not flags & ACK:
                self.out.append(frame_head(8, PING, ACK, 0) + payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream_id, payload)
        elif kind == RST_STREAM:
            if len(payload) != 4:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "RST_STREAM is 4 octets")
            if stream_id == 0:
                raise ConnectionFailure(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            stream = self.streams.pop(stream_id, None)
            if stream is None:
                if stream_id > self._highest_id(stream_id):
                    raise ConnectionFailure(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
                return
            self._forget(stream)
            self.events.append((EV_RESET, stream, int.from_bytes(payload, "big")))
        elif kind == GOAWAY:
            if stream_id:
                raise ConnectionFailure(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "GOAWAY is at least 8 octets")
            self._goaway(int.from_bytes(payload[:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big"))
        elif kind == PRIORITY:
            if stream_id == 0:
                raise ConnectionFailure(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                raise StreamError(stream_id, FRAME_SIZE_ERROR, "PRIORITY is 5 octets")
        elif kind == PUSH_PROMISE:
            raise ConnectionFailure(PROTOCOL_ERROR, "PUSH_PROMISE, but push is disabled")
        # Unknown frame types are ignored (§4.1, §5.5).

    def _headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise ConnectionFailure(PROTOCOL_ERROR, "HEADERS on stream 0")
        start, end = 0, len(payload)
        if flags & _PADDED:
            if not payload:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "padded HEADERS without a pad length")
            end -= payload[0]
            start = 1
        if flags & _PRIORITY_FLAG:
            start += 5
        if start > end:
            raise ConnectionFailure(PROTOCOL_ERROR, "HEADERS padding longer than the frame")
        self._block_stream = stream_id
        self._block = []
        self._block_size = 0
        self._block_end = bool(flags & _END_STREAM)
        self._add_fragment(payload if start == 0 and end == len(payload) else payload[start:end])
        if flags & _END_HEADERS:
            self._block_done()

    def _add_fragment(self, fragment: bytes) -> None:
        self._block.append(fragment)
        self._block_size += len(fragment)
        if self._block_size > self.max_header_block:
            raise ConnectionFailure(ENHANCE_YOUR_CALM, f"a header block over {self.max_header_block} octets")

    def _block_done(self) -> None:
        stream_id, end_stream = self._block_stream, self._block_end
        block = self._block[0] if len(self._block) == 1 else b"".join(self._block)
        self._block_stream = 0
        self._block = []
        try:
            headers = self.decoder.decode(block)
        except HPACKError as exc:
            raise ConnectionFailure(COMPRESSION_ERROR, f"header block: {exc}") from None
        key = stream_id  # compiled: boxed once, for the lookup and the new stream
        stream = self.streams.get(key)
        if stream is None:
            if self.client or not stream_id & 1 or stream_id <= self.last_peer_stream:
                if stream_id <= self._highest_id(stream_id):
                    return  # a closed stream (one we reset, its frames still in flight): ignored
                raise ConnectionFailure(PROTOCOL_ERROR, f"HEADERS opening stream {stream_id}, not the peer's to open")
            self.last_peer_stream = stream_id
            if self.goaway_sent:
                return  # §6.8: streams above our GOAWAY's last id are ignored
            if self._open_peer_streams >= self.max_concurrent:
                raise StreamError(stream_id, REFUSED_STREAM, "too many concurrent streams")
            stream = Stream(key, self.peer_initial_window)
            self.streams[key] = stream
            self._open_peer_streams += 1
            stream.headers = headers
            self.events.append((EV_HEADERS, stream, 0))
        elif stream.remote_closed:
            raise StreamError(stream_id, STREAM_CLOSED, "HEADERS after the stream's end")
        elif stream.headers is None:
            stream.headers = headers
            self.events.append((EV_HEADERS, stream, 0))
        else:
            if not end_stream:
                raise StreamError(stream_id, PROTOCOL_ERROR, "trailers without END_STREAM")
            stream.trailers = headers
        if end_stream:
            self._remote_end(stream)

    def _remote_end(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            self._drop(stream)
        self.events.append((EV_END, stream, 0))

    def _settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionFailure(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6 octets")
        for at in range(0, len(payload), 6):
            key = payload[at] << 8 | payload[at + 1]
            value = int.from_bytes(payload[at + 2 : at + 6], "big")
            if key == INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise ConnectionFailure(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > _MAX_WINDOW:
                        raise ConnectionFailure(FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= MAX_FRAME_LIMIT:
                    raise ConnectionFailure(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.peer_max_frame = value
            elif key == ENABLE_PUSH:
                if value > 1 or (value == 1 and not self.client):
                    raise ConnectionFailure(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH must be 0 or 1 (0 from a server)")
            elif key == MAX_CONCURRENT_STREAMS:
                self.peer_max_concurrent = value
            # HEADER_TABLE_SIZE: our encoder keeps no dynamic table; MAX_HEADER_LIST_SIZE: advisory.
        self.out.append(_SETTINGS_ACK)
        if self.blocked:
            self._flush_blocked()

    def _window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "WINDOW_UPDATE is 4 octets")
        p = payload
        self._window_increment(stream_id, (p[0] & 0x7F) << 24 | p[1] << 16 | p[2] << 8 | p[3])  # top bit reserved

    def _window_increment(self, stream_id: int, increment: int) -> None:
        if stream_id == 0:
            if increment == 0:
                raise ConnectionFailure(PROTOCOL_ERROR, "a connection WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > _MAX_WINDOW:
                raise ConnectionFailure(FLOW_CONTROL_ERROR, "the connection window over 2^31-1")
            if self.blocked:
                self._flush_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id > self._highest_id(stream_id):
                raise ConnectionFailure(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream_id}")
            return
        if increment == 0:
            raise StreamError(stream_id, PROTOCOL_ERROR, "a stream WINDOW_UPDATE of 0")
        stream.send_window += increment
        if stream.send_window > _MAX_WINDOW:
            raise StreamError(stream_id, FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
        if stream.pending is not None:
            self._flush(stream)

    def _goaway(self, last_stream: int, code: int) -> None:
        self.goaway_received = True
        self.peer_last_stream = min(self.peer_last_stream, last_stream)
        self.events.append((EV_GOAWAY, None, code))
        if self.client:
            # Streams the server never saw: retryable elsewhere (REFUSED_STREAM, §8.7).
            for stream_id in [s for s in self.streams if s > last_stream]:
                stream = self.streams.pop(stream_id)
                self._forget(stream)
                self.events.append((EV_RESET, stream, REFUSED_STREAM))

    # --- sending -------------------------------------------------------------------

    def open_stream(self) -> Stream:
        """A new stream of ours (client side); send its headers with :meth:`send_headers`."""
        key = self.next_stream_id  # compiled: boxed once, kept as stream.key
        self.next_stream_id += 2
        stream = Stream(key, self.peer_initial_window)
        self.streams[key] = stream
        return stream

    def can_open(self) -> bool:
        """Whether a new stream may start here (client side)."""
        return (not self.closed and not self.goaway_received and self.next_stream_id < _MAX_WINDOW
                and len(self.streams) < self.peer_max_concurrent)

    def send_headers(self, stream: Stream, block: bytes, end_stream: bool = False) -> None:
        """A header block (cut into HEADERS + CONTINUATION to the peer's frame size)."""
        limit = self.peer_max_frame
        flags = END_STREAM if end_stream else 0
        if len(block) <= limit:
            self.out.append(frame_head(len(block), HEADERS, flags | END_HEADERS, stream.id) + block)
        else:
            self.out.append(frame_head(limit, HEADERS, flags, stream.id) + block[:limit])
            at = limit
            while at < len(block):
                piece = block[at : at + limit]
                at += limit
                self.out.append(frame_head(len(piece), CONTINUATION, END_HEADERS if at >= len(block) else 0,
                                           stream.id) + piece)
        if end_stream:
            self._local_end(stream)

    def send_data(self, stream: Stream, pieces: list[Any], end_stream: bool, trailers: bytes | None = None) -> None:
        """DATA from ``pieces`` (bytes-like, sent as one body), then ``trailers`` or END_STREAM.

        As much goes now as the windows allow; the rest waits for WINDOW_UPDATEs.
        """
        if stream.pending is None:
            size = 0
            for piece in pieces:
                size += len(piece)
            if size <= stream.send_window and size <= self.send_window and size <= self.peer_max_frame:
                # The common case: the whole body in one frame, now.
                stream.send_window -= size
                self.send_window -= size
                last = end_stream and trailers is None
                self.out.append(frame_head(size, DATA, END_STREAM if last else 0, stream.id))
                self.out.extend(pieces)
                if trailers is not None:
                    self.send_headers(stream, trailers, True)
                elif last:
                    self._local_end(stream)
                return
            stream.pending = deque()
        stream.pending.extend(pieces)
        stream.pending_end = end_stream
        stream.pending_trailers = trailers
        self._flush(stream)

    def send_message(self, stream: Stream, block: bytes, pieces: list[Any], size: int,
                     trailers: bytes | None) -> None:
        """A header block, then one gRPC message (5-octet prefix, then ``pieces``: ``size`` octets) as
        DATA, then ``trailers`` (a server's answer) or END_STREAM (a client's request).

        The common case, all of it fitting the windows and frames: the frame heads written
        in C (:meth:`_head_at`) and copied out, the block and pieces appended as they are.
        """
        total = size + 5
        limit = self.peer_max_frame
        n = len(block)
        if (stream.pending is None and n <= limit and total <= limit and total <= stream.send_window
                and total <= self.send_window and (trailers is None or len(trailers) <= limit)):
            stream.send_window -= total
            self.send_window -= total
            out = self.out
            p = self._scratch  # compiled: a pointer into it
            self._head_at(0, n, _HEADERS, _END_HEADERS, stream.id)
            self._head_at(9, total, _DATA, 0 if trailers is not None else _END_STREAM, stream.id)
            p[18] = 0  # the message prefix: not compressed, then its length
            p[19] = size >> 24 & 0xFF
            p[20] = size >> 16 & 0xFF
            p[21] = size >> 8 & 0xFF
            p[22] = size & 0xFF
            out.append(p[0:9])
            out.append(block)
            out.append(p[9:23])
            for piece in pieces:
                out.append(piece)
            if trailers is not None:
                self._head_at(0, len(trailers), _HEADERS, _END_STREAM | _END_HEADERS, stream.id)
                out.append(p[0:9])
                out.append(trailers)
            self._local_end(stream)
            return
        self.send_headers(stream, block)
        self.send_data(stream, [size.to_bytes(5, "big"), *pieces], True, trailers)

    def _head_at(self, at: int, length: int, kind: int, flags: int, stream_id: int) -> None:
        """Write a 9-octet frame header (§4.1) into the scratch buffer at ``at``: C stores, no
        struct pack and no boxed ints."""
        p = self._scratch  # compiled: a pointer into it
        p[at] = length >> 16 & 0xFF
        p[at + 1] = length >> 8 & 0xFF
        p[at + 2] = length & 0xFF
        p[at + 3] = kind
        p[at + 4] = flags
        p[at + 5] = stream_id >> 24 & 0xFF
        p[at + 6] = stream_id >> 16 & 0xFF
        p[at + 7] = stream_id >> 8 & 0xFF
        p[at + 8] = stream_id & 0xFF

    def _flush(self, stream: Stream) -> None:
        pending = stream.pending
        assert pending is not None
        out = self.out
        ended = False
        while pending:
            room = min(stream.send_window, self.send_window, self.peer_max_frame)
            if room <= 0:
                self.blocked[stream.key] = stream
                return
            frame: list[Any] = []
            size = 0
            while pending and size < room:
                piece = pending.popleft()
                if size + len(piece) > room:
                    view = memoryview(piece)
                    pending.appendleft(view[room - size :])
                    piece = view[: room - size]
                if len(piece):
                    frame.append(piece)
                size += len(piece)
            stream.send_window -= size
            self.send_window -= size
            ended = not pending and stream.pending_end and stream.pending_trailers is None
            out.append(frame_head(size, DATA, END_STREAM if ended else 0, stream.id))
            out.extend(frame)
        self.blocked.pop(stream.key, None)
        stream.pending = None
        if stream.pending_trailers is not None:
            trailers, stream.pending_trailers = stream.pending_trailers, None
            self.send_headers(stream, trailers, True)
        elif stream.pending_end:
            if not ended:  # nothing was left to carry END_STREAM
                out.append(frame_head(0, DATA, END_STREAM, stream.id))
            self._local_end(stream)

    def _flush_blocked(self) -> None:
        for stream in list(self.blocked.values()):
            if self.send_window <= 0:
                return
            if stream.send_window > 0:
                self._flush(stream)

    def _local_end(self, stream: Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        if self.streams.pop(stream.key, None) is not None:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        self.blocked.pop(stream.key, None)
        stream.pending = None
        if (stream.id & 1) == (0 if self.client else 1):
            self._open_peer_streams -= 1

    def reset(self, stream_id: int, code: int) -> None:
        """End a stream with RST_STREAM(code) (a stream error, or a cancelled call)."""
        if self.closed:
            return
        self.out.append(frame_head(4, RST_STREAM, 0, stream_id) + code.to_bytes(4, "big"))
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._forget(stream)
            self.events.append((EV_RESET, stream, code))

    def goaway(self, code: int = NO_ERROR, message: str = "") -> None:
        """Say no new streams will be taken; those up to the last one the peer opened go on (§6.8)."""
        if self.closed or self.goaway_sent:
            return
        self.goaway_sent = True
        payload = self.last_peer_stream.to_bytes(4, "big") + code.to_bytes(4, "big") + message.encode()[:256]
        self.out.append(frame_head(len(payload), GOAWAY, 0, 0) + payload)

    def close(self, code: int, message: str) -> None:
        """A connection error (§5.4.1): GOAWAY(code), every stream reset, nothing more."""
        if self.closed:
            return
        self.goaway_sent = False
        self.goaway(code, message)
        self.closed = True
        for stream in list(self.streams.values()):
            self._forget(stream)
            self.events.append((EV_RESET, stream, code if code != NO_ERROR else CANCEL))
        self.streams.clear()
        self.events.append((EV_CLOSED, None, code))

    def ping(self, payload: bytes = b"\0" * 8) -> None:
        self.out.append(frame_head(8, PING, 0, 0) + payload)


_SETTINGS_ACK = frame_head(0, SETTINGS, ACK, 0)


def _window_update(stream_id: int, increment: int) -> bytes:
    return frame_head(4, WINDOW_UPDATE, 0, stream_id) + increment.to_bytes(4, "big")
