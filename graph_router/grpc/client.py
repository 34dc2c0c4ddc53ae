# cython: annotation_typing=False
"""The lean gRPC client: unary calls on our own HTTP/2, for ``grpc://`` steps.

One connection per target (HTTP/2 prior knowledge, "h2c"), opened on first use and
shared by every call to it, each call one stream. A connection the server closes or
sends GOAWAY on is replaced for the next calls. What can fail:

- no connection, a lost one, a stream the server refused or never saw (GOAWAY, §8.7
  of RFC 9113): :class:`RPCError` with ``transport`` set (UNAVAILABLE), which the step
  treats as a connection failure (retried by policy, counted by the breaker). A call
  the server never saw is retried once, on a new connection, before that;
- the timeout: the stream is cancelled (RST_STREAM CANCEL) and DEADLINE_EXCEEDED
  raised; the server learns the deadline from ``grpc-timeout`` too;
- the server's own status: :class:`RPCError` with its code and message.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

from ..http2 import hpack
from ..http2.connection import CANCEL, EV_END, EV_RESET, EV_TOO_LARGE, REFUSED_STREAM, Connection, Stream
from . import wire


class RPCError(Exception):
    """A call that did not end OK."""

    def __init__(self, code: int, details: str, transport: bool = False) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.transport = transport  # no server answered: a connection-level failure


class _Refused(Exception):
    """The server did not take the stream (REFUSED_STREAM, or above a GOAWAY's last id)."""


class ClientConnection:
    """One HTTP/2 connection to a server (an asyncio protocol)."""

    def __init__(self, max_message: int) -> None:
        self.h2 = Connection(True, max_stream_bytes=max_message + 5)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self._loop = asyncio.get_running_loop()
        self._flush_soon = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        conn = self.h2
        conn.closed = True
        reason = f"connection lost: {exc}" if exc else "the server closed the connection"
        for stream in list(conn.streams.values()):
            _fail(stream, RPCError(wire.UNAVAILABLE, reason, transport=True))
        conn.streams.clear()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        """Nothing to do: what we send is bounded by the server's flow-control windows.

        The client keeps reading even then: a server that also paused its reading while
        both sides had much to write would otherwise wait on us forever.
        """

    def resume_writing(self) -> None:
        pass

    def flush(self) -> None:
        """Write what the connection has to say, at the end of this loop iteration.

        Calls made in the same iteration (a graph's fan-out, concurrent requests) share
        one write: a system call costs more than the framing of a call.
        """
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        out = self.h2.out
        if out and self.transport is not None and not self.lost:
            self.h2.out = []
            write_out(self.transport, out)

    def data_received(self, data: bytes) -> None:
        conn = self.h2
        conn.receive(data)
        events = conn.events
        if events:
            conn.events = []
            for kind, stream, code in events:
                if stream is None:
                    continue  # GOAWAY: can_open() now says no; EV_CLOSED: the streams were reset
                if kind == EV_END:
                    future = stream.user
                    if future is not None and not future.done():
                        future.set_result(stream)
                elif kind == EV_RESET:
                    if code == REFUSED_STREAM:
                        _fail(stream, _Refused())
                    elif code == CANCEL:
                        _fail(stream, RPCError(wire.CANCELLED, "the server cancelled the call"))
                    else:
                        _fail(stream, RPCError(wire.INTERNAL, f"the stream was reset (HTTP/2 error {code})"))
                elif kind == EV_TOO_LARGE:
                    _fail(stream, RPCError(wire.RESOURCE_EXHAUSTED,
                                           f"message larger than max ({conn.max_stream_bytes - 5} octets)"))
                    conn.reset(stream.id, CANCEL)
        if conn.out:
            self.flush()
        if conn.closed and self.transport is not None:
            self._flush()
            self.transport.close()

    def usable(self) -> bool:
        return not self.lost and self.h2.can_open()

    def start(self, block: bytes, parts: list[Any], size: int, future: asyncio.Future[Stream]) -> Stream:
        """A call's stream, its request written: now when it is the connection's only call,
        else at the end of this loop iteration, with the others made meanwhile."""
        conn = self.h2
        stream = conn.open_stream()
        stream.user = future
        conn.send_message(stream, block, parts, size, None)
        if len(conn.streams) > 1:
            self.flush()  # other calls are under way: those made in this pass of the loop share a write
        else:
            self._flush()  # the only call: a deferred write would only cost the loop another pass
        return stream

    def cancel(self, stream: Stream) -> None:
        """Reset the call's stream if it is still open (RST_STREAM CANCEL)."""
        conn = self.h2
        if stream.key in conn.streams:
            conn.reset(stream.id, CANCEL)
            conn.events.clear()
            self.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.h2.goaway()
            self._flush()
            self.transport.close()


def write_out(transport: asyncio.Transport, out: list[Any]) -> None:
    """Frames in one write: joined when small (one copy is cheaper than a system call per piece)."""
    if len(out) == 1:
        transport.write(out[0])
        return
    size = 0
    for piece in out:
        size += len(piece)
    if size <= 65536:
        transport.write(b"".join(out))
    else:
        transport.writelines(out)


def _fail(stream: Stream, exc: Exception) -> None:
    future = stream.user
    if future is not None and not future.done():
        future.set_exception(exc)


def _expire(future: asyncio.Future[Stream]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class Channel:
    """Calls to one ``host:port``, over one connection at a time."""

    def __init__(self, host: str, port: int, max_message: int, connect_timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.max_message = max_message
        self.connect_timeout = connect_timeout
        self.loop = asyncio.get_running_loop()
        self._conn: ClientConnection | None = None
        self._connecting: asyncio.Future[ClientConnection] | None = None
        self._heads: dict[str, bytes] = {}
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._authority = authority

    def _head(self, path: str) -> bytes:
        """The fixed part of a call's header block (RFC 9113 §8.3, gRPC's required headers)."""
        block = self._heads.get(path)
        if block is None:
            block = self._heads[path] = hpack.encode([
                (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", self._authority),
                ("content-type", wire.CONTENT_TYPE), ("te", "trailers"), ("user-agent", "graph-router"),
            ])
        return block

    async def _connection(self) -> ClientConnection:
        conn = self._conn
        if conn is not None and conn.usable():
            return conn
        if self._connecting is None:
            self._connecting = self.loop.create_future()
            try:
                made = await self._connect()
            except BaseException as exc:
                self._connecting.set_exception(exc)
                self._connecting.exception()  # retrieved: waiters get it, nobody else must
                self._connecting = None
                raise
            if conn is not None and not conn.lost and not conn.h2.streams:
                conn.close()
            self._conn = made
            self._connecting.set_result(made)
            self._connecting = None
            return made
        return await asyncio.shield(self._connecting)

    def close(self) -> None:
        """Close the connection (calls in flight on it fail as a lost connection)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def _connect(self) -> ClientConnection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, protocol = await self.loop.create_connection(
                    lambda: cast(asyncio.Protocol, ClientConnection(self.max_message)), self.host, self.port)
        except TimeoutError:
            raise RPCError(wire.UNAVAILABLE, f"failed to connect to {self._authority}: timed out",
                           transport=True) from None
        except OSError as exc:
            raise RPCError(wire.UNAVAILABLE, f"failed to connect to {self._authority}: "
                           f"{exc.strerror or exc}", transport=True) from None
        conn = cast(ClientConnection, protocol)
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    async def unary(self, path: str, parts: list[Any], size: int, metadata: list[tuple[str, str]] | None,
                    timeout: float | None) -> bytes:
        """One call: ``parts`` (bytes-like, ``size`` octets in all) are the request message.

        A call the server never saw (refused, or above a GOAWAY's last id) is made once
        more, on a new connection. One coroutine for both attempts: a level of awaiting
        costs about as much as the framing of the call.
        """
        loop = self.loop
        deadline = None if timeout is None else loop.time() + timeout
        head = self._head(path)
        retried = False
        while True:
            block = head
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise RPCError(wire.DEADLINE_EXCEEDED, "Deadline Exceeded")
                block += hpack.encode_field("grpc-timeout", wire.format_timeout(remaining))
            if metadata:
                block += hpack.encode(metadata)
            client = self._conn
            if client is None or not client.usable():
                if deadline is None:
                    client = await self._connection()
                else:
                    try:
                        async with asyncio.timeout_at(deadline):
                            client = await self._connection()
                    except TimeoutError:
                        raise RPCError(wire.DEADLINE_EXCEEDED,
                                       f"Deadline Exceeded connecting to {self._authority}") from None
            future: asyncio.Future[Stream] = loop.create_future()
            stream = client.start(block, parts, size, future)
            timer = None if deadline is None else loop.call_at(deadline, _expire, future)
            try:
                await future
            except _Refused:  # the server never saw it
                if retried:
                    raise RPCError(wire.UNAVAILABLE, "the server refused the stream", transport=True) from None
                retried = True
                continue
            except TimeoutError:
                conn = client.h2
                conn.reset(stream.id, CANCEL)
                conn.events.clear()
                client.flush()
                raise RPCError(wire.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
            except asyncio.CancelledError:
                client.cancel(stream)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            client.cancel(stream)  # answered before our request was all sent: stop sending it
            return _result(stream)


# The last header list and trailer list found to be a plain OK answer (HTTP 200, no
# grpc-encoding; grpc-status 0). HPACK's block cache hands back the same list objects
# while a server repeats its blocks, so the next answer's check is two identity tests.
_ok_headers: list[tuple[str, str]] | None = None
_ok_trailers: list[tuple[str, str]] | None = None


def _result(stream: Stream) -> bytes:
    """The message of an ended stream, or its status as RPCError."""
    global _ok_headers, _ok_trailers
    if stream.headers is _ok_headers and stream.trailers is _ok_trailers and _ok_trailers is not None:
        try:
            return wire.message(stream.chunks, stream.received, None)
        except wire.MessageError as exc:
            raise RPCError(exc.code, f"the answer is not one gRPC message: {exc}") from None
    headers = stream.headers or []
    http_status = 0
    encoding = None
    for name, value in headers:
        if name == ":status":
            http_status = int(value) if value.isdigit() else 0
        elif name == "grpc-encoding":
            encoding = value
    found = wire.status_of(stream.trailers) or wire.status_of(headers)
    if http_status != 200:
        raise RPCError(wire.http_to_code(http_status), f"the server answered HTTP {http_status}, not gRPC")
    if found is None:
        raise RPCError(wire.INTERNAL, "the answer ended without a grpc-status")
    code, text = found
    if code != wire.OK:
        raise RPCError(code, text)
    if encoding is None and not text and stream.trailers and stream.headers:
        _ok_headers, _ok_trailers = stream.headers, stream.trailers
    try:
        return wire.message(stream.chunks, stream.received, encoding)
    except wire.MessageError as exc:
        raise RPCError(exc.code, f"the answer is not one gRPC message: {exc}") from None
