"""A lean HTTP/1.1 client on asyncio protocols, for step calls.

Why not aiohttp's client: a graph request makes one call per step, and aiohttp's
per-request machinery (request objects, URL parsing, tracing hooks, cookie handling)
cost more CPU than the rest of the router together. This client does only what a
step call needs: POST a byte body, read status and body, keep connections alive.

- Keep-alive pools per (scheme, host, port), LIFO, bounded per host; callers wait
  for a free connection past the bound.
- Answers are framed by :class:`~graph_router.http1.response_reader.ResponseReader`
  (sans-IO, on llhttp): Content-Length, chunked or connection close; 1xx, 204 and 304
  carry no body; trailers are ignored; the header section has its own limit.
- Bodies are returned as sent, ``Content-Encoding`` included (``Answer.encoding``):
  relayed bodies keep their coding; readers decode with :mod:`graph_router.http1.content_coding`.
- A connection is reused only when its request was fully written and its answer ended
  at its exact framed end; a byte arriving while it is idle closes it.
- A pooled connection the server closed before any byte of the answer arrived is
  reported as :class:`StaleConnection`, so the caller may retry once on a new one.
- Timeouts: connect and whole-exchange; TLS for https URLs.
- Answers over ``max_body`` bytes are cut off (:class:`ResponseTooLarge`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from .http1.response_reader import (
    BODY,
    BODY_TOO_LARGE,
    CHUNKED,
    CLOSED,
    DONE,
    ERROR,
    HEAD_TOO_LARGE,
    NO_BODY,
    UNSOLICITED,
    ResponseReader,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ClientError",
    "ConnectError",
    "HTTPClient",
    "HeadListener",
    "MalformedResponse",
    "ResponseHeadTooLarge",
    "ResponseTooLarge",
    "StaleConnection",
]


class ClientError(Exception):
    """Base of this module's transport errors (no usable answer)."""


class ConnectError(ClientError):
    """The connection could not be opened."""


class StaleConnection(ClientError):
    """A reused connection was closed by the server before any byte of the answer."""


class ConnectionClosed(ClientError):
    """The server closed the connection before the answer was complete."""


class MalformedResponse(ClientError):
    """Bytes that are not an HTTP/1.1 answer."""


class ResponseTooLarge(ClientError):
    """The answer's body is over the configured limit."""


class ResponseHeadTooLarge(ClientError):
    """The answer's header section is over the configured limit."""


class Ready(Protocol):
    """A streamed body that hands over what has arrived without waiting (None: nothing yet)."""

    def ready(self) -> bytes | None: ...


class HeadListener(Protocol):
    """Hears of a streamed answer's head in the callback that read it (see ``_Connection.send``)."""

    def stream_head(self, status: int, content_type: str | None, encoding: str | None, stream: Ready) -> None: ...


class Answer:
    """Status, body and the headers the router cares about.

    ``stream`` is set (and ``body`` empty) when a streaming answer was asked for and the
    service sent one (``text/event-stream``, or a chunked body): iterate it for the body
    as it arrives. Leaving it early closes the connection. ``encoding``: the answer's
    Content-Encoding, None without one; the body (or stream) is still encoded.
    (A plain class: made for every step call, and a dataclass's __init__ stays
    interpreted in the compiled build.)
    """

    __slots__ = ("body", "content_type", "encoding", "status", "stream")

    def __init__(self, status: int, body: bytes, content_type: str | None, stream: BodyStream | None = None,
                 encoding: str | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.stream = stream
        self.encoding = encoding

    def __repr__(self) -> str:
        return f"Answer({self.status}, {self.body[:80]!r}, {self.content_type!r})"


@dataclass(frozen=True, slots=True)
class Target:
    """A URL split once: the pool key and the request line prefix."""

    key: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    head: bytes  # b"POST /path HTTP/1.1\r\nHost: host[:port]\r\n"
    context: Any = None  # the step's own TLS settings: a security.tls.ClientTLS (current() per connection)
    server_name: str | None = None  # SNI and the name checked, when not the URL's host


def parse_target(url: str, step_tls: Any = None) -> Target:
    """Split a step URL; raises ValueError for anything but http(s)://host[:port]/path.

    ``step_tls`` (a security.tls.ClientTLS) gives an https target its own context; its
    key joins the pool key's scheme, so connections are never shared across settings.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    head = f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
    if tls and step_tls is not None:
        return Target((f"https+{step_tls.key}", host, port), host, port, tls, head, step_tls, step_tls.server_name)
    return Target((parts.scheme, host, port), host, port, tls, head)


class _Connection:
    """One keep-alive connection, at most one request in flight: the asyncio glue.

    The framing decisions are :class:`~graph_router.http1.response_reader.ResponseReader`'s;
    this class moves bytes into it and resolves the caller's future from the state it
    reports. ``reusable`` is set only when an answer ended at its exact framed end on a
    connection the service keeps alive; any byte after that end, or while the connection
    sits idle in the pool, clears it and closes an idle connection (no answer can ever
    be read by the wrong request).
    """

    def __init__(self, pool: _HostPool, max_body: int, max_head: int) -> None:
        self._pool = pool
        self.reader = ResponseReader(max_head, max_body)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Answer] | None = None
        self._reused = False
        self._want_stream = False
        self._stream: BodyStream | None = None
        # Told of a streamed answer's head as soon as it is in (the graph's tail step:
        # the router writes its own head from here, before the caller's task resumes).
        self._early: HeadListener | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        state = reader.feed(data)
        if state == DONE:
            self._complete()
        elif state == BODY:
            if self._stream is not None:
                self._stream.take(reader)
            elif self._want_stream and self._waiter is not None:
                self._maybe_stream()
        elif state == ERROR:
            self._fail(_client_error(reader))
        elif state == UNSOLICITED:
            # Bytes nobody asked for: never reuse this connection (Go closes it too).
            self.reusable = False
            if self._waiter is None and self._stream is None and self.transport is not None:
                self.transport.close()

    def eof_received(self) -> bool:
        return False  # the service half-closed: close our side too (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        reader = self.reader
        state = reader.eof()
        if state == DONE:
            self._complete()
        elif state == ERROR:
            if not reader.got_bytes and self._reused and self._stream is None:
                self._fail(StaleConnection("the service closed a kept-alive connection"))
            else:
                self._fail(_client_error(reader))

    def _maybe_stream(self) -> None:
        """Answer with the head alone when the service streams (event stream or chunked).

        Decided once, when the head is in; 204/304 never stream (no body, RFC 9110 §6.4.1).
        """
        reader = self.reader
        self._want_stream = False
        framing = reader.framing
        if framing == CHUNKED or (
            framing != NO_BODY and (reader.content_type or "").startswith("text/event-stream")
        ):
            waiter = self._waiter
            self._waiter = None
            reader.streaming = True
            stream = self._stream = BodyStream(self)
            stream.take(reader)
            early = self._early
            if early is not None:
                self._early = None
                try:
                    early.stream_head(reader.status, reader.content_type, reader.content_encoding, stream)
                except Exception:  # its failure is the listener's: the answer still goes to the waiter
                    logger.exception("a streamed answer's head listener failed")
            if waiter is not None and not waiter.done():
                waiter.set_result(Answer(reader.status, b"", reader.content_type, stream, reader.content_encoding))

    def _complete(self) -> None:
        """The answer ended at its framed end."""
        reader = self.reader
        self.reusable = reader.keep_alive and not self.closed
        stream = self._stream
        if stream is not None:
            stream.take(reader)
            stream.finish()
            return
        if self._want_stream and self._waiter is not None:
            self._maybe_stream()  # head and whole body in one read: still a stream
            if self._stream is not None:
                self._stream.finish()
                return
        self._early = None  # it holds the request's objects: not kept past the answer
        waiter = self._waiter
        self._waiter = None
        body = reader.body()
        if waiter is not None and not waiter.done():
            encoding = reader.content_encoding
            waiter.set_result(Answer(reader.status, body, reader.content_type) if encoding is None
                              else Answer(reader.status, body, reader.content_type, None, encoding))

    def _fail(self, exc: ClientError) -> None:
        self.reusable = False
        self._early = None
        if self._stream is not None:
            self._stream.fail(exc)
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def send(self, data: bytes, reused: bool, stream: bool = False,
             early: HeadListener | None = None) -> asyncio.Future[Answer]:
        """Write one request; the future resolves with the answer (or its head, when streaming).

        ``early`` (with ``stream``) hears of a streamed answer's head in the callback that
        read it, before the future's waiter runs.
        """
        assert self.transport is not None
        if self.closed or (reused and not self.reusable):
            # Retired while it waited to be used (it closed, or bytes came unasked after it
            # was handed over): the caller retries once on a fresh connection.
            failed: asyncio.Future[Answer] = self._pool.loop.create_future()
            failed.set_exception(StaleConnection("the service closed a kept-alive connection"))
            return failed
        self.reusable = False
        self._reused = reused
        self._want_stream = stream
        self._early = early
        self._stream = None
        self.reader.expect()
        self._waiter = self._pool.loop.create_future()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()


def _client_error(reader: ResponseReader) -> ClientError:
    """The exception for a reader's error."""
    kind = reader.error_kind
    if kind == BODY_TOO_LARGE:
        return ResponseTooLarge(reader.error)
    if kind == HEAD_TOO_LARGE:
        return ResponseHeadTooLarge(reader.error)
    if kind == CLOSED:
        return ConnectionClosed(reader.error)
    return MalformedResponse(reader.error)


class BodyStream:
    """A streaming answer's body: chunks queue up here until the consumer takes them.

    The bytes are the service's, as sent (a ``Content-Encoding`` is relayed, not undone).
    Reading from the service pauses while more than ``_HIGH_WATER`` chunks wait, so a
    slow client slows the service down instead of growing memory.
    """

    _HIGH_WATER = 64

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._done = False
        self._error: ClientError | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._paused = False
        self._released = False

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def take(self, reader: ResponseReader) -> None:
        """Queue the body bytes the reader has collected."""
        if not reader.chunks:
            return
        self._chunks.extend(reader.chunks)
        reader.chunks.clear()
        if len(self._chunks) > self._HIGH_WATER and not self._paused and self._conn.transport is not None:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def finish(self) -> None:
        self._done = True
        self._wake()

    def fail(self, exc: ClientError) -> None:
        if not self._done:
            self._error = exc
            self._done = True
        self._wake()

    def ready(self) -> bytes | None:
        """What has arrived already, taken now without waiting (None: nothing yet)."""
        chunks = self._chunks
        if not chunks:
            return None
        if len(chunks) == 1:  # the common case: joining a deque first copies it into a list
            chunk = chunks.popleft()
        else:
            chunk = b"".join(chunks)
            chunks.clear()
        if self._paused and self._conn.transport is not None:
            self._paused = False
            self._conn.transport.resume_reading()
        return chunk or None

    # An async iterator (not a generator) so that ``aclose`` releases the connection
    # even when nobody ever started reading.
    def __aiter__(self) -> BodyStream:
        return self

    async def __anext__(self) -> bytes:
        conn = self._conn
        while True:
            chunks = self._chunks
            if chunks:
                # Everything that has arrived goes on as one piece: one write to the client
                # per read from the service, not one per chunk of its chunked coding.
                if len(chunks) == 1:
                    chunk = chunks.popleft()
                else:
                    chunk = b"".join(chunks)
                    chunks.clear()
                if self._paused and conn.transport is not None:
                    self._paused = False
                    conn.transport.resume_reading()
                if chunk:
                    return chunk
                continue
            if self._done:
                if self._error is not None:
                    error, self._error = self._error, None
                    self._release(complete=False)
                    raise error
                self._release(complete=True)
                raise StopAsyncIteration
            self._wakeup = conn._pool.loop.create_future()
            try:
                await self._wakeup
            except BaseException:
                self._release(complete=False)
                raise

    async def aclose(self) -> None:
        """Stop reading: the connection is closed unless the answer had ended."""
        self._release(complete=self._done and self._error is None and not self._chunks)

    def _release(self, complete: bool) -> None:
        if self._released:
            return
        self._released = True
        conn = self._conn
        if not complete:
            conn.reusable = False
        conn._stream = None
        conn._pool.release(conn)


class _HostPool:
    """Connections to one (scheme, host, port): idle ones LIFO, at most ``limit`` open."""

    def __init__(self, client: HTTPClient, target: Target) -> None:
        self.client = client
        self.loop = client.loop
        self.target = target
        self.idle: list[_Connection] = []
        self.open = 0
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()

    def take_idle(self) -> _Connection | None:
        """The most recently used idle connection still open, without awaiting."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.reusable and not conn.closed and self.loop.time() - conn.idle_since < self.client.keepalive:
                return conn
            conn.close()
            self.open -= 1
        return None

    async def acquire(self, fresh: bool) -> tuple[_Connection, bool]:
        """A connection and whether it was reused from the pool.

        Past ``per_host`` open connections, callers queue in arrival order and a released
        connection is handed to the longest waiter directly: were it put back as idle, a
        newcomer could take it first and a waiter could be passed over again and again
        (at 1,000 concurrent clients that showed as a p99 of seconds).
        """
        if not fresh:
            conn = self.take_idle()
            if conn is not None:
                return conn, True
        while self.open >= self.client.per_host:
            waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
            self.waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                # Cancelled after being handed a connection or a free slot: pass it on.
                if waiter.done() and not waiter.cancelled():
                    given = waiter.result()
                    if given is not None:
                        self.release(given)
                    else:
                        self._wake()
                raise
            if handed is not None:
                if not fresh:
                    return handed, True
                handed.close()  # a retry wants a new connection: trade this one for it
                self.open -= 1
        self.open += 1
        try:
            return await self._connect(), False
        except BaseException:
            self.open -= 1
            self._wake()
            raise

    async def _connect(self) -> _Connection:
        t = self.target
        ssl_ctx: ssl.SSLContext | None = None
        if t.tls:
            ssl_ctx = t.context.current() if t.context is not None else self.client.ssl_context()
        try:
            async with asyncio.timeout(self.client.connect_timeout):
                _, proto = await self.loop.create_connection(
                    lambda: cast(asyncio.Protocol, _Connection(self, self.client.max_body, self.client.max_head)),
                    t.host,
                    t.port,
                    ssl=ssl_ctx,
                    server_hostname=(t.server_name or t.host) if t.tls else None,
                )
        except TimeoutError as exc:
            raise ConnectError(f"connecting to {t.host}:{t.port} timed out") from exc
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS handshake with {t.host}:{t.port} failed ({exc.reason})") from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {t.host}:{t.port} ({exc.strerror or exc})") from exc
        return cast(_Connection, proto)

    def release(self, conn: _Connection) -> None:
        """Pool ``conn`` again, or close it.

        Kept only when its answer ended cleanly on a kept-alive connection and every byte
        of the request left our buffer: a service that answered early (say 413 before
        reading the upload) would otherwise read our old body's rest as the next request.
        """
        transport = conn.transport
        # A closed TLS transport (asyncio's) cannot report its buffer: closed is not reusable anyway.
        if transport is not None and not conn.closed and transport.get_write_buffer_size():
            # Answered before our request was written (RFC 9112 §9.3): sending the rest
            # serves nobody, and the connection can never carry another request.
            conn.reusable = False
            transport.abort()
        if conn.reusable and not conn.closed:
            conn.idle_since = self.loop.time()
            waiters = self.waiters
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(conn)  # first come, first served (see acquire)
                    return
            self.idle.append(conn)
        else:
            conn.close()
            self.open -= 1
            self._wake()

    def _wake(self) -> None:
        """A slot is free (a connection closed): the longest waiter may open one."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()


class HTTPClient:
    """Pooled keep-alive client; one per process, created inside the running loop.

    per_host: open connections per service; past it, calls wait for a free one.
    max_body: bytes of an answer's body held whole; max_head: bytes of its header section.
    keepalive: seconds an idle connection is kept (below common server idle timeouts,
    so the client usually closes first and the stale-connection race stays rare).
    """

    def __init__(
        self,
        *,
        per_host: int = 256,
        keepalive: float = 30.0,
        connect_timeout: float = 10.0,
        max_body: int = 256 * 1024 * 1024,
        max_head: int = 64 * 1024,
        user_agent: str = "graph-router",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.per_host = per_host
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.max_body = max_body
        self.max_head = max_head
        self._user_agent = f"User-Agent: {user_agent}\r\n".encode("latin-1")
        self._pools: dict[tuple[str, str, int], _HostPool] = {}
        self._targets: dict[str, Target] = {}
        self._ssl = ssl_context  # None: the system's trust store, made on first https use
        self._tls: dict[str, Any] = {}  # step URL -> its security.tls.ClientTLS (set per plan)

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def set_step_tls(self, step_tls: dict[str, Any]) -> None:
        """Per-URL TLS settings of the graph now served (at load, never per request)."""
        if step_tls or self._tls:
            self._tls = step_tls
            self._targets.clear()

    def has_step_tls(self, url: str) -> bool:
        return url in self._tls

    def target(self, url: str) -> Target:
        """The parsed target for ``url``, cached (step URLs are few and fixed)."""
        t = self._targets.get(url)
        if t is None:
            t = parse_target(url, self._tls.get(url))
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = t
        return t

    def build_request(self, target: Target, headers: Any, body: bytes) -> bytes:
        """Request bytes: line, Host, the given headers, defaults, Content-Length.

        Defaults: ``Content-Type: application/json`` (as KServe) and our User-Agent, each
        unless the caller's headers have one.
        """
        length = f"Content-Length: {len(body)}\r\n\r\n".encode()  # cheaper than bytes % formatting
        if not headers:  # the common case: nothing propagated
            return b"".join((target.head, self._user_agent, b"Content-Type: application/json\r\n", length, body))
        parts = [target.head]
        has_ua = has_ct = False
        for name, value in headers.items():
            lname = name.lower()
            if lname == "user-agent":
                has_ua = True
            elif lname == "content-type":
                has_ct = True
            parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        if not has_ua:
            parts.append(self._user_agent)
        if not has_ct:
            parts.append(b"Content-Type: application/json\r\n")
        parts.append(length)
        parts.append(body)
        return b"".join(parts)

    def post(
        self,
        url: str,
        headers: Any,
        body: bytes,
        fresh: bool = False,
        timeout: float | None = None,
        stream: bool = False,
        early: HeadListener | None = None,
    ) -> Awaitable[Answer]:
        """POST ``body``; raises ClientError subclasses, TimeoutError, ValueError (bad URL).

        ``stream``: answer as soon as the head arrives when the service streams; the
        timeout then bounds the wait for the head, not the whole body. (A plain function
        handing back the exchange's coroutine: one coroutine level less per call.)
        ``early``: told of a streamed answer's head as soon as it is read (``_Connection.send``).
        """
        target = self.target(url)
        pool = self._pools.get(target.key)
        if pool is None:
            pool = self._pools[target.key] = _HostPool(self, target)
        data = self.build_request(target, headers, body)
        if timeout is None:
            return self._exchange(pool, data, fresh, stream, early)
        return self._exchange_within(timeout, pool, data, fresh, stream, early)

    async def _exchange_within(self, timeout: float, pool: _HostPool, data: bytes, fresh: bool,
                               stream: bool, early: HeadListener | None) -> Answer:
        async with asyncio.timeout(timeout):
            return await self._exchange(pool, data, fresh, stream, early)

    async def _exchange(self, pool: _HostPool, data: bytes, fresh: bool, stream: bool,
                        early: HeadListener | None) -> Answer:
        conn = None if fresh else pool.take_idle()
        reused = conn is not None
        if conn is None:
            conn, reused = await pool.acquire(fresh)
        try:
            answer = await conn.send(data, reused, stream, early)
        except BaseException:
            conn.reusable = False
            pool.release(conn)
            raise
        if answer.stream is None:
            pool.release(conn)  # a stream gives its connection back when it ends
        return answer

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
