# cython: annotation_typing=False
"""Answers from a model service, sans-IO: bytes in, one state out, no sockets, no futures.

:class:`ResponseReader` keeps the framing decisions of RFC 9110/9112 for the client side;
llhttp (through httptools) tokenises. The glue (:class:`graph_router.httpclient._Connection`)
calls :meth:`ResponseReader.expect` when it has written a request, feeds every byte it
receives and acts on the state :meth:`ResponseReader.feed` returns:

- ``HEAD``: the final answer's head has not arrived yet (1xx interim answers stay here).
- ``BODY``: the head is in (``status``, ``content_type``, ``content_encoding``,
  ``framing``); body bytes collect in ``chunks``.
- ``DONE``: the answer ended at its framed end; ``keep_alive`` says whether the
  connection may carry another request.
- ``ERROR``: no usable answer; ``error`` and ``error_kind`` say why. Close the connection.

Any byte that arrives while no answer is outstanding (before ``expect``, or after the
answer's framed end) clears ``keep_alive`` and turns ``IDLE``/``DONE`` into ``UNSOLICITED``:
such a connection is never reused, so a stray answer can never be read as the next
request's (Go's "Unsolicited response received on idle HTTP channel").
"""

from __future__ import annotations

import httptools

from .rules import FieldLine, FieldName, HeadMeter

# States, as feed() returns them.
IDLE = 0
HEAD = 1
BODY = 2
DONE = 3
ERROR = 4
UNSOLICITED = 5

# error_kind values.
MALFORMED = 1
HEAD_TOO_LARGE = 2
BODY_TOO_LARGE = 3
CLOSED = 4

# framing values (RFC 9112 §6.3), known once the head is in.
NO_BODY = 0
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3


# What llhttp is fed before the rest of a chunked answer whose head was read in one
# pass (see ResponseReader._resume): it puts llhttp at the first chunk's size line.
_RESUME = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
_RESUME_CLOSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"


class _Stop(Exception):
    """Raised inside a parser callback to stop llhttp where the reader decided to."""


def _crlf_run(data: bytes) -> int:
    """How many CR and LF bytes ``data`` ends with."""
    i = len(data)
    while i > 0 and (data[i - 1] == 13 or data[i - 1] == 10):
        i -= 1
    return len(data) - i


class ResponseReader:
    """The framing of one connection's answers, one at a time (no pipelining).

    ``max_head``: bytes an answer's header section may take, enforced while it arrives
    (:class:`~graph_router.http1.rules.HeadMeter` for bytes of a head still incomplete,
    plus the fields' own sizes once they are parsed). ``max_body``: bytes of a body
    that is collected whole (not when ``streaming``).
    """

    def __init__(self, max_head: int, max_body: int) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._meter = HeadMeter(max_head)
        self.max_body = max_body
        self.state = IDLE
        self.streaming = False
        self.got_bytes = False
        self.keep_alive = False
        self.error = ""
        self.error_kind = 0
        self.chunks: list[bytes] = []
        self._line = FieldLine()
        self._own = False  # the chunks of this answer are decoded here (see _chunks), not by llhttp
        self._resuming = False  # llhttp is being fed _RESUME
        self._keep = False  # what the head read in one pass says of keep-alive
        self._reset_head()

    def _reset_head(self) -> None:
        self.status = 0
        self.content_type: str | None = None
        self.content_encoding: str | None = None
        self.framing = UNTIL_CLOSE
        self.size = 0
        self._head_size = 0
        self._run = 0
        self._body_run = 0

    def expect(self) -> None:
        """A request was written: the next bytes are its answer."""
        self.state = HEAD
        self.streaming = False
        self.got_bytes = False
        self.keep_alive = False
        self._meter.seen = 0
        self._own = False
        self._reset_head()

    def feed(self, data: bytes) -> int:
        """Parse ``data``; the state afterwards."""
        state = self.state
        if state != HEAD and state != BODY:
            # No answer is outstanding: whatever this is, it answers nobody.
            if state == IDLE or state == DONE:
                self.state = UNSOLICITED
            self.keep_alive = False
            return self.state
        self.got_bytes = True
        rest = data
        if self._own:
            at = self._chunks(data, 0)
            if at < 0:
                self._note_run(data)
                return self.state
            rest = self._resume(data, at)
        elif state == HEAD and self._meter.seen == 0:
            at = self._whole(data)
            if at < 0:
                self._note_run(data)
                return self.state
            if at > 0:
                rest = self._resume(data, at)
        try:
            self._parser.feed_data(rest)
        except httptools.HttpParserUpgrade:
            return self._fail(MALFORMED, "the service asked to upgrade the connection")
        except httptools.HttpParserCallbackError as exc:
            if not isinstance(exc.__context__, _Stop):
                return self._fail(MALFORMED, f"the service's answer is not valid HTTP ({exc})")
        except httptools.HttpParserError as exc:
            if self.state == DONE:  # junk after the framed end: the answer stands
                self.keep_alive = False
                return DONE
            return self._fail(MALFORMED, f"the service's answer is not valid HTTP ({exc})")
        n = len(data)
        self._note_run(data)
        state = self.state
        if state == DONE:
            if self._run and self.keep_alive and self._run > self._end_run():
                self.keep_alive = False  # CR/LF after the framed end, which llhttp skips silently
        elif state == HEAD and self._meter.add(n):
            # A head still incomplete past the limit: cut now, not when its line ends.
            return self._fail(HEAD_TOO_LARGE, self._head_error())
        return state

    def _note_run(self, data: bytes) -> None:
        """Keep count of the CR/LF bytes the stream ends with so far (see _end_run)."""
        n = len(data)
        if n:
            last = data[n - 1]
            if last == 13 or last == 10:
                run = _crlf_run(data)
                self._run = self._run + n if run == n else run
            else:
                self._run = 0

    def _resume(self, data: bytes, at: int) -> bytes:
        """Hand a chunked answer read here so far to llhttp, from the size line at ``at``.

        llhttp is first fed a head of its own (:data:`_RESUME`, which the callbacks
        ignore), so that it stands where this reader stopped: at a chunk's size line.
        From there it reads the rest of the answer as it reads any chunked body.
        """
        self._own = False
        self._resuming = True
        self._parser.feed_data(_RESUME if self._keep else _RESUME_CLOSE)
        self._resuming = False
        return data[at:]

    def _chunks(self, data: bytes, i: int) -> int:
        """Decode the chunks that start at ``i`` (a size line): -1 when all of ``data`` was
        taken (state BODY, DONE or ERROR), or where llhttp must go on from.

        Why: a streamed answer (an LLM's event stream) is chunked, one event a chunk, and
        llhttp called back into Python for every chunk. Taken here: a size line of hex
        digits alone with its CRLF, the chunk's data and CRLF, all in this read; the last
        chunk when the empty line follows it at once. Anything else (an extension, a
        trailer, a chunk split over reads, a malformation) is llhttp's, from the size
        line it starts at, so that every decision stays llhttp's own.
        """
        n = len(data)
        p = data  # compiled: a pointer to the bytes, indexed in C
        while i < n:
            j = i
            size = 0
            while j < n and j - i < 15:
                c = p[j]
                if 48 <= c <= 57:
                    size = size * 16 + (c - 48)
                elif 97 <= c <= 102 or 65 <= c <= 70:
                    size = size * 16 + ((c | 0x20) - 87)
                else:
                    break
                j += 1
            if j == i or j + 1 >= n or p[j] != 13 or p[j + 1] != 10:
                return i
            j += 2
            if size == 0:
                if j + 1 >= n or p[j] != 13 or p[j + 1] != 10:
                    return i  # trailer fields, or the last line is not all here
                self.keep_alive = self._keep and j + 2 == n  # not with bytes after the framed end
                self._own = False
                self.state = DONE
                return -1
            end = j + size
            if end + 1 >= n or p[end] != 13 or p[end + 1] != 10:
                return i
            self.size += size
            if not self.streaming and self.size > self.max_body:
                self._own = False
                self._fail(BODY_TOO_LARGE, f"the answer is over the {self.max_body}-byte limit")
                return -1
            self.chunks.append(data[j:end])
            i = end + 2
        return -1

    def _whole(self, data: bytes) -> int:
        """The common answer, read at once: -1 when ``data`` was it and is taken (the state
        says what it was), 0 when llhttp reads it all, else where llhttp goes on from.

        One read that holds exactly one plain answer: ``HTTP/1.1``, a final status
        other than 204/304, fields of token names and printable ASCII values, a single
        ``Content-Length`` whose body is the rest of ``data``, nothing folded or
        upgraded, within the limits. Or one that holds such a head with a single
        ``Transfer-Encoding: chunked`` instead (a streamed answer): its chunks are
        decoded by :meth:`_chunks`, as far as they are plain. Such a head is read here
        in one pass, with no callback per field. Anything else returns 0 untouched (the
        parser has not seen ``data``), and llhttp reads it, as it reads every other
        answer: this path only ever accepts a subset of what llhttp accepts, and
        decides the same.
        """
        n = len(data)
        p = data  # compiled: a pointer to the bytes, indexed in C
        line = self._line
        if n < 16 or not data.startswith(b"HTTP/1.1 "):
            return 0
        d0 = p[9] - 48
        d1 = p[10] - 48
        d2 = p[11] - 48
        if not (0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9) or p[12] != 32:
            return 0
        status = d0 * 100 + d1 * 10 + d2
        if status < 200 or status > 599 or status == 204 or status == 304:
            return 0
        i = 13
        while i < n and (p[i] == 9 or 32 <= p[i] <= 126):  # the reason phrase
            i += 1
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return 0
        i += 2
        length = -1
        keep_alive = True
        content_type: str | None = None
        content_encoding: str | None = None
        chunked = False
        while True:
            if i + 1 >= n:
                return 0  # the head does not end in this read
            if p[i] == 13:
                if p[i + 1] != 10:
                    return 0
                i += 2
                break  # the empty line: the head ends
            start = i
            i = line.scan(p, i, n)
            if i < 0:
                return 0
            size = line.name_end - start
            if size == 12 and FieldName.equals(p, start, b"content-type", 12):
                content_type = data[line.value_start:line.value_end].decode("latin-1")
            elif size == 14 and FieldName.equals(p, start, b"content-length", 14):
                if length >= 0:
                    return 0  # repeated: llhttp decides
                length = line.number(p)
                if length < 0:
                    return 0  # not a plain number: llhttp decides
            elif size == 16 and FieldName.equals(p, start, b"content-encoding", 16):
                coding = data[line.value_start:line.value_end].decode("latin-1")
                content_encoding = coding if content_encoding is None else content_encoding + ", " + coding
            elif size == 10 and FieldName.equals(p, start, b"connection", 10):
                if line.value_end - line.value_start == 5 and FieldName.equals(p, line.value_start, b"close", 5):
                    keep_alive = False
                elif not (line.value_end - line.value_start == 10
                          and FieldName.equals(p, line.value_start, b"keep-alive", 10)):
                    return 0
            elif size == 17 and FieldName.equals(p, start, b"transfer-encoding", 17):
                if chunked or line.value_end - line.value_start != 7 or not FieldName.equals(
                        p, line.value_start, b"chunked", 7):
                    return 0  # repeated, or another coding: llhttp decides
                chunked = True
            elif size == 7 and FieldName.equals(p, start, b"upgrade", 7):
                return 0
        if i > self._meter.limit:
            return 0  # an oversized head
        if chunked:
            if length >= 0:
                return 0  # both framings: llhttp decides
            self.status = status
            self.content_type = content_type
            self.content_encoding = content_encoding
            self.framing = CHUNKED
            self._keep = keep_alive  # keep_alive itself is set at the end, as llhttp's is
            self.state = BODY
            self._own = True
            return self._chunks(data, i)
        if length < 0 or i + length != n:
            return 0  # no length, a body not all here (or more than it)
        if length > self.max_body and not self.streaming:
            return 0
        self.status = status
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.framing = LENGTH
        self.size = length
        if length:
            self.chunks.append(data[i:])
        self.keep_alive = keep_alive
        self.state = DONE
        return -1

    def _end_run(self) -> int:
        """How many CR/LF bytes the answer itself ends with (RFC 9112 §2.1, §6.3, §7.1).

        A head ends with CRLF CRLF after a non-CR/LF byte; so does a chunked body (after
        the last chunk's size or a trailer field). A Content-Length body ends with its
        own bytes, or, when they are all CR/LF, with them and the head's CRLF CRLF.
        Any more CR/LF at the end of the stream came after the framed end.
        """
        if self.framing == LENGTH and self.size != self._body_run:
            return self._body_run
        return self._body_run + 4

    def eof(self) -> int:
        """The service closed the connection (RFC 9112 §6.3, §9.6).

        DONE: this ended a body delimited by the close; ERROR: an answer was still
        outstanding; IDLE: none was (nothing to report).
        """
        state = self.state
        self.keep_alive = False
        if state == BODY and self.framing == UNTIL_CLOSE:
            self.state = DONE  # a body delimited by the close ends here
            return DONE
        if state == HEAD or state == BODY:
            return self._fail(CLOSED, "the service closed the connection before answering in full")
        return IDLE

    def body(self) -> bytes:
        """The collected body, once; the chunk list is reused for the next answer."""
        chunks = self.chunks
        if not chunks:
            return b""
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return body

    def _fail(self, kind: int, message: str) -> int:
        self.state = ERROR
        self.error_kind = kind
        self.error = message
        self.keep_alive = False
        return ERROR

    def _head_error(self) -> str:
        return f"the answer's header section is over the {self._meter.limit}-byte limit"

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._resuming:
            return  # _RESUME's message: the answer this reader has begun
        if self.state != HEAD:
            # A second message after the framed end (a stray answer in the same read):
            # stop here, the connection is not reusable.
            self.keep_alive = False
            raise _Stop()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state != HEAD:
            return  # trailer fields are never merged into the head (RFC 9110 §6.5.1)
        self._head_size += len(name) + len(value) + 4
        n = len(name)  # compare lengths first: most fields are none of these
        if n == 12 and name.lower() == b"content-type":
            # Trailing whitespace is not part of a value (RFC 9110 §5.5); llhttp keeps it.
            self.content_type = value.rstrip(b" \t").decode("latin-1")
        elif n == 14 and name.lower() == b"content-length":
            if self.framing != CHUNKED:
                self.framing = LENGTH
        elif n == 16 and name.lower() == b"content-encoding":
            # Repeated fields form one list (RFC 9110 §5.3).
            coding = value.decode("latin-1").strip()
            self.content_encoding = coding if self.content_encoding is None else (
                self.content_encoding + ", " + coding)
        elif n == 17 and name.lower() == b"transfer-encoding":
            # Chunked only when it is the final coding (RFC 9112 §6.3, rule 4).
            final = value.rpartition(b",")[2].strip().lower()
            self.framing = CHUNKED if final == b"chunked" else UNTIL_CLOSE

    def on_headers_complete(self) -> None:
        if self._resuming:
            return  # _RESUME's head: the answer's own was read in one pass
        if self._head_size > self._meter.limit:
            self._fail(HEAD_TOO_LARGE, self._head_error())
            raise _Stop()
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim answer (RFC 9110 §15.2): the final one follows
        self.status = status
        if status == 204 or status == 304:  # rules.body_allowed for a final status, inlined
            self.framing = NO_BODY  # 204 and 304 carry none, whatever they declare (RFC 9110 §6.4.1)
        self.state = BODY

    def on_body(self, body: bytes) -> None:
        n = len(body)
        if n and self.framing == LENGTH:
            last = body[n - 1]
            if last == 13 or last == 10:  # the CR/LF run the body ends with, see _end_run
                run = _crlf_run(body)
                self._body_run = self._body_run + n if run == n else run
            else:
                self._body_run = 0
        self.size += n
        if not self.streaming and self.size > self.max_body:
            self._fail(BODY_TOO_LARGE, f"the answer is over the {self.max_body}-byte limit")
            raise _Stop()
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.state != BODY:
            if self.state == HEAD:  # the end of an interim answer
                self._head_size = 0
                self._meter.seen = 0
                self.content_type = self.content_encoding = None
                self.framing = UNTIL_CLOSE
            return
        self.keep_alive = self._parser.should_keep_alive()
        self.state = DONE
