"""The one-pass read of a whole answer decides exactly as llhttp does.

``ResponseReader`` reads a common answer that arrives in one read (one plain head, one
``Content-Length``, the body to the last byte) in one pass, without llhttp. Every
answer the differential tests draw (valid, malformed, with interim answers or stray
bytes after the end) is fed to two readers: whole, where the one-pass read may take it,
and as its first byte then the rest, which only llhttp reads. Both must end in the same
state with the same answer.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from test_http_differential import ServiceAnswer, answer_st

from graph_router.http1.response_reader import DONE, ResponseReader


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
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
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
