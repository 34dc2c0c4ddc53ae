"""The lean HTTP/1.1 client against real servers: aiohttp, raw sockets and nginx."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web

from graph_router import httpclient
from graph_router.httpclient import HTTPClient

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.fixture
async def client() -> AsyncIterator[HTTPClient]:
    c = HTTPClient(per_host=4, max_body=1024 * 1024)
    yield c
    await c.close()


async def serve_app(app: web.Application, ssl_context: ssl.SSLContext | None = None) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def test_keepalive_reuses_connections_and_frames_bodies(client: HTTPClient) -> None:
    """Sequential calls reuse one connection; Content-Length, chunked and gzip bodies all arrive whole
    (the gzip one still encoded, with its Content-Encoding)."""
    peers: set[object] = set()

    async def length(request: web.Request) -> web.Response:
        peers.add(request.transport)
        return web.Response(body=await request.read(), content_type="application/json")

    async def chunked(request: web.Request) -> web.StreamResponse:
        peers.add(request.transport)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"part%d;" % i)
        return resp

    async def zipped(request: web.Request) -> web.Response:
        peers.add(request.transport)
        return web.Response(body=gzip.compress(b'{"z": 1}'), headers={"Content-Encoding": "gzip"})

    app = web.Application()
    app.router.add_post("/len", length)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/gzip", zipped)
    runner, port = await serve_app(app)
    try:
        base = f"http://127.0.0.1:{port}"
        a = await client.post(base + "/len", {}, b'{"a": 1}')
        assert (a.status, a.body, a.content_type) == (200, b'{"a": 1}', "application/json")
        assert (await client.post(base + "/chunked", {}, b"")).body == b"part0;part1;part2;"
        zipped_answer = await client.post(base + "/gzip", {}, b"")
        # Relayed as sent (the router decodes only bodies it reads): graph_router.http1.content_coding.
        assert (gzip.decompress(zipped_answer.body), zipped_answer.encoding) == (b'{"z": 1}', "gzip")
        assert len(peers) == 1
    finally:
        await runner.cleanup()


async def test_pool_bounds_connections_per_host(client: HTTPClient) -> None:
    """At most per_host connections are open at once; extra calls wait for a free one."""
    active = 0
    peak = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.1)
        active -= 1
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/", slow)
    runner, port = await serve_app(app)
    try:
        answers = await asyncio.gather(*(client.post(f"http://127.0.0.1:{port}/", {}, b"") for _ in range(10)))
        assert [a.status for a in answers] == [200] * 10
        assert peak == 4
    finally:
        await runner.cleanup()


async def raw_server(reply: bytes, *, close: bool = True) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(5)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_body_delimited_by_close(client: HTTPClient) -> None:
    """An answer without Content-Length or chunking ends when the server closes the connection."""
    server, port = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
    async with server:
        answer = await client.post(f"http://127.0.0.1:{port}/", {}, b"")
        assert answer.body == b"until the end"


async def test_garbage_answer_is_malformed(client: HTTPClient) -> None:
    """Bytes that are not HTTP raise MalformedResponse."""
    server, port = await raw_server(b"SSH-2.0-OpenSSH\r\n\r\n")
    async with server:
        with pytest.raises(httpclient.MalformedResponse):
            await client.post(f"http://127.0.0.1:{port}/", {}, b"")


async def test_answer_over_limit_is_refused(client: HTTPClient) -> None:
    """An answer over max_body raises ResponseTooLarge instead of filling memory."""
    big = b"x" * (2 * 1024 * 1024)
    server, port = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
    async with server:
        with pytest.raises(httpclient.ResponseTooLarge):
            await client.post(f"http://127.0.0.1:{port}/", {}, b"")


async def test_hang_times_out_and_refused_is_connect_error(client: HTTPClient) -> None:
    """A service that never answers hits the timeout; a closed port is a ConnectError."""
    server, port = await raw_server(b"", close=False)
    async with server:
        with pytest.raises(TimeoutError):
            await client.post(f"http://127.0.0.1:{port}/", {}, b"", timeout=0.3)
    with pytest.raises(httpclient.ConnectError):
        await client.post(f"http://127.0.0.1:{port}/", {}, b"")


async def test_https_with_verified_certificate() -> None:
    """https URLs use TLS and verify the server's certificate."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"tls": request.secure})

    app = web.Application()
    app.router.add_post("/", hello)
    runner, port = await serve_app(app, server_ctx)
    trusting = HTTPClient(ssl_context=client_ctx)
    untrusting = HTTPClient()
    try:
        answer = await trusting.post(f"https://127.0.0.1:{port}/", {}, b"")
        assert answer.body == b'{"tls": true}'
        with pytest.raises(httpclient.ConnectError, match="TLS"):
            await untrusting.post(f"https://127.0.0.1:{port}/", {}, b"")
    finally:
        await trusting.close()
        await untrusting.close()
        await runner.cleanup()


@pytest.fixture
def nginx(tmp_path: Path) -> Any:
    """A real nginx on loopback that closes kept-alive connections after 3 requests or 1 s idle."""
    if NGINX is None:
        pytest.skip("nginx is not installed (make test installs it with apt-get where it can)")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; error_log {tmp_path}/error.log; pid {tmp_path}/nginx.pid;
events {{ worker_connections 64; }}
http {{
  access_log off; client_body_temp_path {tmp_path}; keepalive_requests 3; keepalive_timeout 1s;
  server {{ listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{{"from":"nginx"}}'; }} }}
}}""")
    proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path)], stderr=subprocess.PIPE)
    import time

    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1/models/m:predict"
    proc.terminate()
    proc.wait(5)


async def test_nginx_closing_kept_alive_connections(nginx: str) -> None:
    """Against nginx closing connections after 3 requests and after 1 s idle, every call still succeeds."""
    client = HTTPClient(keepalive=30)
    try:
        for _ in range(7):
            answer = await client.post(nginx, {}, b"{}")
            assert (answer.status, answer.body) == (200, b'{"from":"nginx"}')
        await asyncio.sleep(1.3)  # nginx closed the idle connection meanwhile
        answer = await client.post(nginx, {}, b"{}")
        assert answer.status == 200
    finally:
        await client.close()
