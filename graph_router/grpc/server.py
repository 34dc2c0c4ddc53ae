# cython: annotation_typing=False
"""The lean gRPC server: unary (and server-streaming) calls on our own HTTP/2.

The asyncio glue around :class:`graph_router.http2.connection.Connection` (server
side): bytes in, events out, one task per call, frames written in one write per batch
(an answer at once when no other call on its connection is in flight, else with the
others that finish in the same pass of the loop). The front (graph_router.grpc.front)
gives it a handler per method path.

- A call's request arrives whole (unary): the handler gets its message as bytes, its
  metadata and its deadline (``grpc-timeout``), and answers bytes or raises
  :class:`Abort`; an unknown path is UNIMPLEMENTED, any other exception INTERNAL.
- A streaming handler yields messages; the call ends when it returns or the client
  cancels (RST_STREAM), which cancels the handler as a lost connection does.
- ``stop(grace)`` sends GOAWAY (RFC 9113 §6.8): calls already started finish (up to
  ``grace`` seconds, then they are cancelled), new ones go elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from ..http2.connection import EV_END, EV_RESET, EV_TOO_LARGE, NO_ERROR, Connection, Stream
from . import wire
from .client import write_out
from .wire import RESPONSE_HEADERS, TRAILERS_OK

logger = logging.getLogger(__name__)


class Abort(Exception):
    """A handler's non-OK answer: the call ends with this status and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Call:
    """What a handler knows of its call."""

    __slots__ = ("deadline", "loop", "metadata", "request")

    def __init__(self, request: bytes, metadata: list[tuple[str, str]], deadline: float | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.metadata = metadata  # the client's text metadata: pseudo-headers, gRPC's own and -bin left out
        self.deadline = deadline  # loop time, from grpc-timeout
        self.loop = loop

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - self.loop.time())


Unary = Callable[[Call], Awaitable[bytes]]
Streaming = Callable[[Call], AsyncIterator[bytes]]

# Headers that are the transport's, not the caller's metadata.
_TRANSPORT = frozenset({"content-type", "te", "user-agent", "grpc-timeout", "grpc-encoding",
                        "grpc-accept-encoding", "grpc-message-type", "connection"})


_Parsed = tuple[str | None, str, float | None, str | None, list[tuple[str, str]]]


def _parse(headers: list[tuple[str, str]] | None) -> _Parsed:
    """A request's header block: its method path, content type, grpc-timeout in seconds,
    grpc-encoding and text metadata."""
    method: str | None = None
    seconds: float | None = None
    encoding: str | None = None
    content_type = ""
    metadata: list[tuple[str, str]] = []
    for name, value in headers or ():
        if name[0] == ":":
            if name == ":path":
                method = value
        elif name == "content-type":
            content_type = value
        elif name == "grpc-timeout":
            seconds = wire.parse_timeout(value)
        elif name == "grpc-encoding":
            encoding = value
        elif name not in _TRANSPORT and not name.endswith("-bin"):  # binary metadata: not text headers
            metadata.append((name, value))
    return method, content_type, seconds, encoding, metadata


class ServerConnection:
    """One client connection (an asyncio protocol)."""

    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._loop = server.loop
        self.h2 = Connection(False, max_concurrent=server.max_concurrent, max_stream_bytes=server.max_message + 5)
        self.transport: asyncio.Transport | None = None
        self._tasks: dict[Stream, asyncio.Task[None]] = {}  # the calls in flight, by stream
        self._write_soon = False
        self._last_headers: list[tuple[str, str]] | None = None  # the last call's header list, and
        self._last_parsed: _Parsed = (None, "", None, None, [])  # what _parse made of it

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        if self._server.stopping:
            self.h2.goaway()
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self.h2.closed = True
        tasks = self._tasks
        for task in list(tasks.values()):
            task.cancel()  # a task that has not begun never runs its finally: accounted for here
        self._server.in_flight -= len(tasks)
        tasks.clear()

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        """The peer reads slower than we write: stop reading from it until it catches up."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        conn = self.h2
        conn.receive(data)
        events = conn.events
        if events:
            conn.events = []
            for kind, stream, _ in events:
                if kind == EV_END:
                    assert stream is not None
                    self._call(stream)
                elif kind == EV_RESET or kind == EV_TOO_LARGE:
                    assert stream is not None
                    task = stream.user
                    if task is not None:
                        stream.user = None
                        task.cancel()
                        self._finished(stream)  # (the task may not have begun: then it never will)
                    if kind == EV_TOO_LARGE:
                        self._status(stream, wire.RESOURCE_EXHAUSTED,
                                     f"the request is over the {self._server.max_message}-octet limit")
                        conn.reset(stream.id, NO_ERROR)
        if conn.closed and self.transport is not None:
            self._write_now()
            self.transport.close()
        elif conn.out:
            self._write()

    def _write(self) -> None:
        """Write at the end of this loop iteration: answers finished together share one write."""
        if not self._write_soon:
            self._write_soon = True
            self._loop.call_soon(self._write_now)

    def _write_now(self) -> None:
        """Write what the connection has to say (and close it after GOAWAY once its streams are done)."""
        self._write_soon = False
        out = self.h2.out
        if out and self.transport is not None:
            self.h2.out = []
            write_out(self.transport, out)
        if self.h2.goaway_sent and not self.h2.streams and self.transport is not None:
            self.transport.close()

    def _call(self, stream: Stream) -> None:
        """A request is complete: find its method and start it."""
        if stream.too_large or stream.id not in self.h2.streams:
            return  # already answered (RESOURCE_EXHAUSTED) or reset
        server = self._server
        headers = stream.headers
        if headers is not None and headers is self._last_headers:
            # The same decoded block as the last call's (HPACK's block cache hands back the
            # same list for the same bytes: a client repeats its block every call).
            method, content_type, seconds, encoding, metadata = self._last_parsed
        else:
            method, content_type, seconds, encoding, metadata = _parse(headers)
            self._last_headers = headers
            self._last_parsed = (method, content_type, seconds, encoding, metadata)
        if not content_type.startswith(wire.CONTENT_TYPE):
            self._status(stream, wire.UNKNOWN, f"content-type {content_type!r} is not gRPC")
            return
        deadline = None if seconds is None else self._loop.time() + seconds
        if server.in_flight >= server.max_in_flight:
            self._status(stream, wire.RESOURCE_EXHAUSTED, f"over {server.max_in_flight} calls in flight")
            return
        unary = server.unary.get(method or "")
        streaming = None if unary is not None else server.streaming.get(method or "")
        if unary is None and streaming is None:
            self._status(stream, wire.UNIMPLEMENTED, f"unknown method {method}")
            return
        try:
            request = wire.message(stream.chunks, stream.received, encoding)
        except wire.MessageError as exc:
            self._status(stream, exc.code, str(exc))
            return
        stream.chunks = []
        call = Call(request, metadata[:], deadline, self._loop)  # a copy: the parse is shared
        if unary is not None:
            task = self._loop.create_task(self._unary(stream, unary, call))
        else:
            assert streaming is not None
            task = self._loop.create_task(self._streaming(stream, streaming, call))
        stream.user = task
        self._tasks[stream] = task
        server.in_flight += 1

    def _finished(self, stream: Stream) -> None:
        """A call is over (its task ends, or is cancelled): it is no longer in flight.

        Called from the task's own ``finally`` (no done callback: that costs a loop
        callback per call), and where a task is cancelled, for one that never began.
        """
        if self._tasks.pop(stream, None) is not None:
            self._server.in_flight -= 1

    async def _unary(self, stream: Stream, handler: Unary, call: Call) -> None:
        try:
            answer = await handler(call)
        except Abort as exc:
            self._status(stream, exc.code, exc.message)
        except Exception:
            logger.exception("gRPC method failed")
            self._status(stream, wire.INTERNAL, "the router failed to answer (see its log)")
        else:
            stream.user = None
            conn = self.h2
            if conn.closed or stream.id not in conn.streams:
                return
            conn.send_message(stream, RESPONSE_HEADERS, [answer], len(answer), TRAILERS_OK)
        finally:
            self._finished(stream)
        if self._tasks:
            self._write()  # other calls may answer in this pass of the loop: one write for them all
        else:
            self._write_now()  # none can: a deferred write would only cost the loop another pass

    async def _streaming(self, stream: Stream, handler: Streaming, call: Call) -> None:
        try:
            await self._stream_out(stream, handler, call)
        finally:
            self._finished(stream)

    async def _stream_out(self, stream: Stream, handler: Streaming, call: Call) -> None:
        conn = self.h2
        started = False
        try:
            async for message in handler(call):
                if conn.closed or stream.id not in conn.streams:
                    return
                if not started:
                    conn.send_headers(stream, wire.RESPONSE_HEADERS)
                    started = True
                conn.send_data(stream, [wire.prefix(len(message)), message], False)
                self._write()
        except Abort as exc:
            if not started:
                self._status(stream, exc.code, exc.message)
                self._write()
                return
            code, text = exc.code, exc.message
        except Exception:
            logger.exception("gRPC method failed")
            code, text = wire.INTERNAL, "the router failed to answer (see its log)"
        else:
            code, text = wire.OK, ""
        if conn.closed or stream.id not in conn.streams:
            return
        if not started:
            conn.send_headers(stream, wire.status_block(code, text, True), True)
        else:
            conn.send_data(stream, [], True, wire.status_block(code, text, False))
        self._write()

    def _status(self, stream: Stream, code: int, text: str) -> None:
        """A trailers-only answer (no message): the status in the one header block."""
        stream.user = None
        conn = self.h2
        if conn.closed or stream.id not in conn.streams:
            return
        conn.send_headers(stream, wire.status_block(code, text, True), True)
        if not stream.remote_closed:  # answered before the request ended: it need not go on (§8.1)
            conn.reset(stream.id, NO_ERROR)

    def goaway(self) -> None:
        self.h2.goaway()
        self._write()

    def abort(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self.transport is not None:
            self.transport.close()


class LeanServer:
    """Listening sockets and their connections."""

    def __init__(self, unary: dict[str, Unary], streaming: dict[str, Streaming], *,
                 max_message: int = 64 << 20, max_concurrent: int = 1000, max_in_flight: int = 4096) -> None:
        self.unary = unary
        self.streaming = streaming
        self.max_message = max_message
        self.max_concurrent = max_concurrent  # streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS)
        self.max_in_flight = max_in_flight  # calls across connections; past it, RESOURCE_EXHAUSTED
        self.in_flight = 0
        self.loop = asyncio.get_running_loop()
        self.connections: set[ServerConnection] = set()
        self.stopping = False
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: a free port; SO_REUSEPORT, for --workers); returns the port."""
        from ..httpserver import _bind

        sockets = _bind(host, port, True)
        for sock in sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._servers.append(await self.loop.create_server(self._protocol, sock=sock, backlog=2048))
        return int(sockets[0].getsockname()[1])

    def _protocol(self) -> asyncio.Protocol:
        return cast(asyncio.Protocol, ServerConnection(self))

    async def stop(self, grace: float | None) -> None:
        """GOAWAY to every connection; calls in flight get ``grace`` seconds (None: no limit)."""
        self.stopping = True
        for server in self._servers:
            server.close()
        self._servers = []
        for conn in list(self.connections):
            conn.goaway()
        deadline = None if grace is None else self.loop.time() + grace
        while self.connections and (deadline is None or self.loop.time() < deadline):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
