# cython: annotation_typing=False
"""The lean gRPC server: unary (and server-streaming) calls on our own HTTP/2.

The asyncio glue around :class:`graph_router.http2.connection.Connection` (server
side): bytes in, events out, frames written in one write per batch (an answer at once
when no other call on its connection is in flight, else with the others that finish in
the same pass of the loop). The front (graph_router.grpc.front) gives it a handler per
method path.

Unary calls run on reused worker tasks (:class:`_Worker`), one call at a time each: an
asyncio task made per call costs about 10k instructions in Python 3.11 (the task, its
registration in asyncio's WeakSet of all tasks, its end), waking an idle worker a
fraction of that. A worker keeps its task's context between calls; what a call sets in
it (the front's raw-request context variable) it resets before it ends.

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


class _Worker:
    """A task that runs unary calls one after another (see the module's docstring).

    ``handler``/``call``: the call handed to it, until it begins; ``conn``/``stream``:
    where it answers, until it ends. ``cancelled``: its current call was cancelled (the client reset it, the connection
    was lost): the CancelledError ends that call, not the worker.
    """

    __slots__ = ("call", "cancelled", "conn", "handler", "stream", "task", "wake")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Future[None] | None = None
        self.conn: ServerConnection | None = None
        self.stream: Stream | None = None
        self.handler: Unary | None = None
        self.call: Call | None = None
        self.cancelled = False

    def cancel(self) -> None:
        """Cancel the call it runs (or was handed and has not begun)."""
        if not self.cancelled and self.task is not None:
            self.cancelled = True
            self.task.cancel()

    # The steps of LeanServer._work, as methods so that they run typed in the compiled build.
    def start(self) -> Awaitable[bytes]:
        """Begin the call handed to it: its handler's awaitable."""
        handler, call = self.handler, self.call
        assert handler is not None and call is not None
        self.handler = self.call = None
        return handler(call)

    def end(self, answer: bytes | None, exc: Exception | None) -> None:
        """The call ended, with an answer or what it raised: answered on its connection."""
        conn, stream = self.conn, self.stream
        assert conn is not None and stream is not None
        self.conn = self.stream = None
        conn._unary_end(stream, answer, exc)

    def ended_cancelled(self) -> bool:
        """The call was cancelled while it ran: it is over. True: by its own cancellation, so
        the worker goes on; False: the worker itself is cancelled."""
        conn, stream = self.conn, self.stream
        self.conn = self.stream = None
        if conn is not None and stream is not None:
            conn._finished(stream)
        return self.cancelled

    def rest(self, server: LeanServer) -> asyncio.Future[None] | None:
        """Between calls: a spent cancellation taken back (the task is not being cancelled);
        then the future to wait on while idle, or None: the worker stops."""
        if self.cancelled:
            self.cancelled = False
            assert self.task is not None
            self.task.uncancel()
        idle = server.idle
        if server.stopping or len(idle) >= _MAX_IDLE:
            return None
        self.wake = wake = server.loop.create_future()
        idle.append(self)
        return wake

    def woken_cancelled(self, server: LeanServer) -> bool:
        """Cancelled while idle, or before the call handed to it began. True: that call's
        cancellation (the call is dropped: whoever cancelled it counted it off); False: the
        worker itself is cancelled (stop(), or the loop's end)."""
        if not self.cancelled:
            if self in server.idle:
                server.idle.remove(self)
            return False
        self.conn = self.stream = None
        self.handler = self.call = None
        return True


# Idle workers kept per server; past it a worker whose call ends stops (a burst's extras).
_MAX_IDLE = 64


class ServerConnection:
    """One client connection (an asyncio protocol)."""

    def __init__(self, server: LeanServer) -> None:
        self._server = server
        self._loop = server.loop
        self.h2 = Connection(False, max_concurrent=server.max_concurrent, max_stream_bytes=server.max_message + 5)
        self.transport: asyncio.Transport | None = None
        self._tasks: dict[Stream, _Worker | asyncio.Task[None]] = {}  # the calls in flight, by stream
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
        for user in list(tasks.values()):
            user.cancel()  # a call that has not begun never runs its finally: accounted for here
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
                    user = stream.user
                    if user is not None:
                        stream.user = None
                        user.cancel()  # its worker's, or its own task's (a streaming call)
                        self._finished(stream)  # (the call may not have begun: then it never will)
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
        if stream.too_large or stream.key not in self.h2.streams:
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
        user: _Worker | asyncio.Task[None]
        if unary is not None:
            idle = server.idle
            if idle:
                worker = idle.pop()  # the most recently used: its memory is the warmest
                worker.conn, worker.stream, worker.handler, worker.call = self, stream, unary, call
                wake = worker.wake
                assert wake is not None
                wake.set_result(None)
            else:
                worker = _Worker()
                worker.conn, worker.stream, worker.handler, worker.call = self, stream, unary, call
                worker.task = self._loop.create_task(server._work(worker))
            user = worker
        else:
            assert streaming is not None
            user = self._loop.create_task(self._streaming(stream, streaming, call))
        stream.user = user
        self._tasks[stream] = user
        server.in_flight += 1

    def _finished(self, stream: Stream) -> None:
        """A call is over (its task ends, or is cancelled): it is no longer in flight.

        Called from the task's own ``finally`` (no done callback: that costs a loop
        callback per call), and where a task is cancelled, for one that never began.
        """
        if self._tasks.pop(stream, None) is not None:
            self._server.in_flight -= 1

    def _unary_end(self, stream: Stream, answer: bytes | None, exc: Exception | None) -> None:
        """A unary call's end: its answer, or the status of what it raised; then the write."""
        try:
            if exc is None:
                assert answer is not None
                stream.user = None
                conn = self.h2
                if conn.closed or stream.key not in conn.streams:
                    return
                conn.send_message(stream, RESPONSE_HEADERS, [answer], len(answer), TRAILERS_OK)
            elif isinstance(exc, Abort):
                self._status(stream, exc.code, exc.message)
            else:
                logger.error("gRPC method failed", exc_info=exc)
                self._status(stream, wire.INTERNAL, "the router failed to answer (see its log)")
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
                if conn.closed or stream.key not in conn.streams:
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
        if conn.closed or stream.key not in conn.streams:
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
        if conn.closed or stream.key not in conn.streams:
            return
        conn.send_headers(stream, wire.status_block(code, text, True), True)
        if not stream.remote_closed:  # answered before the request ended: it need not go on (§8.1)
            conn.reset(stream.id, NO_ERROR)

    def goaway(self) -> None:
        self.h2.goaway()
        self._write()

    def abort(self) -> None:
        for user in list(self._tasks.values()):
            user.cancel()
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
        self.idle: list[_Worker] = []  # workers waiting for a call
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: a free port; SO_REUSEPORT, for --workers); returns the port."""
        from ..httpserver import _bind

        sockets = _bind(host, port, True)
        for sock in sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._servers.append(await self.loop.create_server(self._protocol, sock=sock, backlog=2048))
        return int(sockets[0].getsockname()[1])

    async def _work(self, worker: _Worker) -> None:
        """A worker's life: the call it was made for, then each call handed to it while idle."""
        while True:
            if worker.handler is not None:
                try:
                    answer = await worker.start()  # awaited here, not in a coroutine per call
                except asyncio.CancelledError:
                    if not worker.ended_cancelled():
                        raise
                except Exception as exc:
                    worker.end(None, exc)
                else:
                    worker.end(answer, None)
            wake = worker.rest(self)
            if wake is None:
                return
            try:
                await wake
            except asyncio.CancelledError:
                if not worker.woken_cancelled(self):
                    raise

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
        idle = self.idle[:]
        self.idle.clear()
        for worker in idle:
            if worker.task is not None:
                worker.task.cancel()
