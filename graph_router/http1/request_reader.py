# cython: annotation_typing=False
"""Requests as the router receives them: bytes in, :class:`Request` or :class:`Rejection` out.

Sans-IO (no sockets, no futures): the server's connection feeds what it read and takes
the events in order. The rules a front-line proxy must not bend are decided here:

- Limits hold while bytes arrive: a head over ``max_header_bytes`` is 431 (414 while
  the request line is still open) as soon as it is crossed, not when its line ends; a
  declared or received body over ``max_body_bytes`` is 413; past the server-wide
  :class:`BufferBudget`, a new body is 503.
- RFC 9112 §3.2: an HTTP/1.1 request without ``Host``, any request with two, or with
  an invalid Host value, is 400. A request line without a version (HTTP/0.9) is 400;
  a version other than 1.0 and 1.1 is 505.
- RFC 9112 §6.1: a transfer coding other than ``chunked`` is 501 (the router would
  otherwise take coded bytes for the content).
- RFC 9110 §6.5.1: trailer fields are never merged into the header section (dropped).
- Upgrade and CONNECT (RFC 9110 §7.8, §9.3.6) are refused: 400 and 405.
- RFC 9110 §10.1.1 / §15.2: ``100 Continue`` is wanted only by HTTP/1.1 requests that
  still have a body to send; never for HTTP/1.0.
- After a rejection, or a request that ends the connection, nothing more is parsed: one
  error answer per bad stream, and the rest of the stream is not trusted.

Events come out in stream order, so the connection answers them in that order
(RFC 9112 §9.3.2).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import httptools

from .rules import FieldLine, FieldName, HeadMeter, valid_host


class Request:
    """One request, whole: the body arrived in full before the handler runs.

    ``held``: bytes of the server's :class:`BufferBudget` this body holds, given back
    when its answer is done. ``connection``: set by the server glue.
    """

    # Plain classes rather than dataclasses for the objects made on every request: a
    # dataclass's generated __init__ stays interpreted Python even in the compiled build.
    __slots__ = ("body", "connection", "head_only", "headers", "held", "http10", "keep_alive", "method", "path",
                 "query")

    def __init__(self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes,
                 connection: Any = None) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.connection = connection
        self.keep_alive = True
        self.http10 = False
        self.head_only = method == "HEAD"
        self.held = 0

    def __repr__(self) -> str:
        return f"Request({self.method} {self.path!r}, {len(self.body)} bytes)"

    def header(self, name: str) -> str | None:
        """The first value of a header, by case-insensitive name."""
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


class Rejection:
    """An error answer for a request that will not run; the connection closes after it."""

    __slots__ = ("cause", "error", "head_only", "headers", "status")

    def __init__(self, status: int, error: str, cause: str, headers: list[tuple[str, str]] | None = None,
                 head_only: bool = False) -> None:
        self.status = status
        self.error = error
        self.cause = cause
        self.headers = headers
        self.head_only = head_only  # the rejected request is a HEAD: the answer has no content

    def __repr__(self) -> str:
        return f"Rejection({self.status}, {self.cause!r})"


class BufferBudget:
    """Request body bytes held across all of a server's connections, capped.

    Bodies are buffered whole before the graph runs; without a cap, many clients each
    sending a large body at once could take all memory. Counted as bytes arrive and
    given back when the request's answer is done or its connection is lost (the reader
    and the server adjust ``used`` directly: a C-level field in the compiled build).
    """

    __slots__ = ("cap", "used")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0


class ReaderLimits:
    """Per-connection limits, in bytes."""

    __slots__ = ("max_body_bytes", "max_header_bytes")

    def __init__(self, max_header_bytes: int = 64 * 1024, max_body_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes


RETRY_LATER = [("Retry-After", "1")]

# Bytes the one-pass read takes in a path: unreserved, sub-delims, ":", "@", "/" and "%"
# (RFC 3986 §3.3). "?" and "#" end the path and send the request to llhttp.
_PATH = bytes(
    1 if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "-._~!$&'()*+,;=:@/%") else 0 for c in range(256)
)


class RequestReader:
    """Parses one connection's request stream into events (see the module docstring).

    ``events``: :class:`Request` and :class:`Rejection` objects in stream order; the glue
    pops them. ``continue_wanted`` is set when the request being read asked for
    ``100 Continue`` and may have it now; the glue clears it once handled.
    """

    def __init__(self, limits: ReaderLimits, budget: BufferBudget | None = None) -> None:
        self.limits = limits
        self.budget = budget if budget is not None else BufferBudget(1 << 62)
        self.events: deque[Request | Rejection] = deque()
        self.continue_wanted = False
        self.stopped = False  # a rejection was made, or a request ended the connection
        self._parser: Any = httptools.HttpRequestParser(self)
        self._meter = HeadMeter(limits.max_header_bytes)
        self._line = FieldLine()
        self._began = False
        self._good_host = b""  # the last Host value found valid
        self._method = b""
        self._http10 = False
        self._reset()

    def _reset(self) -> None:
        self.in_message = False
        self._head_done = False
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        self._body: Any = None  # bytes (one piece), a bytearray (several), or None
        self._held = 0
        self._hosts = 0
        self._bad_host = False
        self._bad_coding = False
        self._upgrade = False
        self._connection = False
        self._declared = 0
        self._expect_continue = False
        self._meter.reset()

    # --- the glue's side --------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Parse ``data``; events for every request it completes are appended in order."""
        if self.stopped:
            return
        parser = self._parser
        if parser is None:
            return
        if not self.in_message and self._whole(data):
            return
        self._began = False
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Refused at headers-complete already; llhttp then stops at the upgrade point.
            if not self.stopped:
                self._reject(400, "Bad Request", "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.stopped:
                self._reject(400, "Bad Request", f"malformed HTTP request ({_parser_reason(exc)})")
            return
        if self.in_message and not self._head_done and not self.stopped and not self._began \
                and self._meter.add(len(data)):
            self._head_over()

    def _whole(self, data: bytes) -> bool:
        """The common request, read at once: True when ``data`` was it, and it is queued.

        One read that holds exactly one plain request: ``GET``, ``POST``, ``PUT``,
        ``PATCH``, ``DELETE`` or ``OPTIONS`` on an origin-form path without query or
        fragment, ``HTTP/1.1``, fields of token names and printable ASCII values, one
        valid ``Host``, at most one ``Content-Length`` whose body is the rest of
        ``data``, within every limit and the buffer budget; nothing chunked, expected,
        upgraded or folded. Such a request is read here in one pass. Anything else
        returns False untouched (llhttp has not seen ``data``) and llhttp reads it with
        every rule of this module: this path only ever accepts a subset of what that path
        accepts, and decides the same.
        """
        n = len(data)
        p = data  # compiled: a pointer to the bytes, indexed in C
        line = self._line
        limits = self.limits
        if n < 16:
            return False
        i = 0
        while i < 8 and 65 <= p[i] <= 90:  # the method: upper-case letters
            i += 1
        if i >= n or p[i] != 32:
            return False
        # The letters are upper case (checked above): a case-blind compare is exact here.
        if i == 4 and FieldName.equals(p, 0, b"post", 4):
            method = "POST"
        elif i == 3 and FieldName.equals(p, 0, b"get", 3):
            method = "GET"
        elif i == 3 and FieldName.equals(p, 0, b"put", 3):
            method = "PUT"
        elif i == 5 and FieldName.equals(p, 0, b"patch", 5):
            method = "PATCH"
        elif i == 6 and FieldName.equals(p, 0, b"delete", 6):
            method = "DELETE"
        elif i == 7 and FieldName.equals(p, 0, b"options", 7):
            method = "OPTIONS"
        else:
            return False
        i += 1
        path_start = i
        if i >= n or p[i] != 47:  # origin-form: "/" first
            return False
        while i < n and _PATH[p[i]]:
            i += 1
        path_end = i
        if n - i < 11 or not data.startswith(b" HTTP/1.1\r\n", i):
            return False  # a query, a fragment, another byte, or another version
        i += 11
        head_bytes = path_end - path_start  # counted as the llhttp path counts them
        headers: list[tuple[str, str]] = []
        host_start = -1
        host_end = -1
        length = 0
        declared = False
        keep_alive = True
        while True:
            if i + 1 >= n:
                return False  # the head does not end in this read
            if p[i] == 13:
                if p[i + 1] != 10:
                    return False
                i += 2
                break
            start = i
            i = line.scan(p, i, n)
            if i < 0:
                return False
            size = line.name_end - start
            head_bytes += size + (line.value_end - line.value_start) + 4
            if head_bytes > limits.max_header_bytes:
                return False
            headers.append((data[start:line.name_end].decode("latin-1"),
                            data[line.value_start:line.value_end].decode("latin-1")))
            if size == 4 and FieldName.equals(p, start, b"host", 4):
                if host_start >= 0:
                    return False
                host_start = line.value_start
                host_end = line.value_end
            elif size == 14 and FieldName.equals(p, start, b"content-length", 14):
                length = line.number(p)
                if declared or length < 0:
                    return False  # repeated, or not a plain number: llhttp decides
                declared = True
            elif size == 10 and FieldName.equals(p, start, b"connection", 10):
                if line.value_end - line.value_start == 5 and FieldName.equals(p, line.value_start, b"close", 5):
                    keep_alive = False
                elif not (line.value_end - line.value_start == 10
                          and FieldName.equals(p, line.value_start, b"keep-alive", 10)):
                    return False
            elif (size == 17 and FieldName.equals(p, start, b"transfer-encoding", 17)) or (
                    size == 6 and FieldName.equals(p, start, b"expect", 6)) or (
                    size == 7 and FieldName.equals(p, start, b"upgrade", 7)):
                return False
        if host_start < 0 or i + length != n or length > limits.max_body_bytes:
            return False
        budget = self.budget
        if budget.used + length > budget.cap:
            return False
        good = self._good_host  # a connection's requests repeat one Host: check a value once
        if host_end - host_start != len(good) or not data.startswith(good, host_start):
            host = data[host_start:host_end]
            if not valid_host(host):
                return False
            self._good_host = host
        request = Request(method, data[path_start:path_end].decode("latin-1"), "", headers,
                          data[i:] if length else b"")
        if length:
            budget.used += length
            request.held = length
        request.keep_alive = keep_alive
        self.events.append(request)
        if not keep_alive:
            self.stopped = True  # the client said this is the last request (RFC 9112 §9.6)
        return True

    def timed_out(self) -> bool:
        """The read deadline passed: a request half-read gets 408. True when it did."""
        if self.in_message and not self.stopped:
            self._reject(408, "Request Timeout", "the request did not arrive in time")
            return True
        return False

    def close(self) -> None:
        """Forget everything at once (the connection is gone): buffers, budget and parser.

        Breaking the parser's reference back to us means nothing here waits for the
        cycle collector, whatever its thresholds or ``gc.freeze()``.
        """
        self.stopped = True
        self._parser = None
        self._drop_body()
        budget = self.budget
        for event in self.events:
            if isinstance(event, Request) and event.held:
                budget.used -= event.held
                event.held = 0
        self.events.clear()

    # --- llhttp callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()
        self.in_message = True
        self._began = True

    def on_url(self, url: bytes) -> None:
        if self.stopped:
            return
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            self._reject(414, "URI Too Long", "the request line is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done or self.stopped:
            return  # a trailer field (RFC 9110 §6.5.1): never merged into the headers
        if value and (value[-1] == 32 or value[-1] == 9):
            value = value.rstrip(b" \t")  # trailing whitespace is not part of a value (RFC 9110 §5.5)
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_header_bytes:
            self._head_over()
            return
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        # Compare lengths first: most headers are none of these, and that is cheaper.
        n = len(name)
        if n == 4 and name.lower() == b"host":
            self._hosts += 1
            # A connection's requests repeat one Host: check a value once, not per request.
            if value != self._good_host:
                if valid_host(value):
                    self._good_host = value
                else:
                    self._bad_host = True
        elif n == 14 and name.lower() == b"content-length":
            # llhttp has already refused a malformed or conflicting length.
            self._declared = int(value) if value.isdigit() else 0
        elif n == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        elif n == 17 and name.lower() == b"transfer-encoding" and value.strip().lower() != b"chunked":
            self._bad_coding = True
        elif n == 7 and name.lower() == b"upgrade":
            self._upgrade = True
        elif n == 10 and name.lower() == b"connection":
            self._connection = True

    def on_headers_complete(self) -> None:
        if self.stopped:
            return
        self._head_done = True
        parser = self._parser
        self._method = method = parser.get_method()
        # get_http_version formats a string each time. Without a Connection field llhttp
        # keeps an HTTP/1.1 request alive and no other version it admits (0.9, 1.0, 2.0):
        # then the version is known without asking.
        version = "1.1" if not self._connection and parser.should_keep_alive() else parser.get_http_version()
        self._http10 = http10 = version == "1.0"
        if version != "1.1" and not http10:
            if version == "0.9":
                self._reject(400, "Bad Request", "the request line has no HTTP version")
            else:
                self._reject(505, "HTTP Version Not Supported", f"HTTP/{version} is not supported; use HTTP/1.1")
            return
        # llhttp stops at an upgrade (CONNECT, or Upgrade with Connection: upgrade); ask it
        # only when one is possible.
        if (self._upgrade or method == b"CONNECT") and parser.should_upgrade():
            if method == b"CONNECT":
                self._reject(405, "Method Not Allowed", "CONNECT is not supported: this is not a forward proxy",
                             [("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")])
            else:
                self._reject(400, "Bad Request", "protocol upgrades are not supported")
            return
        if self._hosts != 1:
            if self._hosts > 1:
                self._reject(400, "Bad Request", "the request has more than one Host header")
                return
            if not http10:
                self._reject(400, "Bad Request", "an HTTP/1.1 request must have a Host header")
                return
        if self._bad_host:
            self._reject(400, "Bad Request", "the Host header is not a valid host[:port]")
            return
        if self._bad_coding:
            self._reject(501, "Not Implemented", "only the chunked transfer coding is supported")
            return
        declared = self._declared
        if declared:
            if declared > self.limits.max_body_bytes:
                self._reject(413, "Request Entity Too Large",
                             f"request body of {declared} bytes is over the "
                             f"{self.limits.max_body_bytes}-byte limit")
                return
            budget = self.budget
            if budget.used + declared > budget.cap:
                self._reject(503, "Service Unavailable", "the router is buffering too many request bodies",
                             RETRY_LATER)
                return
        if self._expect_continue and not http10 and declared != 0:
            self.continue_wanted = True

    def on_body(self, body: bytes) -> None:
        if self.stopped:
            return
        n = len(body)
        size = self._held + n
        if size > self.limits.max_body_bytes:
            self._reject(413, "Request Entity Too Large",
                         f"request body is over the {self.limits.max_body_bytes}-byte limit")
            return
        budget = self.budget
        if budget.used + n > budget.cap:
            self._reject(503, "Service Unavailable", "the router is buffering too many request bodies",
                         RETRY_LATER)
            return
        budget.used += n
        self._held = size
        held = self._body
        if held is None:
            self._body = body
        elif isinstance(held, bytearray):
            held += body
        else:
            # A second piece: grow one buffer instead of keeping a list to join later.
            buf = bytearray(held)
            buf += body
            self._body = buf

    def on_message_complete(self) -> None:
        if self.stopped:
            return
        parser = self._parser
        url = self._url
        if url[:1] == b"/" and b"?" not in url and b"#" not in url:
            path, query = url, b""  # the common case, without building a URL object
        elif url == b"*":
            path, query = url, b""  # asterisk-form (RFC 9112 §3.2.4), for OPTIONS
        else:
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                self._reject(400, "Bad Request", "the request target is not a valid URL")
                return
            path, query = parsed.path or b"/", parsed.query or b""
        held = self._body
        request = Request(
            self._method.decode("latin-1"),
            path.decode("latin-1"),
            query.decode("latin-1") if query else "",
            self._headers,
            b"" if held is None else (held if isinstance(held, bytes) else bytes(held)),
        )
        request.held = self._held
        request.http10 = self._http10
        request.keep_alive = keep_alive = parser.should_keep_alive()
        # What the next message needs is set up at its beginning (on_message_begin).
        self._body = None
        self._held = 0
        self.in_message = False
        self.continue_wanted = False
        self.events.append(request)
        if not keep_alive:
            self.stopped = True  # the client said this is the last request (RFC 9112 §9.6)

    # --- rejections -------------------------------------------------------------------
    def _head_over(self) -> None:
        if self._headers or self._head_done:
            self._reject(431, "Request Header Fields Too Large",
                         f"the header block is over {self.limits.max_header_bytes} bytes")
        else:
            self._reject(414, "URI Too Long", "the request line is too long")

    def _reject(self, status: int, error: str, cause: str, headers: list[tuple[str, str]] | None = None) -> None:
        """One error answer for the request being read; nothing after it is parsed."""
        self.stopped = True
        self.continue_wanted = False
        self._drop_body()
        self.in_message = False
        # The method is known once the request target began (llhttp parses it first).
        head_only = bool(self._url) and self._parser is not None and self._parser.get_method() == b"HEAD"
        self.events.append(Rejection(status, error, cause, headers, head_only))

    def _drop_body(self) -> None:
        if self._held:
            self.budget.used -= self._held
            self._held = 0
        self._body = None


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:100]
