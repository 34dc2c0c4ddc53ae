# cython: annotation_typing=False
"""The gRPC front: ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health`` for a graph.

``serve --grpc-port N`` runs it beside the HTTP server, in the same process and event
loop, on the same :class:`~graph_router.server.Router`: the same plan (reloads
included), executor, upstream client, breakers and ``PROPAGATE_HEADERS`` rules.

``ModelInfer`` on the graph's name runs the graph. Its body arrives as bytes:

- when every step the graph can run is a gRPC step that gets the request as it is
  (:func:`passes_protobuf`), the bytes go on untouched to the step and the step's answer
  comes back untouched (no parse; the one copy of the tensors is the join of the
  request's DATA frames, and the model is renamed by sending a second piece after it);
- otherwise the request is converted once to V2 JSON, the graph runs as for a REST
  client, and its JSON answer is converted to a ``ModelInferResponse``.

Graph failures become the gRPC status KServe maps their HTTP status to, with the cause
as message. The client's deadline caps the graph's own ``deadlineSeconds``.

In clear text the methods are served by graph_router.grpc.server (our own HTTP/2);
with the TLS flags by grpc.aio. Both call the same methods: bytes in, bytes out.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import orjson
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2

from .. import __version__
from ..errors import DeadlineExceeded, RequestError
from ..spec import RouterType
from . import convert, status, wire
from ._proto import grpc_predict_v2_pb2 as pb
from .server import Abort, Call, LeanServer, Streaming, Unary
from .steps import PROTO_ANSWER, RAW_REQUEST, close_channels
from .urls import PREFIXES
from .wire import request_model

if TYPE_CHECKING:
    from ..plan import GraphPlan
    from ..server import Router
    from ..settings import ServerSettings
    from ..upstream import StepResponse

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_WATCH_POLL_SECONDS = 0.5

Context = grpc.aio.ServicerContext[Any, Any]


def passes_protobuf(plan: GraphPlan) -> bool:
    """Whether the front's protobuf bytes can go to the steps untouched.

    True when nothing in the graph reads a body as JSON and every step that can run
    calls a gRPC service with the graph's request: Sequence and Splitter nodes only
    (a Switch tests conditions, an Ensemble merges JSON), no conditions, templates,
    ``mapPredictionsToInstances``, ``v2OutputsToInputs`` or ``data: $response``.
    """
    for node in plan.nodes.values():
        if node.kind not in (RouterType.SEQUENCE, RouterType.SPLITTER):
            return False
        for step in node.steps:
            if (step.condition is not None or step.template is not None or step.map_predictions
                    or step.v2_rename is not None or step.use_response):
                return False
            if step.node is None and not (step.url or "").startswith(PREFIXES):
                return False
    return True


def _message(body: bytes) -> str:
    """The status message for an error answer: its ``cause``, else ``error``, else the text."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:2000]
    if isinstance(doc, dict):
        for key in ("cause", "error", "detail", "message"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    return body.decode("utf-8", "replace")[:2000]


def _answer(body: bytes, content_type: str | None) -> bytes:
    """The graph's successful answer as a serialized ModelInferResponse."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        # Not JSON at all (a text or binary step answer): carried whole as one BYTES output.
        response = pb.ModelInferResponse()
        out = response.outputs.add(name="body", datatype="BYTES", shape=[1])
        out.parameters["content_type"].string_param = content_type or "application/octet-stream"
        response.raw_output_contents.append(struct.pack("<I", len(body)) + body)
        return response.SerializeToString()
    return convert.json_to_response(doc).SerializeToString()


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _code(http: int) -> int:
    """The gRPC status number for the graph's HTTP status."""
    return int(status.grpc_code(http).value[0])


class GRPCFront:
    """The gRPC server of one router process.

    Plain text: our own HTTP/2 (graph_router.grpc.server), since grpc.aio's server costs
    about 185 µs of CPU per call. With the TLS flags: grpc.aio, which does TLS and its
    certificate rotation. The methods are the same for both: bytes in, bytes out,
    failures raised as :class:`Abort`.
    """

    def __init__(self, router: Router) -> None:
        self._router = router
        self._server: grpc.aio.Server | None = None
        self._lean: LeanServer | None = None
        self._raw_for: tuple[GraphPlan | None, bool] = (None, False)
        self._methods: dict[str, Unary] = {
            f"/{SERVICE}/ServerLive": self.server_live,
            f"/{SERVICE}/ServerReady": self.server_ready,
            f"/{SERVICE}/ModelReady": self.model_ready,
            f"/{SERVICE}/ServerMetadata": self.server_metadata,
            f"/{SERVICE}/ModelMetadata": self.model_metadata,
            f"/{SERVICE}/ModelInfer": self.model_infer,
            f"/{HEALTH_SERVICE}/Check": self.health_check,
        }
        self._streams: dict[str, Streaming] = {f"/{HEALTH_SERVICE}/Watch": self.health_watch}

    def _ready(self) -> bool:
        return self._router.plan is not None and not self._router.shutting_down

    def _passes_protobuf(self, plan: GraphPlan) -> bool:
        seen, answer = self._raw_for
        if seen is not plan:  # a reload swapped the plan in: decide once for it
            answer = passes_protobuf(plan)
            self._raw_for = (plan, answer)
        return answer

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: any free port); returns the port."""
        settings: ServerSettings = self._router.settings
        security = settings.security
        if security.tls_cert_file is None or security.tls_key_file is None:
            lean = LeanServer(self._methods, self._streams, max_message=settings.max_body_bytes,
                              max_in_flight=settings.max_in_flight or 1 << 30)
            try:
                bound = await lean.start(host, port)
            except OSError as exc:
                raise OSError(exc.errno or errno.EADDRINUSE,
                              f"cannot listen for gRPC on {host}:{port}: {exc}") from None
            self._lean = lean
            return bound
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 1),  # --workers: every worker listens on the port
            ],
            maximum_concurrent_rpcs=settings.max_in_flight,
        )
        server.add_generic_rpc_handlers((self._aio_handlers(),))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        from ..security.grpc_tls import server_credentials  # the front serves TLS as HTTP does

        try:
            bound = server.add_secure_port(address, server_credentials(security.tls_cert_file, security.tls_key_file))
        except RuntimeError as exc:
            raise OSError(errno.EADDRINUSE, f"cannot listen for gRPC on {address}: {exc}") from None
        if bound == 0:
            raise OSError(errno.EADDRINUSE, f"cannot listen for gRPC on {address}")
        await server.start()
        self._server = server
        return bound

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls; let those in flight finish for ``grace`` seconds."""
        if self._lean is not None:
            await self._lean.stop(grace)
            self._lean = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await close_channels()

    def _aio_handlers(self) -> grpc.GenericRpcHandler:
        """The same methods for grpc.aio (the TLS front): bytes both ways, Abort as context.abort."""
        loop = asyncio.get_running_loop()

        def call_of(raw: bytes, context: Context) -> Call:
            remaining = context.time_remaining()
            metadata = [(k, v) for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)]
            return Call(raw, metadata, None if remaining is None else loop.time() + remaining, loop)

        def unary(method: Unary) -> grpc.RpcMethodHandler[Any, Any]:
            async def behavior(raw: bytes, context: Context) -> bytes:
                try:
                    return await method(call_of(raw, context))
                except Abort as exc:
                    await context.abort(_CODES.get(exc.code, grpc.StatusCode.UNKNOWN), exc.message)
                raise AssertionError("unreachable")

            return grpc.unary_unary_rpc_method_handler(behavior)

        def streaming(method: Streaming) -> grpc.RpcMethodHandler[Any, Any]:
            async def behavior(raw: bytes, context: Context) -> AsyncIterator[bytes]:
                try:
                    async for message in method(call_of(raw, context)):
                        yield message
                except Abort as exc:
                    await context.abort(_CODES.get(exc.code, grpc.StatusCode.UNKNOWN), exc.message)

            return grpc.unary_stream_rpc_method_handler(behavior)

        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for path, method in self._methods.items():
            handlers[path] = unary(method)
        for path, stream_method in self._streams.items():
            handlers[path] = streaming(stream_method)

        class Generic(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
                return handlers.get(details.method)

        return Generic()

    # --- inference.GRPCInferenceService ---------------------------------------------

    async def server_live(self, call: Call) -> bytes:
        return _LIVE

    async def server_ready(self, call: Call) -> bytes:
        """False while draining after SIGTERM, as /readyz answers 503."""
        return pb.ServerReadyResponse(ready=self._ready()).SerializeToString()

    def _known(self, name: str) -> GraphPlan:
        plan = self._router.plan
        if plan is None:
            raise Abort(wire.UNAVAILABLE, "no graph is loaded yet")
        if name != plan.name:
            raise Abort(wire.NOT_FOUND, f"model {name!r} is not served here: this router serves graph {plan.name!r}")
        return plan

    async def model_ready(self, call: Call) -> bytes:
        self._known(_parse(pb.ModelReadyRequest, call.request).name)
        return pb.ModelReadyResponse(ready=self._ready()).SerializeToString()

    async def server_metadata(self, call: Call) -> bytes:
        return pb.ServerMetadataResponse(name="graph-router", version=__version__).SerializeToString()

    async def model_metadata(self, call: Call) -> bytes:
        """The graph as a model; its tensors are its steps' business, so none are listed."""
        plan = self._known(_parse(pb.ModelMetadataRequest, call.request).name)
        return pb.ModelMetadataResponse(name=plan.name, platform="graph-router").SerializeToString()

    async def model_infer(self, call: Call) -> bytes:
        router = self._router
        plan = self._plan_for(call)
        if router.auth is not None:  # --enable-auth: the same check as HTTP, on the authorization metadata
            denied = await router.auth.check(next((v for k, v in call.metadata if k == "authorization"), None))
            if denied is not None:
                raise Abort(_code(denied.status), orjson.loads(denied.body)["cause"])
        body, headers, raw_mode = self._request(plan, call)
        token = _set_raw_request(body if raw_mode else None)
        try:
            if _unbounded(plan, call):  # no deadline: one coroutine level fewer
                result = await router._executor.run(plan, body, headers)
            else:
                result = await self._run(plan, body, headers, call.time_remaining())
            answer = _whole(result)
            if answer is None:
                answer = await result.whole()
        except RequestError as exc:
            raise Abort(_code(exc.status), exc.cause) from None
        finally:
            _reset_raw_request(token)
        return _reply(result, answer)

    def _plan_for(self, call: Call) -> GraphPlan:
        """The served graph's plan, when the call's ModelInferRequest names it (else Abort)."""
        plan = self._router.plan
        if plan is None:
            raise Abort(wire.UNAVAILABLE, "no graph is loaded yet")
        try:
            name = request_model(call.request)
        except ValueError as exc:
            raise Abort(wire.INVALID_ARGUMENT, f"the request is not a ModelInferRequest: {exc}") from None
        if name != plan.name:
            raise Abort(wire.NOT_FOUND, f"model {name!r} is not served here: this router serves graph {plan.name!r}")
        return plan

    def _request(self, plan: GraphPlan, call: Call) -> tuple[bytes, Any, bool]:
        """What the graph runs on: the body (the request's protobuf itself when the graph can
        pass it on, else V2 JSON), the headers to propagate, and whether the body is the protobuf.

        A C method (with _plan_for): the synchronous part of every ModelInfer call.
        """
        headers = self._router._propagator.select(call.metadata)
        seen, raw_mode = self._raw_for
        if seen is not plan:
            raw_mode = self._passes_protobuf(plan)
        if raw_mode:
            return call.request, headers, True
        try:
            body = orjson.dumps(convert.request_to_json(pb.ModelInferRequest.FromString(call.request)))
        except (convert.ConversionError, DecodeError) as exc:
            raise Abort(wire.INVALID_ARGUMENT, str(exc)) from None
        return body, headers, False

    async def _run(self, plan: GraphPlan, body: bytes, headers: Any, client_seconds: float | None) -> StepResponse:
        """The graph under the tighter of its deadlineSeconds and the client's deadline."""
        limits = [s for s in (plan.deadline, client_seconds) if s is not None]
        executor = self._router._executor
        if not limits:
            return await executor.run(plan, body, headers)
        seconds = min(limits)
        deadline = asyncio.get_running_loop().time() + seconds
        try:
            async with asyncio.timeout_at(deadline):
                return await executor.run(plan, body, headers, None, None, deadline)
        except TimeoutError:
            raise DeadlineExceeded(f"the request outlived its deadline of {seconds:g}s") from None

    # --- grpc.health.v1.Health ------------------------------------------------------

    def _health(self, service: str) -> int | None:
        if service not in ("", SERVICE):
            return None
        return int(_SERVING if self._ready() else _NOT_SERVING)

    async def health_check(self, call: Call) -> bytes:
        service = _parse(health_pb2.HealthCheckRequest, call.request).service
        found = self._health(service)
        if found is None:
            raise Abort(wire.NOT_FOUND, f"unknown service {service!r}")
        return bytes(health_pb2.HealthCheckResponse(status=found).SerializeToString())

    async def health_watch(self, call: Call) -> AsyncIterator[bytes]:
        """The status now, then each change (checked twice a second) until the client leaves."""
        service = _parse(health_pb2.HealthCheckRequest, call.request).service
        last = None
        while True:
            found = self._health(service)
            now = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN if found is None else found
            if now != last:
                last = now
                yield health_pb2.HealthCheckResponse(status=now).SerializeToString()
            await asyncio.sleep(_WATCH_POLL_SECONDS)


_LIVE = pb.ServerLiveResponse(live=True).SerializeToString()

# RAW_REQUEST's methods, bound once: looked up on the ContextVar, each call would make a bound method.
_set_raw_request = RAW_REQUEST.set
_reset_raw_request = RAW_REQUEST.reset


# ModelInfer's synchronous steps around the graph's run, as C functions compiled: the call's and
# the result's fields are then read in C rather than looked up as Python attributes.

def _unbounded(plan: GraphPlan, call: Call) -> bool:
    """Whether neither the graph nor the client set a deadline."""
    return plan.deadline is None and call.deadline is None


def _whole(result: StepResponse) -> bytes | None:
    """What ``result.whole()`` answers when that needs no reading or decoding (else None),
    without a coroutine per call."""
    if result.stream is None and result.content_encoding is None:
        return result.body
    return None


def _reply(result: StepResponse, answer: bytes) -> bytes:
    """The ModelInferResponse for the graph's result (its whole body ``answer``), or Abort."""
    if not 200 <= result.status <= 299:  # not result.ok (a property: a Python call)
        raise Abort(_code(result.status), _message(answer))
    if result.content_type == PROTO_ANSWER:
        return answer
    try:
        return _answer(answer, result.content_type)
    except convert.ConversionError as exc:
        raise Abort(wire.INTERNAL, f"the graph's answer cannot be a ModelInferResponse: {exc}") from None


def _parse(kind: Any, raw: bytes) -> Any:
    try:
        return kind.FromString(raw)
    except DecodeError as exc:
        raise Abort(wire.INVALID_ARGUMENT, f"the request is not a {kind.__name__}: {exc}") from None


def with_grpc(background: Callable[[Router], Coroutine[Any, Any, None]], host: str, port: int,
              ) -> Callable[[Router], Coroutine[Any, Any, None]]:
    """``serve``'s beside-the-server task, with a gRPC front listening on ``port`` for its lifetime.

    The task is cancelled when the HTTP server stops (after the drain): the gRPC server
    then refuses new calls and lets those in flight finish, as the HTTP server does.
    """

    async def run(router: Router) -> None:
        front = GRPCFront(router)
        bound = await front.start(host, port)
        logger.info("gRPC (Open Inference Protocol v2) listening on %s:%d", host, bound)
        try:
            await background(router)
            await asyncio.Event().wait()  # until cancelled at shutdown
        finally:
            await asyncio.shield(front.stop(router.settings.shutdown_timeout))

    return run
