"""The router's request handling: every path but /readyz and GET /metrics runs the graph from ``root``.

The request path takes the body as bytes, runs the current plan and writes the answer.
Graph failures become KServe's ``{"error", "cause"}`` body in one place,
``_error_response``. Connection-level rules (timeouts, size limits, malformed HTTP)
belong to :mod:`graph_router.httpserver`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

from multidict import CIMultiDict

from . import compiled_modules
from .errors import AnswerTooLarge, DeadlineExceeded, RequestError, UnreadableAnswer
from .executor import Executor
from .http1 import content_coding
from .http1.request_reader import Request  # not through httpserver: compiled, it cimports Request
from .httpclient import Ready
from .httpserver import HTTPServer, Response, ServerLimits, StreamingResponse, TLSContexts, error_body
from .jsonsyntax import valid as valid_json
from .llm.answer import admit
from .plan import GraphPlan, Timeouts
from .security.auth import Authorizer
from .security.headers import graph_propagator
from .security.tls import ReloadingServerContext, apply_step_tls
from .settings import ServerSettings
from .telemetry import Telemetry, WorkerGroup, tracer_from_env
from .telemetry.recorder import RequestProbe
from .upstream import StepResponse, StepStream, UpstreamClient

logger = logging.getLogger(__name__)

GRAPH_FAILED = "Failed to process request"
JSON = "application/json"

def _error_response(status: int, cause: str, error: str = GRAPH_FAILED) -> Response:
    return Response(status, error_body(error, cause), JSON)


def _refusal_cause(denied: Response) -> str:
    """The log line's cause for an auth refusal: its status and X-Forbidden-Reason."""
    for name, value in denied.headers or ():
        if name == "X-Forbidden-Reason":
            return f"refused ({denied.status}): {value}"
    return f"refused ({denied.status})"


def _content_type(body: bytes) -> str:
    """application/json when Go's json.Valid accepts the body (as KServe); otherwise a plain sniff."""
    if valid_json(body):
        return JSON
    try:
        body.decode("utf-8")
        return "text/plain; charset=utf-8"
    except UnicodeDecodeError:
        return "application/octet-stream"


class _Relay:
    """A step's streamed answer, passed on as it arrives.

    A failure after the first byte cannot change the status any more: an event stream
    ends with an SSE ``event: error`` carrying the usual error body; other bodies are
    cut (the client sees an incomplete chunked answer), and so is an encoded event
    stream (plain text inside compressed bytes would corrupt it). ``aclose`` closes the
    step's connection even if the relay never started (the client left first).
    """

    __slots__ = ("_ended", "_graph", "_sse", "_stream")

    def __init__(self, stream: StepStream, content_type: str | None, graph: str, encoded: bool = False) -> None:
        self._stream = stream
        self._sse = not encoded and (content_type or "").startswith("text/event-stream")
        self._graph = graph
        self._ended = False

    def __aiter__(self) -> _Relay:
        return self

    def ready(self) -> bytes | None:
        """The answer's first bytes when they came with the service's head (None: not yet)."""
        return None if self._ended else self._stream.ready()

    async def __anext__(self) -> bytes:
        if self._ended:
            raise StopAsyncIteration
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            self._ended = True
            raise
        except RequestError as exc:
            self._ended = True
            logger.warning("graph %s: streamed answer failed: %s", self._graph, exc.cause)
            if self._sse:
                return b"event: error\ndata: " + error_body(GRAPH_FAILED, exc.cause) + b"\n\n"
            raise

    async def aclose(self) -> None:
        self._ended = True
        await self._stream.aclose()


def _stream_headers(encoding: str | None) -> list[tuple[str, str]]:
    """A streamed answer's own headers (the probe adds its timing after them)."""
    if encoding is None:
        return [("Cache-Control", "no-cache")]
    return [("Cache-Control", "no-cache"), ("Content-Encoding", encoding)]


class _EarlyHead:
    """Writes the graph's streamed answer's head from the tail step's head callback.

    Time to first byte: the head and the bytes that came with the service's head go out
    in the event-loop callback that read them, before the request's coroutines resume;
    the StreamingResponse the handler returns then goes on after them. Made only when
    nothing else would add to the head (no explain, no span; see Router.handle).
    """

    __slots__ = ("_probe", "_request")

    def __init__(self, probe: RequestProbe, request: Request) -> None:
        self._probe = probe
        self._request = request

    def stream_head(self, status: int, content_type: str | None, encoding: str | None, stream: Ready) -> None:
        probe = self._probe
        connection = self._request.connection
        llm = probe.llm
        if connection is None or (llm is not None and llm.fallback is not None):
            return  # the fallback header is added by probe.end: the usual path writes the head
        headers = _stream_headers(encoding)
        headers.append(probe.timing_now())
        connection.stream_head(self._request, status, content_type or "application/octet-stream", headers, stream)


class Router:
    """Holds the current plan and serves requests with it.

    A new plan is swapped in as one reference: a request keeps the plan it started
    with, the next request takes the new one.
    """

    def __init__(self, settings: ServerSettings, plan: GraphPlan | None, client: UpstreamClient,
                 telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.telemetry = telemetry or Telemetry(explain=settings.explain_header)
        self._plan = plan
        self._series = self.telemetry.bind(plan) if plan is not None else None
        if plan is not None:
            apply_step_tls(client, plan, strict=True)
        self._client = client
        self._executor = Executor(client)
        self._propagator = graph_propagator(settings.propagate_headers, plan.extensions.headers if plan else None)
        self.shutting_down = False
        self._in_flight = 0
        self.http_server: HTTPServer | None = None
        # --enable-auth (security.auth): None, the default, checks nothing.
        self.auth: Authorizer | None = None

    @property
    def plan(self) -> GraphPlan | None:
        return self._plan

    def swap(self, plan: GraphPlan) -> None:
        """Serve ``plan`` from the next request on (its routerTimeouts included)."""
        if not apply_step_tls(self._client, plan, strict=False):
            self.reload_failed()
            return
        self._series = self.telemetry.bind(plan)
        self._propagator = graph_propagator(self.settings.propagate_headers, plan.extensions.headers)
        self._plan = plan
        self.telemetry.metrics.reloads += 1
        if self.http_server is not None:
            self.http_server.limits = self.limits()

    def reload_failed(self) -> None:
        """A new graph was rejected; the current one keeps serving (counted for /metrics)."""
        self.telemetry.metrics.reload_failures += 1

    @property
    def timeouts(self) -> Timeouts:
        return self._plan.timeouts if self._plan is not None else Timeouts()

    def limits(self) -> ServerLimits:
        """Connection limits from the settings and the graph's routerTimeouts."""
        t = self.timeouts
        return ServerLimits(
            read_timeout=t.server_read,
            write_timeout=t.server_write,
            idle_timeout=t.server_idle,
            max_body_bytes=self.settings.max_body_bytes,
            max_buffered_bytes=self.settings.max_buffered_bytes,
        )

    async def handle(self, request: Request) -> Response | StreamingResponse:
        path = request.path
        if path == "/readyz":
            return self._readyz()
        if path == "/metrics" and request.method in ("GET", "HEAD"):
            if self.auth is not None and self.auth.settings.metrics_auth:
                denied = await self.auth.check(request.header("authorization"))
                if denied is not None:
                    return denied
            return await self.telemetry.scrape()
        plan, series = self._plan, self._series
        if plan is None or series is None:
            return _error_response(503, "no graph is loaded yet", error="Service Unavailable")
        probe: RequestProbe = self.telemetry.begin(plan, series, request)
        if self._in_flight >= self.settings.max_in_flight:
            # Shed load at once rather than queue without bound; the client may retry.
            answer = _error_response(503, f"more than {self.settings.max_in_flight} requests in flight",
                                     error="Service Unavailable")
            answer.headers = [("Retry-After", "1")]
            return probe.end(answer, "overloaded")
        if self.auth is not None:  # --enable-auth: a refusal is counted and logged, and runs nothing
            denied = await self.auth.check(request.header("authorization"))
            if denied is not None:
                return probe.end(denied, _refusal_cause(denied))
        if plan.budgets is not None:  # tenant budgets (graph_router/llm): over budget, the graph does not run
            refused = admit(plan.budgets, probe, request.headers)
            if refused is not None:
                return probe.end(*refused)
        headers: CIMultiDict[str] = self._propagator.select(request.headers)
        if probe.extras:
            headers = probe.step_headers(headers)
        # serverWrite is enforced by the HTTP server: past it the connection is closed
        # and this handler cancelled, as Go's WriteTimeout cuts KServe's answer off.
        self._in_flight += 1
        result: StepResponse
        try:
            if plan.deadline is None:
                early = None if probe.extras else _EarlyHead(probe, request)
                result = await self._executor.run(plan, request.body, headers, probe.explain, probe, None, early)
            else:
                result = await self._run_with_deadline(plan, request.body, headers, probe)
        except RequestError as exc:
            return probe.end(_error_response(exc.status, exc.cause), exc.cause)
        except BaseException as exc:
            probe.abandon(exc)
            raise
        finally:
            self._in_flight -= 1
        if result.stream is not None:
            headers_out = _stream_headers(result.content_encoding)
            relay = _Relay(result.stream, result.content_type, plan.name, result.content_encoding is not None)
            return probe.end(StreamingResponse(
                result.status,
                relay,
                result.content_type or "application/octet-stream",
                headers_out,
                relay.ready(),
            ))
        if result.content_encoding is not None:
            try:
                answer = self._encoded_answer(result)
            except RequestError as exc:
                return probe.end(_error_response(exc.status, exc.cause), exc.cause)
            return probe.end(answer)
        return probe.end(Response(result.status, result.body, _content_type(result.body)))

    def _encoded_answer(self, result: StepResponse) -> Response:
        """A step's compressed answer relayed byte for byte, with its Content-Encoding.

        Its content type is sniffed on the decoded bytes (bounded, as every read of an
        answer: a corrupt body or a bomb is a 502); a body in a coding the router cannot
        undo is relayed with the service's own content type.
        """
        encoding = result.content_encoding
        assert encoding is not None
        try:
            plain = content_coding.decode(result.body, encoding, self.settings.upstream.max_response_bytes)
        except content_coding.UnsupportedCoding:
            content_type = result.content_type or "application/octet-stream"
        except content_coding.DecodedTooLarge as exc:
            raise AnswerTooLarge(f"the graph's answer: {exc}") from None
        except content_coding.CodingError as exc:
            raise UnreadableAnswer(f"the graph's answer: {exc}") from None
        else:
            content_type = _content_type(plain)
        return Response(result.status, result.body, content_type, [("Content-Encoding", encoding)])

    async def _run_with_deadline(
        self, plan: GraphPlan, body: bytes, headers: CIMultiDict[str], probe: RequestProbe
    ) -> StepResponse:
        """The graph under the extensions' deadlineSeconds: 504 when it passes."""
        assert plan.deadline is not None
        deadline = asyncio.get_running_loop().time() + plan.deadline
        try:
            async with asyncio.timeout_at(deadline):
                return await self._executor.run(plan, body, headers, probe.explain, probe, deadline)
        except TimeoutError:
            # Step timeouts arrive as UpstreamError: a TimeoutError here is the deadline's.
            raise DeadlineExceeded(f"the request outlived its deadline of {plan.deadline:g}s") from None

    def _readyz(self) -> Response:
        if self.shutting_down:
            return Response(503, b"shutting down", "text/plain; charset=utf-8")
        if self._plan is None:
            return Response(503, b"no graph loaded", "text/plain; charset=utf-8")
        return Response(200)


async def start_server(router: Router, host: str, port: int, *, reuse_port: bool = False,
                       tls: TLSContexts | None = None) -> HTTPServer:
    """Listen for ``router`` on host:port (port 0: any free port); HTTPS with ``tls``."""
    server = HTTPServer(router.handle, router.limits(), tls)
    router.http_server = server
    await server.start(host, port, reuse_port=reuse_port)
    return server


async def start_metrics_server(router: Router, host: str, port: int, *, reuse_port: bool = False) -> HTTPServer:
    """``--metrics-port``: plain HTTP serving only GET /metrics (and /readyz), for scrapers inside the mesh."""

    async def handle(request: Request) -> Response | StreamingResponse:
        if request.path == "/readyz":
            return router._readyz()
        if request.path != "/metrics" or request.method not in ("GET", "HEAD"):
            return _error_response(404, "this port serves only /metrics and /readyz", error="Not Found")
        if router.auth is not None and router.auth.settings.metrics_auth:
            denied = await router.auth.check(request.header("authorization"))
            if denied is not None:
                return denied
        return await router.telemetry.scrape()

    server = HTTPServer(handle, ServerLimits())
    await server.start(host, port, reuse_port=reuse_port)
    return server


async def serve(
    settings: ServerSettings,
    plan: GraphPlan | None,
    *,
    reuse_port: bool = False,
    background: Callable[[Router], Coroutine[Any, Any, None]] | None = None,
    workers: WorkerGroup | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain as KServe does and return.

    ``background``, when given, runs beside the server with the Router (the graph file
    reloader) and is cancelled at shutdown. ``workers``: this process's place among
    ``--workers`` siblings, whose metrics every scrape then adds up.
    """
    client = UpstreamClient(settings.upstream)
    await client.start()
    telemetry = Telemetry(tracer=tracer_from_env(), workers=workers, explain=settings.explain_header)
    await telemetry.start()
    router = Router(settings, plan, client, telemetry)
    security = settings.security
    if security.auth is not None:
        router.auth = Authorizer.for_cluster(security.auth)
    tls = None
    if security.tls_cert_file is not None and security.tls_key_file is not None:
        tls = ReloadingServerContext(security.tls_cert_file, security.tls_key_file)
    server = await start_server(router, settings.host, settings.port, reuse_port=reuse_port, tls=tls)
    metrics_server = None
    if security.metrics_port is not None:
        metrics_server = await start_metrics_server(router, settings.host, security.metrics_port,
                                                    reuse_port=reuse_port)
    # Everything loaded so far lives for the whole process: keep the collector off it,
    # and collect the young generation less often (requests allocate short-lived objects).
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)
    side_task = asyncio.create_task(background(router)) if background is not None else None
    logger.info("graph-router listening on %s:%d (request path: %s)", settings.host, settings.port,
                "compiled" if compiled_modules() else "pure Python")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        router.shutting_down = True
        server.start_draining()
        logger.info("stopping: /readyz answers 503; draining for %gs", settings.drain_seconds)
        await asyncio.sleep(settings.drain_seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(Exception):
                loop.remove_signal_handler(sig)
        if side_task is not None:
            side_task.cancel()
            with suppress(asyncio.CancelledError):
                await side_task
        await server.shutdown(settings.shutdown_timeout)
        if metrics_server is not None:
            await metrics_server.shutdown(1.0)
        if router.auth is not None:
            router.auth.close()
        await client.close()
        await telemetry.close()
        logger.info("graph-router stopped")
