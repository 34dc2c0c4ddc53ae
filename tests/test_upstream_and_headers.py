"""Step calls: PROPAGATE_HEADERS, Content-Type default, timeouts, Istio rewrite, stale connections."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from conftest import echo

from graph_router.headers import HeaderPropagator, canonical_name
from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamSettings


def one_step(url: str, **extra: Any) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}}, **extra}


def test_canonical_name_matches_go() -> None:
    """Header names are canonicalised as Go's CanonicalMIMEHeaderKey does before matching."""
    assert canonical_name("x-request-id") == "X-Request-Id"
    assert canonical_name("CONTENT-TYPE") == "Content-Type"
    assert canonical_name("x_custom") == "X_custom"
    assert canonical_name("bad header") == "bad header"


def test_propagator_patterns() -> None:
    """Patterns are unanchored, case-sensitive searches; empty matches all; invalid ones are skipped."""
    assert HeaderPropagator(None).select({"X-Request-Id": "1"}) == {}
    assert set(HeaderPropagator("").select({"X-A": "1", "Authorization": "t"}).keys()) == {"X-A", "Authorization"}
    p = HeaderPropagator("Test-Header-*,(,x-lower")
    sent = p.select([("x-test-header", "1"), ("X-Lower", "2"), ("test-header-b", "3")])
    assert list(sent.items()) == [("x-test-header", "1"), ("test-header-b", "3")]
    assert HeaderPropagator("").select({"Connection": "close", "Host": "h", "Content-Length": "3"}) == {}


async def test_propagate_headers_over_the_wire(start_service: Any, start_router: Any) -> None:
    """Only matching headers reach the step, every value of each; Content-Type defaults to JSON."""
    svc = await start_service({"/m": echo})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              propagate_headers="X-Request-Id,Authorization")
    router = await start_router(one_step(svc.url("/m")), settings=settings)
    async with router.session.post(router.url, data=b"{}", headers=[
        ("x-request-id", "r1"), ("X-Other", "no"), ("Authorization", "a"), ("Authorization", "b"),
        ("Content-Type", "text/plain")], skip_auto_headers=["Content-Type"]) as resp:
        assert resp.status == 200
    got = svc.received[0]
    assert got.header_values("X-Request-Id") == ["r1"]
    assert got.header_values("Authorization") == ["a", "b"]
    assert got.header_values("X-Other") == []
    assert got.header_values("Content-Type") == ["application/json"]


async def test_unset_propagate_headers_sends_nothing(start_service: Any, start_router: Any) -> None:
    """With PROPAGATE_HEADERS unset, no incoming header reaches the step."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")))
    await router.post({"a": 1}, headers={"X-Request-Id": "r1", "Authorization": "secret"})
    assert svc.received[0].header_values("X-Request-Id") == []
    assert svc.received[0].header_values("Authorization") == []


async def test_propagated_content_type_is_kept(start_service: Any, start_router: Any) -> None:
    """A propagated Content-Type replaces the application/json default."""
    svc = await start_service({"/m": echo})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, propagate_headers="Content-Type")
    router = await start_router(one_step(svc.url("/m")), settings=settings)
    await router.post(raw=b"x", headers={"Content-Type": "text/csv"})
    assert svc.received[0].header_values("Content-Type") == ["text/csv"]


async def test_service_client_timeout_fails_step(start_service: Any, start_router: Any) -> None:
    """routerTimeouts.serviceClient bounds each step call; the node fails with 500."""

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    svc = await start_service({"/m": hang})
    router = await start_router(one_step(svc.url("/m"), routerTimeouts={"serviceClient": 1}))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    status, body, _ = await router.post({"a": 1})
    assert status == 500
    assert "timed out" in orjson.loads(body)["cause"]
    assert loop.time() - t0 < 3


async def test_server_write_cuts_long_graph(start_service: Any, start_router: Any) -> None:
    """A graph that outlives routerTimeouts.serverWrite gets its connection closed, no answer."""

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    svc = await start_service({"/m": hang})
    router = await start_router(one_step(svc.url("/m"), routerTimeouts={"serverWrite": 1}))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await router.post({"a": 1})


async def test_istio_sidecar_rewrites_https(start_service: Any, start_router: Any) -> None:
    """With an Istio sidecar answering its admin port, https step URLs are called over http."""
    svc = await start_service({"/m": echo})
    probe = await start_service({"/": (200, b"envoy")})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              upstream=UpstreamSettings(istio_probe_url=probe.url("/")))
    https_url = svc.url("/m").replace("http://", "https://")
    router = await start_router(one_step(https_url), settings=settings)
    assert (await router.post({"a": 1}))[0] == 200
    assert (await router.post({"a": 2}))[0] == 200
    assert len(probe.received) == 1  # asked once
    assert len(svc.received) == 2


async def test_no_istio_keeps_https(start_service: Any, start_router: Any) -> None:
    """Without a sidecar the https URL is used as is (here: a TLS handshake with a plain server fails)."""
    svc = await start_service({"/m": echo})
    dead = await start_service({"/": (404, b"")})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              upstream=UpstreamSettings(istio_probe_url=dead.url("/")))
    router = await start_router(one_step(svc.url("/m").replace("http://", "https://")), settings=settings)
    status, body, _ = await router.post({"a": 1})
    assert status == 500
    assert orjson.loads(body)["error"] == "Failed to process request"
    assert svc.received == []


async def _raw_server(handler: Any) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return await reader.readexactly(length)


async def test_stale_pooled_connection_is_retried_once(start_router: Any) -> None:
    """A pooled connection the service closed without answering is retried once on a fresh one."""
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n"
                         b'{"n": 1}')
            await writer.drain()
            await _read_request(reader)  # the next request on this connection: close, no answer
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server, port = await _raw_server(handle)
    async with server:
        router = await start_router(one_step(f"http://127.0.0.1:{port}/m"))
        assert (await router.post({"a": 1}))[0] == 200
        status, body, _ = await router.post({"a": 2})
        assert (status, body) == (200, b'{"n": 1}')
        assert connections == 2


async def test_answer_cut_mid_body_is_not_retried(start_router: Any) -> None:
    """Once part of the answer arrived, a closed connection fails the step instead of retrying."""
    calls = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial")
        await writer.drain()
        writer.close()

    server, port = await _raw_server(handle)
    async with server:
        router = await start_router(one_step(f"http://127.0.0.1:{port}/m"))
        status, body, _ = await router.post({"a": 1})
        assert status == 500
        assert "closed the connection before answering in full" in orjson.loads(body)["cause"]
        assert calls == 1
