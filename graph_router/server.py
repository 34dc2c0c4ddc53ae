"""The HTTP server: every path but /readyz runs the graph from ``root``.

Built on aiohttp's low-level server (no router, no middleware chain): the request
path reads the body as bytes, runs the current plan and writes the answer. Errors
become KServe's ``{"error", "cause"}`` body in one place, ``_error_response``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress

import orjson
from aiohttp import web

from .errors import ClientRequestError, RequestError
from .executor import Executor
from .headers import HeaderPropagator
from .plan import GraphPlan, Timeouts
from .settings import ServerSettings
from .upstream import UpstreamClient

logger = logging.getLogger(__name__)

GRAPH_FAILED = "Failed to process request"
JSON = "application/json"


def _error_response(status: int, cause: str, error: str = GRAPH_FAILED) -> web.Response:
    body = orjson.dumps({"error": error, "cause": cause})
    return web.Response(status=status, body=body, headers={"Content-Type": JSON})


def _content_type(body: bytes) -> str:
    """application/json for valid JSON (as KServe); otherwise a plain sniff, like Go's."""
    try:
        orjson.loads(body)
        return JSON
    except orjson.JSONDecodeError:
        pass
    try:
        body.decode("utf-8")
        return "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        return "application/octet-stream"


class Router:
    """Holds the current plan and serves requests with it.

    A new plan is swapped in as one reference: a request keeps the plan it started
    with, the next request takes the new one.
    """

    def __init__(self, settings: ServerSettings, plan: GraphPlan | None, client: UpstreamClient) -> None:
        self.settings = settings
        self._plan = plan
        self._client = client
        self._executor = Executor(client)
        self._propagator = HeaderPropagator(settings.propagate_headers)
        self.shutting_down = False

    @property
    def plan(self) -> GraphPlan | None:
        return self._plan

    def swap(self, plan: GraphPlan) -> None:
        """Serve ``plan`` from the next request on."""
        self._plan = plan

    @property
    def timeouts(self) -> Timeouts:
        return self._plan.timeouts if self._plan is not None else Timeouts()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path == "/readyz":
            return self._readyz()
        plan = self._plan
        if plan is None:
            return _error_response(503, "no graph is loaded yet", error="Service Unavailable")
        try:
            async with asyncio.timeout(plan.timeouts.server_read):
                body = await self._read_body(request)
        except TimeoutError:
            return _error_response(408, "the request body did not arrive in time", error="Request Timeout")
        except RequestError as exc:
            return _error_response(exc.status, exc.cause, error="Bad Request")
        headers = self._propagator.select(request.headers)
        try:
            async with asyncio.timeout(plan.timeouts.server_write):
                result = await self._executor.run(plan, body, headers)
        except TimeoutError:
            # Go's WriteTimeout: the client sees the connection close, not an answer.
            logger.warning("graph %s outlived serverWrite (%.0fs); closing the connection",
                           plan.name, plan.timeouts.server_write)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=504)
        except RequestError as exc:
            logger.warning("graph %s failed: %s", plan.name, exc.cause)
            return _error_response(exc.status, exc.cause)
        except Exception:
            logger.exception("graph %s: unexpected error", plan.name)
            return _error_response(500, "internal error in the router")
        return web.Response(
            status=result.status, body=result.body, headers={"Content-Type": _content_type(result.body)}
        )

    def _readyz(self) -> web.Response:
        if self.shutting_down:
            return web.Response(status=503, text="shutting down")
        if self._plan is None:
            return web.Response(status=503, text="no graph loaded")
        return web.Response(status=200)

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.settings.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise ClientRequestError(f"request body of {length} bytes is over the {limit}-byte limit", 413)
        chunks = []
        size = 0
        async for chunk in request.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise ClientRequestError(f"request body is over the {limit}-byte limit", 413)
            chunks.append(chunk)
        return b"".join(chunks)


def make_server(router: Router) -> web.Server:
    """The aiohttp low-level server for ``router``: cancel handlers whose client left."""
    return web.Server(
        router.handle,
        handler_cancellation=True,
        keepalive_timeout=router.timeouts.server_idle,
        auto_decompress=False,
        access_log=None,
    )


async def serve(settings: ServerSettings, plan: GraphPlan | None, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT, then drain as KServe does and return."""
    client = UpstreamClient(settings.upstream)
    await client.start()
    router = Router(settings, plan, client)
    runner = web.ServerRunner(make_server(router), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner, settings.host, settings.port, shutdown_timeout=settings.shutdown_timeout, reuse_port=reuse_port
    )
    await site.start()
    logger.info("graph-router listening on %s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        router.shutting_down = True
        logger.info("stopping: /readyz answers 503; draining for %.0fs", settings.drain_seconds)
        await asyncio.sleep(settings.drain_seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(Exception):
                loop.remove_signal_handler(sig)
        await runner.cleanup()
        await client.close()
        logger.info("graph-router stopped")
