"""A lean HTTP/1.1 server on asyncio protocols: the router's listening side.

Why not aiohttp's server: per request it builds a request object, a multidict of
headers, a payload stream and a response object, which cost about as much CPU as
the whole step call. The router needs less: the body as bytes, the headers as pairs,
one answer written in one ``write``. This module does that, and owns the
connection-level rules the router promises:

- ``read_timeout`` (KServe's serverRead): a request must arrive whole, headers and
  body, within it from its first byte; slow clients are cut off.
- ``idle_timeout`` (serverIdle): kept-alive connections with no request are closed.
- limits on the header block and the body (431 / 413 with a JSON error); malformed
  HTTP gets 400 and the connection closes. Other connections are not disturbed.
- A client that disconnects cancels its handler (and so every step call it started).
- Pipelined requests are answered in order, one at a time per connection.
- ``shutdown`` stops accepting, closes idle connections, lets in-flight requests
  finish (up to a timeout) and closes each connection after its last answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol, cast

import httptools
import orjson

logger = logging.getLogger(__name__)

_NEVER = float("inf")


class Request:
    """One request, whole: the body has arrived in full before the handler runs."""

    # Plain classes rather than dataclasses for the objects made on every request: a
    # dataclass's generated __init__ stays interpreted Python even in the compiled build.
    __slots__ = ("body", "connection", "headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes,
                 connection: ServerConnection) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.connection = connection

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path!r}, {len(self.body)} bytes)"

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


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


class ChunkSource(Protocol):
    """What a streaming answer reads from; ``aclose`` is called however the answer ends."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class StreamingResponse:
    """An answer sent as it is produced (chunked transfer encoding)."""

    status: int
    chunks: ChunkSource
    content_type: str | None = None
    headers: list[tuple[str, str]] | None = None


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


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("latin-1")
    except ValueError:
        return b"Unknown"


_STATUS_LINES: dict[int, bytes] = {}


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
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._value


_DATE = _DateHeader()


def error_body(error: str, cause: str) -> bytes:
    return orjson.dumps({"error": error, "cause": cause})


class ServerConnection:
    """One client connection: parse, dispatch in order, answer."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._loop = server.loop
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._queue: deque[Request] = deque()
        # One task per connection, started with its first request and kept for its life:
        # waking it for the next request costs less than creating a task per request.
        self._task: asyncio.Task[None] | None = None
        self._more: asyncio.Future[None] | None = None
        self._handling = False
        # One deadline per connection, checked by the server's sweeper twice a second:
        # cheaper than creating and cancelling a timer handle for every request.
        self.deadline = _NEVER
        self.handler_deadline = _NEVER
        self._closing = False
        self._closed = False
        self._writable: asyncio.Future[None] | None = None
        self._reset_message()

    # --- connection lifecycle -------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self._arm(self._server.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._server.connections.discard(self)
        self._disarm()
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client left: stop the work it started
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("client disconnected"))
        self._queue.clear()

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
        return self._handling or bool(self._queue) or self._in_message

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
        if self._rejected:
            self._close()
        elif self._in_message:
            self._reject(408, "Request Timeout", "the request did not arrive in time")
        elif not self._handling and not self._queue:
            self._close()

    # --- parsing --------------------------------------------------------------------
    def _reset_message(self) -> None:
        self._in_message = False
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._rejected = False
        self._declared_length = 0
        self._expect_continue = False

    def data_received(self, data: bytes) -> None:
        if self._rejected or self._closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "Bad Request", "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self._rejected:
                self._reject(400, "Bad Request", f"malformed HTTP request ({_parser_reason(exc)})")

    def on_message_begin(self) -> None:
        self._reset_message()
        self._in_message = True
        self._arm(self._server.limits.read_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._server.limits.max_header_bytes:
            self._reject(414, "URI Too Long", "the request line is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self._server.limits.max_header_bytes:
            self._reject(431, "Request Header Fields Too Large",
                         f"the header block is over {self._server.limits.max_header_bytes} bytes")
            return
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        # Only two headers matter before the body: compare lengths first, it is cheaper.
        n = len(name)
        if n == 14 and name.lower() == b"content-length":
            self._declared_length = int(value) if value.isdigit() else -1
        elif n == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        if self._rejected:
            return
        length = self._declared_length
        if length > self._server.limits.max_body_bytes:
            self._reject(413, "Request Entity Too Large",
                         f"request body of {length} bytes is over the "
                         f"{self._server.limits.max_body_bytes}-byte limit")
            return
        if self._expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._rejected:
            return
        self._body_size += len(body)
        if self._body_size > self._server.limits.max_body_bytes:
            self._reject(413, "Request Entity Too Large",
                         f"request body is over the {self._server.limits.max_body_bytes}-byte limit")
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        url = self._url
        if url[:1] == b"/" and b"?" not in url and b"#" not in url:
            path, query = url, b""  # the common case, without building a URL object
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._reject(400, "Bad Request", "the request target is not a valid URL")
                return
            path, query = parsed.path or b"/", parsed.query or b""
        keep_alive = self._parser.should_keep_alive()
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = Request(
            method=self._parser.get_method().decode("latin-1"),
            path=path.decode("latin-1"),
            query=query.decode("latin-1"),
            headers=self._headers,
            body=body,
            connection=self,
        )
        self._reset_message()
        self._disarm()
        if not keep_alive:
            self._closing = True
        self._queue.append(request)
        if len(self._queue) > self._server.limits.max_pipelined and self.transport is not None:
            self.transport.pause_reading()
        if self._task is None:
            self._task = self._loop.create_task(self._serve_queue())
        elif self._more is not None and not self._more.done():
            self._more.set_result(None)

    def _reject(self, status: int, error: str, cause: str) -> None:
        """Answer a request we will not run, then close: the stream is no longer trusted."""
        self._rejected = True
        self._in_message = False
        self._disarm()
        if self.transport is not None and not self._closed:
            body = error_body(error, cause)
            self.transport.write(
                status_line(status) + _DATE.get()
                + b"Content-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
                + body
            )
        self._closing = True
        if not self._handling:
            self._linger()

    def _linger(self) -> None:
        """Half-close and discard what the client still sends for a moment, then close.

        Closing at once with unread bytes would make the kernel reset the connection,
        and the client could lose the error answer we just wrote.
        """
        if self.transport is None or self._closed:
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.deadline = self._loop.time() + 2.0
        else:
            self._close()

    # --- answering ------------------------------------------------------------------
    async def _serve_queue(self) -> None:
        """Answer queued requests in order; between requests, wait for the next one."""
        while not self._closed:
            if not self._queue:
                self._between_requests()
                if self._closed:
                    return
                self._more = self._loop.create_future()
                try:
                    await self._more
                finally:
                    self._more = None
                continue
            self._handling = True
            try:
                await self._answer(self._queue.popleft())
            finally:
                self._handling = False

    def _between_requests(self) -> None:
        """Nothing queued: finish a rejected or closing connection, else wait idle."""
        if self._rejected:
            self._linger()
        elif self._closing and not self._in_message:
            self._close()
        elif not self._in_message:
            self._arm(self._server.limits.idle_timeout)

    async def _answer(self, request: Request) -> None:
        if self.transport is not None and len(self._queue) <= self._server.limits.max_pipelined:
            self.transport.resume_reading()
        head_only = request.method == "HEAD"
        last = (self._closing or self._server.draining) and not self._queue
        self.handler_deadline = self._loop.time() + self._server.limits.write_timeout
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
                await answer.chunks.aclose()
            return
        last = last or ((self._closing or self._server.draining) and not self._queue)
        if last:
            self._closing = True
        if isinstance(answer, StreamingResponse):
            await self._write_stream(answer, head_only, last)
        else:
            self._write(answer, head_only, last)

    def _head(self, status: int, content_type: str | None, headers: list[tuple[str, str]] | None,
              last: bool) -> list[bytes]:
        parts = [status_line(status), _DATE.get()]
        if content_type is not None:
            parts.append(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n")
        if headers:
            for k, v in headers:
                parts.append(f"{k}: {v}\r\n".encode("latin-1", "replace"))
        if last:
            parts.append(b"Connection: close\r\n")
        return parts

    def _write(self, answer: Response, head_only: bool, last: bool) -> None:
        assert self.transport is not None
        parts = self._head(answer.status, answer.content_type, answer.headers, last)
        parts.append(b"Content-Length: %d\r\n\r\n" % len(answer.body))
        if not head_only:
            parts.append(answer.body)
        self.transport.write(b"".join(parts))

    async def _write_stream(self, answer: StreamingResponse, head_only: bool, last: bool) -> None:
        assert self.transport is not None
        parts = self._head(answer.status, answer.content_type, answer.headers, last)
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        self.transport.write(b"".join(parts))
        try:
            if head_only:
                self.transport.write(b"0\r\n\r\n")
                return
            async for chunk in answer.chunks:
                if self._closed:
                    return
                if chunk:
                    self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    await self.drain()
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
            self.transport.write(b"0\r\n\r\n")


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:100]


class HTTPServer:
    """Listening socket(s) plus the set of open connections, for orderly shutdown."""

    def __init__(self, handler: Handler, limits: ServerLimits | None = None) -> None:
        self.handler = handler
        self.limits = limits or ServerLimits()
        self.loop = asyncio.get_running_loop()
        self.connections: set[ServerConnection] = set()
        self.draining = False
        self._server: asyncio.Server | None = None
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
        self._sweeper = self.loop.create_task(self._sweep())
        if sock is not None:
            self._server = await self.loop.create_server(self._new_connection, sock=sock, backlog=2048)
        else:
            self._server = await self.loop.create_server(
                self._new_connection, host, port, reuse_port=reuse_port, backlog=2048
            )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

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
        server = self._server
        if server is None:
            return
        listeners = []
        for sock in server.sockets:
            try:
                listener = socket.socket(fileno=os.dup(sock.fileno()))
                listener.setblocking(False)
                listener.listen(0)
            except OSError:
                continue
            listeners.append(listener)
        server.close()  # our duplicates keep the sockets open until the queue is empty
        for listener in listeners:
            with listener:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    try:
                        await self.loop.connect_accepted_socket(self._new_connection, conn)
                    except OSError:
                        conn.close()

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
        if self._server is not None:
            await self._server.wait_closed()
