"""The server contract: /readyz, body limits, the CLI entry point, SIGTERM drain."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from conftest import echo

from graph_router.settings import ServerSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_step(url: str) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}}}


async def test_readyz_any_method_empty_body(start_service: Any, start_router: Any) -> None:
    """/readyz answers 200 with an empty body for any method, without running the graph."""
    svc = await start_service({"/m": echo})
    router = await start_router(one_step(svc.url("/m")))
    for method in ("GET", "POST", "HEAD"):
        async with router.session.request(method, router.url + "/readyz") as resp:
            assert resp.status == 200
            assert await resp.read() == b""
    assert svc.received == []


async def test_body_over_limit_is_413_json(start_service: Any, start_router: Any) -> None:
    """A body over the limit gets 413 with a JSON error, declared length or chunked."""
    svc = await start_service({"/m": echo})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, max_body_bytes=1000)
    router = await start_router(one_step(svc.url("/m")), settings=settings)
    status, body, headers = await router.post(raw=b"x" * 2000)
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert "limit" in orjson.loads(body)["cause"]

    async def chunks() -> Any:
        for _ in range(20):
            yield b"y" * 100

    async with aiohttp.ClientSession() as session, session.post(router.url, data=chunks()) as resp:
        assert resp.status == 413
    assert svc.received == []
    assert (await router.post(raw=b"small"))[0] == 200


async def _wait_ready(url: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if proc.returncode is not None:
                raise AssertionError("router exited early")
            try:
                async with session.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("router never became ready")


async def _start_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ},
    )


async def test_sigterm_drains_in_flight_requests(start_service: Any) -> None:
    """On SIGTERM /readyz turns 503, in-flight and drain-time requests finish, then the process exits 0."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({"slow": True})

    svc = await start_service({"/m": slow})
    port = free_port()
    spec = orjson.dumps(one_step(svc.url("/m"))).decode()
    proc = await _start_cli("--graph-json", spec, "--host", "127.0.0.1", "--port", str(port),
                            "--drain-seconds", "1")
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(url, proc)
        async with aiohttp.ClientSession() as session:
            async def call() -> tuple[int, bytes]:
                async with session.post(url, data=b"{}") as resp:
                    return resp.status, await resp.read()

            in_flight = asyncio.create_task(call())
            await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            async with session.get(url + "/readyz") as resp:
                assert resp.status == 503
                assert await resp.text() == "shutting down"
            during_drain = asyncio.create_task(call())
            assert await in_flight == (200, b'{"slow": true}')
            assert await during_drain == (200, b'{"slow": true}')
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_invalid_graph_json_exits_1() -> None:
    """An invalid --graph-json exits 1 with a clear message and no traceback."""
    proc = await _start_cli("--graph-json", "{not json")
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"--graph-json is not valid JSON" in err
    assert b"Traceback" not in err
    proc = await _start_cli("--graph-json", '{"nodes": {"root": {"routerType": "Sequence", "steps": []}}}')
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert b"needs at least one step" in err
