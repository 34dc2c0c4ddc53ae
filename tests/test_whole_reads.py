"""The one-pass reads of a whole answer or request decide exactly as llhttp does.

``ResponseReader`` and ``RequestReader`` read a common message that arrives in one read
(one plain head, one ``Content-Length``, the body to the last byte) in one pass,
without llhttp. Every answer and request stream the differential tests draw (valid,
malformed, pipelined, with interim answers or stray bytes after the end) is fed to two
readers: whole, where the one-pass read may take it, and as its first byte then the
rest, which only llhttp reads. Both must end in the same state with the same events.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_http_differential import ServiceAnswer, Stream, answer_st, stream_st

from graph_router.http1.request_reader import BufferBudget, ReaderLimits, Request, RequestReader
from graph_router.http1.response_reader import BODY, CHUNKED, DONE, ResponseReader


def _read(pieces: list[bytes]) -> tuple[object, ...]:
    reader = ResponseReader(max_head=64 * 1024, max_body=1024 * 1024)
    reader.expect()
    state = 0
    for piece in pieces:
        state = reader.feed(piece)
    body = reader.body() if state == DONE else b""
    return (state, reader.status, reader.content_type, reader.content_encoding, reader.framing, body,
            reader.keep_alive, reader.error_kind)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answer_st())
def test_whole_read_agrees_with_llhttp(answer: ServiceAnswer) -> None:
    data = b"".join(answer.parts)
    assert _read([data]) == _read([data[:1], data[1:]])


def _without_llhttp(data: bytes) -> tuple[object, ...]:
    """Read ``data`` with the reader's llhttp parser removed: only the one-pass read can answer."""
    reader = ResponseReader(max_head=64 * 1024, max_body=1024 * 1024)
    reader.expect()
    reader._parser = None
    state = reader.feed(data)
    return state, reader.status, reader.content_type, reader.content_encoding, reader.body(), reader.keep_alive


def test_common_answers_take_the_one_pass_read() -> None:
    """nginx's and aiohttp's usual answers, field names in any case, are read without llhttp."""
    nginx = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 23:59:00 GMT\r\n"
             b"Content-Type: application/json\r\nContent-Length: 11\r\nLast-Modified: Tue, 01 Dec 2026 23:00:00 GMT\r\n"
             b"Connection: keep-alive\r\nETag: \"6929f0a4-b\"\r\nAccept-Ranges: bytes\r\n\r\n{\"a\": [1]}\n")
    assert _without_llhttp(nginx) == (DONE, 200, "application/json", None, b"{\"a\": [1]}\n", True)
    aiohttp = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
               b"CONTENT-LENGTH: 4\r\ncontent-encoding: identity\r\nconnection: close\r\n\r\nbusy")
    assert _without_llhttp(aiohttp) == (DONE, 503, "text/plain; charset=utf-8", "identity", b"busy", False)
    empty = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert _without_llhttp(empty) == (DONE, 200, None, None, b"", True)


def test_anything_else_goes_to_llhttp() -> None:
    """Answers outside the common shape are left to llhttp (here: it is gone, so reading them fails)."""
    others = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",  # the body is not all here
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabEXTRA",  # bytes after the framed end
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;ext=1\r\na\r\n0\r\n\r\n",  # an extension
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # a chunk not all here
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
        b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Bin: \xff\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    ]
    for data in others:
        reader = ResponseReader(max_head=64 * 1024, max_body=1024 * 1024)
        reader.expect()
        reader._parser = None
        try:
            reader.feed(data)
        except AttributeError:
            continue  # llhttp was asked
        raise AssertionError(f"read without llhttp: {data!r}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=answer_st(), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=4))
def test_chunks_read_here_agree_with_llhttp(answer: ServiceAnswer, cuts: list[int]) -> None:
    """A head read in one pass, then its chunks in reads cut anywhere: decoded here as far
    as they are plain, handed to llhttp from a size line for the rest."""
    data = b"".join(answer.parts)
    head = data.find(b"\r\n\r\n") + 4
    edges = sorted({min(head + cut, len(data)) for cut in cuts})
    pieces = [data[a:b] for a, b in zip([0, *edges], [*edges, len(data)], strict=True) if b > a]
    # The same reads, the first one's first byte alone: llhttp reads all of them.
    assert _read(pieces) == _read([pieces[0][:1], pieces[0][1:], *pieces[1:]])


CHUNKED_BODIES = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\nA\r\n0123456789\r\na\r\n0123456789\r\n00\r\n\r\n",
    b"5\r\nhelloXY0\r\n\r\n",  # no CRLF after the data
    b"5\r\nhello\n0\r\n\r\n",
    b"5\r\nhello\r0\r\n\r\n",
    b"5\r\nhello!\r\n0\r\n\r\n",  # longer than its size
    b"5\nhello\r\n0\r\n\r\n",  # a bare LF after the size
    b"5\rXhello\r\n0\r\n\r\n",  # a bare CR after the size
    b"5\r\nhello\r\n0\rX\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"5;a=b\r\nhello\r\n0\r\n\r\n",
    b"g\r\nhello\r\n0\r\n\r\n",
    b"\r\n5\r\nhello\r\n0\r\n\r\n",
    b"0000000000000005\r\nhello\r\n0\r\n\r\n",
    b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\nEXTRA",
    b"5\r\nhello\r\n0\r\n\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r",
    b"5\r\nhello\r\n0\r\nX",
    b"5\r\nhel",
    b"",
]


@pytest.mark.parametrize("body", CHUNKED_BODIES)
@pytest.mark.parametrize("close", [False, True])
def test_chunks_cut_anywhere_agree_with_llhttp(body: bytes, close: bool) -> None:
    """Plain and malformed chunked bodies, in one, two and three reads cut at every byte:
    the same state, body, keep-alive and error as llhttp reading them all."""
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n" + (b"Connection: close\r\n" if close else b"") + b"\r\n"
    data = head + body
    for limit in (1024, 7):  # 7: the body is over the limit (not a stream)
        def read(pieces: list[bytes], limit: int = limit) -> tuple[object, ...]:
            reader = ResponseReader(max_head=64 * 1024, max_body=limit)
            reader.expect()
            state = 0
            for piece in pieces:
                state = reader.feed(piece)
            return (state, reader.status, reader.framing, reader.body() if state == DONE else b"",
                    reader.keep_alive, reader.error_kind)

        # The reference: the same reads, the first one's first byte alone (llhttp reads all).
        assert read([data]) == read([data[:1], data[1:]])
        for a in range(len(head), len(data)):
            assert read([data[:a], data[a:]]) == read([data[:1], data[1:a], data[a:]]), a
            for b in range(a + 1, len(data)):
                assert read([data[:a], data[a:b], data[b:]]) == read([data[:1], data[1:a], data[a:b], data[b:]]), (a, b)


def test_an_event_stream_takes_the_one_pass_read() -> None:
    """An LLM's streamed answer, each read whole chunks: no byte of it goes to llhttp."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    events = [b"data: {\"a\": %d}\n\n" % k for k in range(20)]
    reads = [head + b"%x\r\n%s\r\n" % (len(events[0]), events[0]),
             b"".join(b"%X\r\n%s\r\n" % (len(e), e) for e in events[1:]), b"0\r\n\r\n"]
    reader = ResponseReader(max_head=64 * 1024, max_body=1024 * 1024)
    reader.expect()
    reader._parser = None
    assert reader.feed(reads[0]) == BODY
    assert (reader.status, reader.content_type, reader.framing, reader.keep_alive) == (200, "text/event-stream",
                                                                                       CHUNKED, False)
    assert reader.feed(reads[1]) == BODY
    assert reader.feed(reads[2]) == DONE
    assert reader.keep_alive
    assert reader.body() == b"".join(events)
    reader.expect()  # the connection's next answer, after a stray byte: not kept alive
    assert reader.feed(reads[0] + b"".join(reads[1:]) + b"\r\n") == DONE
    assert not reader.keep_alive


# --- the request side ------------------------------------------------------------------

def _events(pieces: list[bytes]) -> tuple[object, ...]:
    budget = BufferBudget(1 << 30)
    reader = RequestReader(ReaderLimits(max_header_bytes=8 * 1024, max_body_bytes=64 * 1024), budget)
    for piece in pieces:
        reader.feed(piece)
    seen: list[tuple[object, ...]] = []
    for event in reader.events:
        if isinstance(event, Request):
            seen.append((event.method, event.path, event.query, tuple(event.headers), event.body,
                         event.keep_alive, event.http10, event.head_only, event.held))
        else:
            seen.append((event.status, event.error, event.cause, event.headers, event.head_only))
    return tuple(seen), reader.stopped, reader.continue_wanted, reader.in_message, budget.used


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=stream_st())
def test_whole_request_agrees_with_llhttp(stream: Stream) -> None:
    """A request stream read whole gives the same events as read as its first byte, then the rest."""
    data = stream.data
    assert _events([data]) == _events([data[:1], data[1:]])
    first = stream.requests[0].raw
    assert _events([first]) == _events([first[:1], first[1:]])


def _request_without_llhttp(data: bytes) -> tuple[object, ...]:
    reader = RequestReader(ReaderLimits(), BufferBudget(1 << 30))
    reader._parser = _NoParser()
    reader.feed(data)
    (event,) = reader.events
    assert isinstance(event, Request)
    return event.method, event.path, event.headers, event.body, event.keep_alive, event.held, reader.stopped


class _NoParser:
    """Stands where llhttp was: any use of it fails the test."""

    def feed_data(self, data: bytes) -> None:
        raise AssertionError(f"llhttp was asked: {data!r}")


def test_common_requests_take_the_one_pass_read() -> None:
    """wrk's, curl's and aiohttp's usual requests are read without llhttp."""
    wrk = b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    assert _request_without_llhttp(wrk) == (
        "POST", "/", [("Host", "127.0.0.1:8080"), ("Content-Type", "application/json"), ("Content-Length", "2")],
        b"{}", True, 2, False)
    curl = (b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
            b"Connection: close\r\n\r\n")
    assert _request_without_llhttp(curl)[:2] == ("GET", "/readyz")
    assert _request_without_llhttp(curl)[4:] == (False, 0, True)


def test_other_requests_go_to_llhttp() -> None:
    """Requests outside the common shape are left to llhttp (here: it is gone, so reading them fails)."""
    others = [
        b"POST /?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",  # no Host
        b"POST / HTTP/1.1\r\nHost: a\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a b\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nab",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nabGET / HTTP/1.1\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nX: \x01\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\nHost: a\nContent-Length: 0\n\n",
    ]
    for data in others:
        reader = RequestReader(ReaderLimits(), BufferBudget(1 << 30))
        reader._parser = _NoParser()
        with pytest.raises(AssertionError, match="llhttp was asked"):
            reader.feed(data)
