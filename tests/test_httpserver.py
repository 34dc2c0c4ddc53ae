"""The lean HTTP/1.1 server against raw sockets: hostile and slow clients, pipelining, timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from conftest import echo


def one_step(url: str, **timeouts: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}}}
    if timeouts:
        spec["routerTimeouts"] = timeouts
    return spec


async def exchange(url: str, raw: bytes, *, read_for: float = 2.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or ``read_for`` passes)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    await writer.drain()
    data = b""
    try:
        async with asyncio.timeout(read_for):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        pass
    writer.close()
    return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> Any:
    return orjson.loads(answer.split(b"\r\n\r\n", 1)[1])


async def test_malformed_request_gets_400_and_others_are_served(start_service: Any, start_router: Any) -> None:
    """A malformed request line gets a 400 JSON answer and a closed connection; other clients are unaffected."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")))
    bad = await exchange(router.url, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
    assert status_of(bad) == 400
    assert "malformed HTTP request" in body_of(bad)["cause"]
    assert (await router.post({"ok": 1}))[0] == 200


async def test_invalid_header_and_wrong_length(start_service: Any, start_router: Any) -> None:
    """An invalid header name is a 400; a body shorter than Content-Length is cut off by serverRead."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m"), serverRead=1))
    bad = await exchange(router.url, b"POST / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n")
    assert status_of(bad) == 400
    short = await exchange(router.url, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", read_for=4)
    assert status_of(short) == 408
    assert svc.received == []


async def test_huge_headers_get_431(start_service: Any, start_router: Any) -> None:
    """A header block over the limit gets 431 without reaching any step."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")))
    big = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(100))
    answer = await exchange(router.url, b"POST / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert status_of(answer) == 431
    assert svc.received == []


async def test_slowloris_is_cut_by_server_read(start_service: Any, start_router: Any) -> None:
    """A client trickling its headers is cut off at serverRead while a normal client is served."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m"), serverRead=1))
    host, port = router.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = bytearray()

    async def collect() -> float:
        try:
            while chunk := await reader.read(4096):
                received.extend(chunk)
        except ConnectionError:
            pass
        return loop.time()

    reading = asyncio.create_task(collect())
    for i, byte in enumerate(b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40):
        if i == 5:
            assert (await router.post({"meanwhile": 1}))[0] == 200
        if reading.done() or received:
            break
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        await asyncio.sleep(0.1)
    await asyncio.wait_for(reading, 4)
    writer.close()
    assert loop.time() - started < 4
    assert status_of(bytes(received)) == 408


async def test_pipelined_requests_are_answered_in_order(start_service: Any, start_router: Any) -> None:
    """Several requests sent at once on one connection are answered in order."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")))
    raw = b"".join(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (b'{"n":1}', b'{"n":2}', b'{"n":3}')
    ) + b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer = await exchange(router.url, raw)
    bodies = [part for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert len(bodies) == 4
    assert [b.rsplit(b"\r\n\r\n", 1)[1] for b in bodies[:3]] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    assert bodies[3].startswith(b"200 OK")


async def test_expect_continue_and_head(start_service: Any, start_router: Any) -> None:
    """Expect: 100-continue gets an interim 100 before the body is sent; a HEAD request gets headers only."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")))
    host, port = router.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
                 b"Connection: close\r\n\r\n")
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"{}")
    answer = await asyncio.wait_for(reader.read(), 2)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"{}")
    head = await exchange(router.url, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")


async def test_idle_keepalive_connection_is_closed(start_service: Any, start_router: Any) -> None:
    """A kept-alive connection with no new request is closed after serverIdle."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m"), serverIdle=1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await exchange(router.url, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", read_for=5)
    assert status_of(answer) == 200
    assert loop.time() - started < 3


async def test_answers_during_drain_close_their_connection(start_service: Any, start_router: Any) -> None:
    """While draining, every answer says Connection: close, so clients leave kept-alive connections."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")))
    before = await exchange(router.url, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", read_for=0.5)
    assert b"Connection: close" not in before
    assert router.router.http_server is not None
    router.router.http_server.start_draining()
    during = await exchange(router.url, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", read_for=2)
    assert status_of(during) == 200
    assert b"\r\nConnection: close\r\n" in during
