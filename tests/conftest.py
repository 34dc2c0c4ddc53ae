"""Shared fixtures: real loopback HTTP servers standing in for models, and the real router.

Model stand-ins are aiohttp servers with inline handlers that record what crossed the
wire; the router under test is the real app factory on its own loopback port.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from graph_router.httpserver import HTTPServer
from graph_router.loader import load_graph_json
from graph_router.plan import compile_graph
from graph_router.server import Router, start_server
from graph_router.settings import ServerSettings
from graph_router.telemetry import Telemetry
from graph_router.upstream import UpstreamClient, UpstreamSettings

SHARED = Path(os.environ.get("GRAPH_ROUTER_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@dataclass
class Received:
    """One request a stand-in service received."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Service:
    """A running stand-in model service."""

    base: str
    received: list[Received] = field(default_factory=list)

    def url(self, path: str = "/") -> str:
        return self.base + path


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def start_service() -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    """Start loopback services: ``await start_service({"/path": handler, ...})``.

    A handler may be a coroutine function, or a (status, body) tuple for fixed answers.
    Every request is recorded before its handler runs.
    """
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Any]) -> Service:
        service = Service(base="")

        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            body = await request.read()
            service.received.append(
                Received(request.method, request.path_qs, list(request.raw_headers and
                         [(k.decode(), v.decode()) for k, v in request.raw_headers]), body)
            )
            return await handler(request)

        app = web.Application(middlewares=[record], client_max_size=64 * 1024 * 1024)
        for path, answer in routes.items():
            app.router.add_route("*", path, _as_handler(answer))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        service.base = f"http://127.0.0.1:{port}"
        runners.append(runner)
        return service

    yield start
    for runner in runners:
        await runner.cleanup()


def _as_handler(answer: Any) -> Handler:
    if callable(answer):
        return answer  # type: ignore[no-any-return]
    status, body = answer
    raw = body if isinstance(body, bytes) else orjson.dumps(body)

    async def fixed(request: web.Request) -> web.Response:
        return web.Response(status=status, body=raw, content_type="application/json")

    return fixed


async def wait_ready(session: aiohttp.ClientSession, url: str, tries: int = 200) -> None:
    """Poll ``url``/readyz until the router started as a subprocess answers 200."""
    for _ in range(tries):
        try:
            async with session.get(url.rstrip("/") + "/readyz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never became ready")


async def echo(request: web.Request) -> web.Response:
    """Answers with the request body, as it came."""
    return web.Response(body=await request.read(), content_type="application/json")


@dataclass
class RunningRouter:
    """The router under test on loopback, with a client session to call it."""

    url: str
    router: Router
    session: aiohttp.ClientSession

    async def post(self, body: Any = None, *, raw: bytes | None = None,
                   headers: dict[str, str] | None = None, path: str = "/") -> tuple[int, bytes, Any]:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
        async with self.session.post(self.url + path, data=data, headers=headers) as resp:
            content = await resp.read()
            return resp.status, content, resp.headers


@pytest.fixture
async def start_router() -> AsyncIterator[Callable[..., Awaitable[RunningRouter]]]:
    """Start the real router for a spec dict: ``await start_router(spec, **settings)``."""
    stack: list[tuple[HTTPServer, UpstreamClient, aiohttp.ClientSession, Telemetry]] = []

    async def start(spec: dict[str, Any], *, name: str = "test", settings: ServerSettings | None = None,
                    services: dict[str, str] | None = None, telemetry: Telemetry | None = None,
                    **overrides: Any) -> RunningRouter:
        plan = compile_graph(load_graph_json(orjson.dumps(spec).decode(), name=name), services)
        if settings is None:
            settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, **overrides)
        client = UpstreamClient(settings.upstream)
        await client.start()
        router = Router(settings, plan, client, telemetry)
        await router.telemetry.start()
        server = await start_server(router, "127.0.0.1", 0)
        session = aiohttp.ClientSession()
        stack.append((server, client, session, router.telemetry))
        return RunningRouter(f"http://127.0.0.1:{server.port}", router, session)

    yield start
    for server, client, session, telemetry in stack:
        await session.close()
        await server.shutdown(2)
        await client.close()
        await telemetry.close()


__all__ = ["SHARED", "Received", "RunningRouter", "Service", "UpstreamSettings", "asyncio", "echo"]
