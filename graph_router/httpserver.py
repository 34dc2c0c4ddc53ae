"""A lean HTTP/1.1 server on asyncio protocols: the router's listening side.

Why not aiohttp's server: per request it builds a request object, a multidict of
headers, a payload stream and a response object, which cost about as much CPU as
the whole step call. The router needs less: the body as bytes, the headers as pairs,
one answer written in one ``write``. This module is the asyncio glue: the framing
rules for requests live in the sans-IO :mod:`graph_router.http1.request_reader`; here
are the connection-level rules the router promises:

- ``read_timeout`` (KServe's serverRead): a request must arrive whole, headers and
  body, within it from its first byte; slow clients get 408.
- ``idle_timeout`` (serverIdle): kept-alive connections with no request are closed.
- Answers go out in request order (RFC 9112 §9.3.2): a rejection (400, 408, 413,
  414, 431, 503) waits for every earlier answer, then ends the connection. Other
  connections are not disturbed.
- Answer framing: no content on HEAD, 1xx, 204 and 304 answers; no chunked coding
  and no ``100 Continue`` for HTTP/1.0 clients (a streamed answer is close-delimited).
- A client that disconnects cancels its handler (and so every step call it started),
  and its buffers are freed at once.
- ``shutdown`` stops accepting, closes idle connections, lets in-flight requests
  finish (up to a timeout) and closes each connection after its last answer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol, cast

import orjson

from .http1.request_reader import BufferBudget, ReaderLimits, Rejection, Request, RequestReader
from .http1.rules import body_allowed

if TYPE_CHECKING:
    from .httpclient import Ready

logger = logging.getLogger(__name__)

__all__ = ["HTTPServer", "Response", "ServerLimits", "StreamingResponse", "error_body", "status_line"]

_NEVER = float("inf")


class Response:
    """A whole answer."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", content_type: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:80]!r}, {self.content_type!r})"


class TLSContexts(Protocol):
    """Where an HTTPS listener gets the context for each new connection (see security.tls)."""

    def current(self) -> ssl.SSLContext: ...


class ChunkSource(Protocol):
    """What a streaming answer reads from; ``aclose`` is called however the answer ends."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class StreamingResponse:
    """An answer sent as it is produced (chunked transfer encoding).

    ``first``: content already in hand, written in one write with the head.
    ``after_head``: called once the head has been written (or the client left before
    it could be): the bookkeeping that need not delay the first byte. (A plain class,
    made on every streamed answer before its first byte: a dataclass's __init__ stays
    interpreted Python in the compiled build.)
    """

    __slots__ = ("after_head", "chunks", "content_type", "first", "headers", "status")

    def __init__(self, status: int, chunks: ChunkSource, content_type: str | None = None,
                 headers: list[tuple[str, str]] | None = None, first: bytes | None = None) -> None:
        self.status = status
        self.chunks = chunks
        self.content_type = content_type
        self.headers = headers
        self.first = first
        self.after_head: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"StreamingResponse({self.status}, {self.content_type!r})"


Handler = Callable[[Request], Awaitable[Response | StreamingResponse]]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Connection-level limits and timeouts, in bytes and seconds."""

    read_timeout: float = 60.0
    write_timeout: float = 60.0
    idle_timeout: float = 180.0
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    max_pipelined: int = 16
    # Request bodies buffered across all connections at once; past it, 503 + Retry-After.
    max_buffered_bytes: int = 512 * 1024 * 1024


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("latin-1")
    except ValueError:
        return b"Unknown"


_STATUS_LINES: dict[int, bytes] = {}
_wall_clock = time.time  # looked up once: the Date header asks on every answer


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, _reason(status))
        if 100 <= status <= 599:
            _STATUS_LINES[status] = line
    return line


class _DateHeader:
    """``Date:`` header bytes, formatted at most once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def get(self) -> bytes:
        now = int(_wall_clock())
        if now != self._second:
            self._second = now
            self._value = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._value


_DATE = _DateHeader()
# Content-Type lines by type: an answer's type is one of a few (JSON, an event stream...);
# bounded, as the types come from the services.
_CONTENT_TYPE_LINES: dict[str, bytes] = {}


def error_body(error: str, cause: str) -> bytes:
    return orjson.dumps({"error": error, "cause": cause})


class ServerConnection:
    """One client connection: the asyncio glue around a :class:`RequestReader`.

    Bytes go to the reader; its events (requests and rejections) are answered strictly
    in order by one task per connection (RFC 9112 §9.3.2), so an error for a later
    pipelined request is written only after every earlier answer is complete.
    """

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._loop = server.loop
        limits = server.limits
        self._reader = RequestReader(ReaderLimits(limits.max_header_bytes, limits.max_body_bytes), server.budget)
        self.transport: asyncio.Transport | None = None
        # The reader's events are the queue of what is to be answered, in stream order.
        self._queue: deque[Request | Rejection] = self._reader.events
        # One task per connection, started with its first request and kept for its life:
        # waking it for the next request costs less than creating a task per request.
        self._task: asyncio.Task[None] | None = None
        self._more: asyncio.Future[None] | None = None
        self._handling = False
        self._reading = False
        self._read_paused = False  # by _take_events: too many requests pipelined ahead
        self._lingering = False
        # One deadline per connection, checked by the server's sweeper twice a second:
        # cheaper than creating and cancelling a timer handle for every request.
        self.deadline = _NEVER
        self.handler_deadline = _NEVER
        self._closing = False
        self._closed = False
        self._writable: asyncio.Future[None] | None = None
        # A streamed answer's head went out from the step's head callback (stream_head):
        # the answer, when the handler returns it, continues after it.
        self._head_sent = False
        self._head_last = False

    # --- connection lifecycle -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self._arm(self._server.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Free everything the connection held now, not when the cycle collector runs."""
        self._closed = True
        self._server.connections.discard(self)
        self._disarm()
        task = self._task
        self._task = None
        if task is not None and not task.done():
            task.cancel()  # the client left: stop the work it started
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("client disconnected"))
        self._reader.close()  # gives back what queued requests held, and empties the queue

    def eof_received(self) -> bool:
        """The client closed its side: treat it as gone, as Go's net/http and nginx do.

        The work it started is cancelled (connection_lost follows); an HTTP client that
        only half-closes cannot be told apart from one that left.
        """
        return False

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    async def drain(self) -> None:
        """Wait while the client is slower than we write (streaming answers)."""
        if self._writable is not None and not self._writable.done():
            await self._writable

    @property
    def busy(self) -> bool:
        return self._handling or bool(self._queue) or self._reader.in_message

    def close_when_idle(self, grace: float) -> None:
        """Shutdown: close after the answer in progress, or after ``grace`` seconds idle.

        An idle connection may have a request on the wire already (the client sent it as
        the listener closed): it still gets ``grace`` to arrive, and its answer.
        """
        self._closing = True
        if not self.busy:
            self._arm(grace)

    def _close(self) -> None:
        if not self._closed and self.transport is not None:
            self._closed = True
            self.transport.close()

    def abort(self) -> None:
        """Close the connection without an answer (serverWrite exceeded)."""
        self._closing = True
        self._close()

    # --- timers ---------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self.deadline = self._loop.time() + seconds

    def _disarm(self) -> None:
        self.deadline = _NEVER

    def check_deadlines(self, now: float) -> None:
        """Called by the sweeper: enforce the read/idle deadline and the handler's."""
        if now >= self.handler_deadline:
            self.handler_deadline = _NEVER
            logger.warning("an answer outlived the write timeout; closing the connection")
            self.abort()
            if self._task is not None:
                self._task.cancel()
        if now >= self.deadline:
            self.deadline = _NEVER
            self._on_timeout()

    def _on_timeout(self) -> None:
        if self._lingering:
            self._close()
        elif self._reader.timed_out():
            self._reading = False
            self._take_events()  # the 408, answered after what is ahead of it
        elif not self._handling and not self._queue:
            self._close()

    # --- reading --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._closed or self._lingering:
            return  # after an error answer, what the client still sends is discarded
        reader = self._reader
        queued = len(self._queue)
        reader.feed(data)
        if len(self._queue) > queued:  # new requests (or a rejection) completed
            self._take_events(True)
        if reader.in_message:
            if not self._reading:
                # serverRead: the request must arrive whole within it from its first byte.
                self._reading = True
                self._arm(self._server.limits.read_timeout)
            if reader.continue_wanted and not self._handling and not self._queue:
                self._send_continue()

    def _take_events(self, now: bool = False) -> None:
        """The reader queued requests or a rejection: stop the read clock, wake the answering task.

        ``now`` (from ``data_received``): the waiting task takes its next step here, in the
        callback that read the request, instead of one event-loop pass later.
        """
        self._reading = False
        self._disarm()
        if len(self._queue) > self._server.limits.max_pipelined and self.transport is not None:
            self.transport.pause_reading()
            self._read_paused = True
        more = self._more
        if self._task is None:
            self._task = self._loop.create_task(self._serve_queue())
        elif more is not None and not more.done():
            if now:
                _wake_now(more, self._loop)
            else:
                more.set_result(None)

    def _send_continue(self) -> None:
        """``100 Continue`` for the request being read, only when no answer is ahead of it."""
        self._reader.continue_wanted = False
        if self.transport is not None and not self._closed:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # --- answering ------------------------------------------------------------------
    async def _serve_queue(self) -> None:
        """Answer queued events in order; between requests, wait for the next one."""
        queue = self._queue
        while not self._closed:
            if not queue:
                if not self._between_requests():
                    return
                self._more = self._loop.create_future()
                try:
                    await self._more
                finally:
                    self._more = None
                continue
            event = queue.popleft()
            if isinstance(event, Rejection):
                self._write_rejection(event)
                return
            await self._answer(event)

    def _between_requests(self) -> bool:
        """Nothing queued: close a finished connection, else wait idle. False: stop serving."""
        reader = self._reader
        if reader.stopped and not reader.events:
            self._close()  # the last request (Connection: close) has its answer
            return False
        if self._closing and not reader.in_message:
            self._close()
            return False
        if reader.in_message:
            if reader.continue_wanted:
                self._send_continue()
        else:
            self._arm(self._server.limits.idle_timeout)
        return True

    async def _answer(self, request: Request) -> None:
        """One request, from its handler to its answer's end (its bookkeeping in ``finally``)."""
        self._handling = True
        try:
            if (self._read_paused and self.transport is not None
                    and len(self._queue) <= self._server.limits.max_pipelined):
                self._read_paused = False
                self.transport.resume_reading()
            self.handler_deadline = self._loop.time() + self._server.limits.write_timeout
            self._head_sent = False
            request.connection = self
            try:
                answer = await self._server.handler(request)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("unexpected error while answering %s %s", request.method, request.path)
                answer = Response(500, error_body("Internal Server Error", "internal error in the router"),
                                  "application/json")
            finally:
                self.handler_deadline = _NEVER
            if self._closed:
                if isinstance(answer, StreamingResponse):
                    after = answer.after_head
                    answer.after_head = None
                    try:
                        if after is not None:
                            after()
                    finally:
                        await answer.chunks.aclose()
                return
            last = self._head_last if self._head_sent else self._last(request)  # as the head said
            if last:
                self._closing = True
            if isinstance(answer, StreamingResponse):
                await self._write_stream(answer, request, last)
            elif self._head_sent:
                # A streamed head is out, and the handler ended in another answer (it failed after
                # the step's head arrived): the status cannot change any more; cut the stream.
                logger.warning("answer to %s %s failed after its head was sent: %s", request.method, request.path,
                               answer.status)
                self._closing = True
                self._close()
            else:
                self._write(answer, request, last)
        finally:
            self._handling = False
            if request.held:
                self._server.budget.used -= request.held
                request.held = 0

    def _last(self, request: Request) -> bool:
        """Whether this answer ends the connection (Connection: close in its head)."""
        return not request.keep_alive or ((self._closing or self._server.draining) and not self._queue)

    def stream_head(self, request: Request, status: int, content_type: str, headers: list[tuple[str, str]],
                    source: Ready) -> bool:
        """Write a streamed answer's head (and its first bytes) now, from the step's head callback.

        Time to first byte: the head goes out in the same event-loop callback that read the
        service's head, before the handler's coroutines resume. The handler's
        StreamingResponse then continues after it (``_write_stream`` skips the head). Only
        for a chunked HTTP/1.1 answer with content; False: nothing written, the usual path
        writes it. ``source``: the answer's bytes; those already in (``ready()``) go with the head.
        """
        transport = self.transport
        if (transport is None or self._closed or self._head_sent or request.head_only or request.http10
                or not body_allowed(status)):
            return False
        last = self._head_last = self._last(request)
        parts = self._head(status, content_type, headers, request, last)
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        first = source.ready()
        if first:
            parts.append(b"%x\r\n%b\r\n" % (len(first), first))
        transport.write(b"".join(parts))
        self._head_sent = True
        return True

    def _head(self, status: int, content_type: str | None, headers: list[tuple[str, str]] | None,
              request: Request, last: bool) -> list[bytes]:
        parts = [status_line(status), _DATE.get()]
        if content_type is not None:
            line = _CONTENT_TYPE_LINES.get(content_type)
            if line is None:
                line = b"Content-Type: " + content_type.encode("latin-1") + b"\r\n"
                if len(_CONTENT_TYPE_LINES) < 64:
                    _CONTENT_TYPE_LINES[content_type] = line
            parts.append(line)
        if headers:
            for k, v in headers:
                if k == "Cache-Control" and v == "no-cache":  # every streamed answer's
                    parts.append(b"Cache-Control: no-cache\r\n")
                else:
                    parts.append(f"{k}: {v}\r\n".encode("latin-1", "replace"))
        if last:
            parts.append(b"Connection: close\r\n")
        elif request.http10:
            parts.append(b"Connection: keep-alive\r\n")  # HTTP/1.0 persistence is opt-in
        return parts

    def _write(self, answer: Response, request: Request, last: bool) -> None:
        """A whole answer in one write. 204 and 304 carry no Content-Length and no content
        (RFC 9110 §8.6, §6.4.1); HEAD gets the length GET would have, and no content (§9.3.2)."""
        assert self.transport is not None
        status = answer.status
        parts = self._head(status, answer.content_type, answer.headers, request, last)
        if status >= 200 and status != 204 and status != 304:  # rules.body_allowed, inlined
            parts.append(f"Content-Length: {len(answer.body)}\r\n\r\n".encode())
            if not request.head_only:
                parts.append(answer.body)
        else:
            parts.append(b"\r\n")
        self.transport.write(b"".join(parts))
        if last:
            self._close()

    async def _write_stream(self, answer: StreamingResponse, request: Request, last: bool) -> None:
        """Chunked for HTTP/1.1; for HTTP/1.0 (no chunked coding, RFC 9112 §7.1) the content
        is delimited by closing the connection. HEAD, 204 and 304: the head only."""
        assert self.transport is not None
        transport = self.transport
        no_content = request.head_only or not body_allowed(answer.status)
        http10 = request.http10
        if http10 and not no_content:
            last = self._closing = True
        if self._head_sent:  # written already (stream_head), with the first bytes
            self._head_sent = False
        else:
            parts = self._head(answer.status, answer.content_type, answer.headers, request, last)
            if no_content or http10:
                parts.append(b"\r\n")
            else:
                parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
            first = answer.first
            if first is not None and not no_content:  # arrived with the service's head: one write for both
                answer.first = None
                parts.append(first if http10 else b"%x\r\n%b\r\n" % (len(first), first))
            transport.write(b"".join(parts))
        try:
            after = answer.after_head
            if after is not None:  # the first byte is out: now the rest of the bookkeeping
                answer.after_head = None
                after()
            if no_content:
                return
            async for chunk in answer.chunks:
                if self._closed:
                    return
                if chunk:
                    transport.write(chunk if http10 else b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    writable = self._writable  # drain(), inline: once per chunk
                    if writable is not None and not writable.done():
                        await writable
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("streamed answer ended early: %s", exc)
            self._closing = True
            self._close()  # without the terminating chunk, the client sees a cut stream
            return
        finally:
            await answer.chunks.aclose()
        if not self._closed:
            if not http10:
                transport.write(b"0\r\n\r\n")
            if last:
                self._close()

    def _write_rejection(self, rejection: Rejection) -> None:
        """The error answer for a request that did not run; then the connection ends."""
        self._closing = True
        if self.transport is not None and not self._closed:
            body = error_body(rejection.error, rejection.cause)
            parts = [status_line(rejection.status), _DATE.get(),
                     b"Content-Type: application/json\r\nConnection: close\r\n"]
            if rejection.headers:
                for k, v in rejection.headers:
                    parts.append(f"{k}: {v}\r\n".encode("latin-1", "replace"))
            parts.append(b"Content-Length: %d\r\n\r\n" % len(body))
            if not rejection.head_only:
                parts.append(body)
            self.transport.write(b"".join(parts))
        self._linger()

    def _linger(self) -> None:
        """Half-close and discard what the client still sends for a moment, then close.

        Closing at once with unread bytes would make the kernel reset the connection,
        and the client could lose the error answer we just wrote.
        """
        if self.transport is None or self._closed:
            return
        self._lingering = True
        if self.transport.can_write_eof():
            self._read_paused = False
            self.transport.resume_reading()
            self.transport.write_eof()
            self.deadline = self._loop.time() + 2.0
        else:
            self._close()


# asyncio.current_task is interpreted Python before 3.12 (a call into the bytecode loop, on
# the first byte's path); there it reads this dict of running tasks by loop, which the C
# tasks keep. From 3.12 it is C, and is called.
_RUNNING: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = (
    getattr(asyncio.tasks, "_current_tasks", None) if sys.version_info < (3, 12) else None
)


def _wake_now(waiter: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
    """Resolve ``waiter`` and run the one task waiting on it now, not from the loop's queue.

    Time to first byte: a kept-alive connection's task waits on ``waiter`` between
    requests; resolving it the usual way queues the task's wake-up for the next pass of
    the event loop. Here the task's own wake-up callback is taken off the future and
    called at once, in the task's context: asyncio's task then steps as it would have
    (it enters itself as the loop's current task, so this is only done outside any task).
    """
    callbacks = waiter._callbacks  # [(callback, context)]
    running = _RUNNING
    current = asyncio.current_task(loop) if running is None else running.get(loop)
    if callbacks is None or len(callbacks) != 1 or current is not None:
        waiter.set_result(None)
        return
    wakeup, context = callbacks[0]
    waiter.remove_done_callback(wakeup)
    waiter.set_result(None)
    context.run(wakeup, waiter)


class HTTPServer:
    """Listening socket(s) plus the set of open connections, for orderly shutdown.

    The server accepts connections itself rather than through ``loop.create_server``:
    under load, uvloop's listener took about one connection per loop iteration, so a
    burst of new connections sat in the kernel's accept queue for seconds while the
    accepted ones were served (at 1,000 connections, wrk saw p99 near 1 s and
    timeouts). Here every readiness of the listener accepts up to ``ACCEPT_BATCH``
    connections; the queue drains within a few iterations whatever the load.
    """

    ACCEPT_BATCH = 128  # bounded, so a connection flood cannot take a whole iteration
    BACKLOG = 2048

    def __init__(self, handler: Handler, limits: ServerLimits | None = None, tls: TLSContexts | None = None) -> None:
        self.handler = handler
        # HTTPS when set: each new connection takes tls.current() (rotated certificates).
        self.tls = tls
        self.limits = limits or ServerLimits()
        self.budget = BufferBudget(self.limits.max_buffered_bytes)
        self.loop = asyncio.get_running_loop()
        self.connections: set[ServerConnection] = set()
        self.draining = False
        self._listeners: list[socket.socket] = []
        self._adopting: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def _new_connection(self) -> asyncio.Protocol:
        # Duck-typed: a compiled ServerConnection is an extension type, not a Protocol subclass.
        return cast(asyncio.Protocol, ServerConnection(self))

    async def _sweep(self) -> None:
        """Enforce every connection's deadlines, twice a second."""
        while True:
            await asyncio.sleep(0.5)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.check_deadlines(now)

    async def start(self, host: str, port: int, *, reuse_port: bool = False, sock: socket.socket | None = None) -> None:
        """Listen on ``host:port`` (every address it resolves to) or on ``sock``; OSError if it cannot."""
        listeners = [sock] if sock is not None else _bind(host, port, reuse_port)
        for listener in listeners:
            listener.listen(self.BACKLOG)
            listener.setblocking(False)
            self.loop.add_reader(listener.fileno(), self._accept, listener)
        self._listeners = listeners
        self._sweeper = self.loop.create_task(self._sweep())

    def _accept(self, listener: socket.socket) -> None:
        """The listener is readable: take a batch of connections from its queue."""
        for _ in range(self.ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE, ENOBUFS...: the connection waits in the queue
                logger.warning("cannot accept a connection: %s", exc)
                return
            self._adopt(conn)

    def _adopt(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if conn.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self.loop.create_task(self._connect(conn))
        self._adopting.add(task)
        task.add_done_callback(self._adopting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            if self.tls is None:
                await self.loop.connect_accepted_socket(self._new_connection, conn)
            else:
                await self.loop.connect_accepted_socket(self._new_connection, conn, ssl=self.tls.current(),
                                                        ssl_handshake_timeout=self.limits.read_timeout)
        except (OSError, ssl.SSLError):
            conn.close()  # the client left before its transport was made

    @property
    def port(self) -> int:
        assert self._listeners
        return int(self._listeners[0].getsockname()[1])

    def start_draining(self) -> None:
        """From now on every answer says ``Connection: close`` and ends its connection.

        Clients then open new connections, which the load balancer sends elsewhere once
        readiness fails, so few requests are on old connections when the listener closes.
        """
        self.draining = True

    async def _stop_accepting(self) -> None:
        """Close the listener without resetting connections already in its accept queue.

        Closing a listening socket resets every connection the kernel completed but we had
        not accepted yet: requests lost although the client saw its connect succeed. So
        the backlog is first shrunk to nothing (new handshakes are refused or retried),
        the queued connections are accepted and served, and only then is it closed.
        """
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            self.loop.remove_reader(listener.fileno())
            with listener:
                try:
                    listener.listen(0)
                except OSError:
                    continue
                while True:
                    try:
                        conn, _ = listener.accept()
                    except OSError:
                        break
                    self._adopt(conn)
        if self._adopting:
            await asyncio.gather(*self._adopting, return_exceptions=True)

    async def shutdown(self, timeout: float, grace: float = 1.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close the rest."""
        self.draining = True
        await self._stop_accepting()
        for conn in list(self.connections):
            conn.close_when_idle(grace)
        deadline = self.loop.time() + timeout
        # Connections close themselves after their last answer; poll until all have.
        while self.connections and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn._close()
        if self._sweeper is not None:
            self._sweeper.cancel()


def _bind(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address ``host`` resolves to, as asyncio does."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
