# cython: annotation_typing=False
"""gRPC steps: ``ModelInfer`` calls on ``grpc://`` / ``grpcs://`` service URLs.

:class:`~graph_router.upstream.UpstreamClient` hands every call to a gRPC URL to
:func:`call`, inside its own retry and deadline loop, so step timeouts, retries and the
request deadline apply as to REST steps; the circuit breakers are the same objects.

One connection per target (scheme and authority) and event loop, kept for the life of
the process: HTTP/2 multiplexes every concurrent call on it. ``grpc://`` calls go over
graph_router.grpc.client (our own HTTP/2: grpc.aio's per-call cost is several times the
whole REST path's); ``grpcs://`` calls over a grpc.aio channel, which does the TLS. Requests and answers cross the
channel as bytes (no serializer), so a body the gRPC front received can be passed on
as it came (:data:`RAW_REQUEST`) and an answer handed back the same way.

What a node sees is V2 JSON: a JSON request is converted to protobuf here and the
answer back to JSON; a non-OK status becomes the HTTP status KServe documents for it
with ``{"error": details}`` as body, so ``dependency: Hard`` and ``retryOn`` read it as
they read a REST answer. Transport failures (no connection, our own timeout) raise
:class:`UpstreamError`, as for REST steps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import grpc
import grpc.aio
import orjson
from google.protobuf.message import DecodeError

from ..breaker import BREAKING_STATUSES, CircuitBreakers
from ..errors import AnswerTooLarge, CircuitOpen, RequestError, UnreadableAnswer, UpstreamError
from ..upstream import StepResponse
from . import convert, status, urls, wire
from ._proto import grpc_predict_v2_pb2 as pb
from .client import Channel, RPCError

logger = logging.getLogger(__name__)

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"

# The content type a step answer carries when its body is a serialized
# ModelInferResponse handed back untouched (only for a RAW_REQUEST call).
PROTO_ANSWER = "application/grpc+proto; message=inference.ModelInferResponse"

# Set by the gRPC front, for one request, to the serialized ModelInferRequest it
# received, when the graph can pass it on untouched (see front.passes_protobuf). A
# step whose body *is* that object sends it on as bytes and answers in bytes
# (PROTO_ANSWER): no parse, no JSON. Any other body is V2 JSON.
RAW_REQUEST: ContextVar[bytes | None] = ContextVar("graph_router_grpc_raw_request", default=None)
_get_raw_request = RAW_REQUEST.get  # bound once: a per-call lookup would make a bound method each time

# gRPC UNAVAILABLE details that mean no server ever saw the call (a transport error,
# retried and counted as REST connection failures are), not a server's own answer.
_TRANSPORT_HINTS = ("failed to connect", "connection refused", "socket closed", "connection reset",
                    "connections to all backends failing", "no route to host", "name resolution",
                    "dns resolution failed", "handshake", "ssl")

# Metadata a gRPC client library sets itself, or that HTTP/2 forbids.
_RESERVED = frozenset({"content-type", "te", "user-agent", "host", "connection", "grpc-timeout",
                       "grpc-encoding", "grpc-accept-encoding"})


class ConversionFailed(RequestError):
    """A step's request cannot be written as a ModelInferRequest (it is not V2 JSON)."""

    status = 400


class _Channels:
    """This event loop's channels, one per target, and their ModelInfer callables."""

    def __init__(self, max_response_bytes: int) -> None:
        self._max = max_response_bytes
        self._calls: dict[tuple[bool, str], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._channels: list[grpc.aio.Channel] = []

    def infer(self, target: urls.GRPCTarget, tls: Any = None) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        """``tls``: the step's own settings (security.tls.ClientTLS); its key joins the channel's."""
        key = (target.secure, target.authority if tls is None else f"{target.authority} {tls.key}")
        method = self._calls.get(key)
        if method is None:
            options = [
                ("grpc.max_receive_message_length", self._max),
                ("grpc.max_send_message_length", -1),
                ("grpc.enable_retries", 0),  # the step's policy retries, inside the deadline
                ("grpc.keepalive_time_ms", 30_000),
            ]
            if target.secure and tls is not None:
                credentials, more = tls.grpc_credentials()
                channel = grpc.aio.secure_channel(target.authority, credentials, options + more)
            elif target.secure:
                channel = grpc.aio.secure_channel(target.authority, grpc.ssl_channel_credentials(_roots()), options)
            else:
                channel = grpc.aio.insecure_channel(target.authority, options)
            self._channels.append(channel)
            # Registered: grpc looks the method up once, not per call (not in the type stubs yet).
            method = self._calls[key] = channel.unary_unary(MODEL_INFER, _registered_method=True)  # type: ignore[call-arg]
        return method

    async def close(self) -> None:
        channels, self._channels, self._calls = self._channels, [], {}
        for channel in channels:
            await channel.close()


def _roots() -> bytes | None:
    """Trusted CAs: ``SSL_CERT_FILE`` when set (as for https steps), else gRPC's bundled roots."""
    path = os.environ.get("SSL_CERT_FILE")
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Channels] = weakref.WeakKeyDictionary()
_step_tls: dict[str, Any] = {}  # grpcs:// step URL -> its security.tls.ClientTLS, set per plan


def set_step_tls(step_tls: Mapping[str, Any]) -> None:
    """The served graph's TLS settings for its grpcs:// steps (at load, never per request)."""
    global _step_tls
    _step_tls = {url: tls for url, tls in step_tls.items() if url.startswith("grpcs://")}
_targets: dict[str, urls.GRPCTarget] = {}


def channels(max_response_bytes: int = 256 * 1024 * 1024) -> _Channels:
    """The running loop's channel pool (a channel belongs to the loop it was made in)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = _Channels(max_response_bytes)
    return pool


async def close_channels() -> None:
    """Close this loop's channels (at shutdown; the next call opens new ones)."""
    loop = asyncio.get_running_loop()
    pool = _pools.pop(loop, None)
    if pool is not None:
        await pool.close()
    global _lean_last
    _lean_last = (None, {})
    for channel in (_lean.pop(loop, None) or {}).values():
        channel.close()


def target(url: str) -> urls.GRPCTarget:
    found = _targets.get(url)
    if found is None:
        try:
            found = urls.parse(url)
        except ValueError as exc:
            raise UpstreamError(f"step URL {url!r} is not a valid gRPC step URL: {exc}") from None
        if len(_targets) < 4096:
            _targets[url] = found
    return found


class _Step:
    """What every call to one gRPC step URL reads, taken from its target once (a C object
    compiled: its fields are read in C, where the target's are Python attribute lookups)."""

    __slots__ = ("address", "key", "rename", "secure", "target")

    def __init__(self, t: urls.GRPCTarget) -> None:
        self.target = t
        self.key: tuple[str, str, int] = t.key
        self.secure = t.secure
        self.rename = _rename(t.model, t.version)  # appended to a RAW_REQUEST body (request_parts)
        self.address = (t.host, t.port)  # the lean channel's key


_steps: dict[str, _Step] = {}


def _step(url: str) -> _Step:
    found = _steps.get(url)
    if found is None:
        found = _Step(target(url))
        if len(_steps) < 4096:
            _steps[url] = found
    return found


def _size(parts: list[bytes]) -> int:
    size = 0
    for part in parts:
        size += len(part)
    return size


def metadata(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...] | None:
    """Propagated headers as gRPC metadata (lower-case keys; what gRPC reserves is left out)."""
    if not headers:
        return None
    out = []
    for name, value in headers.items():
        key = name.lower()
        if key in _RESERVED or key.startswith(("grpc-", ":")) or key.endswith("-bin"):
            continue
        if not value.isascii() or not value.isprintable():
            continue
        out.append((key, value))
    return tuple(out) or None


def request_parts(body: bytes, step: _Step, raw: bytes | None) -> list[bytes]:
    """The serialized ModelInferRequest for the step's model, as pieces sent one after another
    (``raw``: the front's request, RAW_REQUEST)."""
    if body is raw:
        # The front's bytes as they came, with the model (and version) renamed: a later
        # occurrence of a singular field wins when protobuf parses, so appending them is
        # a rename. Sent as pieces, the tensor bytes are not copied at all.
        return [body, step.rename]
    t = step.target
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ConversionFailed(f"step call to {t.model} at {t.authority}: the request is not JSON, so it "
                               "cannot become a gRPC ModelInferRequest") from None
    try:
        return [convert.json_to_request(doc, t.model, t.version).SerializeToString()]
    except convert.ConversionError as exc:
        raise ConversionFailed(f"step call to {t.model} at {t.authority}: {exc}") from None


_renames: dict[tuple[str, str], bytes] = {}


def _rename(model: str, version: str) -> bytes:
    """The model_name and model_version fields appended to rename a request (built once per target)."""
    key = (model, version)
    found = _renames.get(key)
    if found is None:
        found = _string_field(1, model) + _string_field(2, version)
        if len(_renames) < 4096:
            _renames[key] = found
    return found


def _string_field(number: int, value: str) -> bytes:
    data = value.encode("utf-8")
    return bytes([number << 3 | 2]) + _varint(len(data)) + data


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


async def call(url: str, body: bytes, headers: Mapping[str, str], timeout: float | None,
               breakers: CircuitBreakers, max_response_bytes: int,
               loop: asyncio.AbstractEventLoop | None = None) -> StepResponse:
    """One ModelInfer call through the service's circuit breaker (UpstreamClient's retries wrap it).

    ``loop``: the running loop, when the caller has it (asking for it is a system call).
    """
    step = _step(url)  # compiled: a typed local, its fields read in C
    key = step.key
    if not breakers.allow(key):
        raise CircuitOpen(
            f"service {step.target.host}:{step.target.port} is failing; calls are paused for "
            f"{breakers.retry_after(key):.1f}s more (circuit open)"
        )
    raw = _get_raw_request()
    parts = request_parts(body, step, raw)
    if step.secure:
        answer = await _call_aio(url, step.target, parts, headers, timeout, breakers, max_response_bytes)
    else:
        channel = lean_channel(step, max_response_bytes, loop)
        try:
            answer = await channel.unary(MODEL_INFER, parts, _size(parts), lean_metadata(headers), timeout)
        except RPCError as exc:
            return _failed(url, key, exc.code, exc.details, exc.transport, timeout, breakers)
        except BaseException:
            breakers.record(key, ok=True)  # cancelled by our side: says nothing about the service
            raise
    if isinstance(answer, StepResponse):
        return answer
    breakers.record(key, ok=True)
    if body is raw:
        return StepResponse(200, answer, PROTO_ANSWER)
    try:
        doc = convert.response_to_json(pb.ModelInferResponse.FromString(answer))
    except (convert.ConversionError, DecodeError) as exc:
        raise UnreadableAnswer(f"step call to {url}: {exc}") from None
    return StepResponse(200, orjson.dumps(doc), "application/json")


def _failed(url: str, key: Any, code: int, details: str, transport: bool, timeout: float | None,
            breakers: CircuitBreakers) -> StepResponse:
    """A non-OK call: raised as a transport error, or answered as the HTTP status it stands for."""
    if code == wire.DEADLINE_EXCEEDED and timeout is not None and not transport:
        breakers.record(key, ok=False)
        raise UpstreamError(f"step call to {url} timed out after {timeout:g}s")
    if transport:
        breakers.record(key, ok=False)
        raise UpstreamError(f"step call to {url} failed: {details}")
    if code == wire.RESOURCE_EXHAUSTED and "message larger than max" in details.lower():
        breakers.record(key, ok=True)
        raise AnswerTooLarge(f"step call to {url}: {details}")
    http_status = status.http_status_of(code)
    breakers.record(key, ok=http_status not in BREAKING_STATUSES)
    return StepResponse(http_status, orjson.dumps({"error": details or _CODE_NAMES.get(code, str(code))}),
                        "application/json")


async def _call_aio(url: str, t: urls.GRPCTarget, parts: list[bytes], headers: Mapping[str, str],
                    timeout: float | None, breakers: CircuitBreakers, max_response_bytes: int) -> bytes | StepResponse:
    """A grpcs:// call, through grpc.aio (which does the TLS)."""
    method = channels(max_response_bytes).infer(t, _step_tls.get(url) if _step_tls else None)
    payload = parts[0] if len(parts) == 1 else b"".join(parts)
    try:
        answer: bytes = await method(payload, timeout=timeout, metadata=metadata(headers))
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        details = exc.details() or code.name
        transport = code is grpc.StatusCode.UNAVAILABLE and any(h in details.lower() for h in _TRANSPORT_HINTS)
        return _failed(url, t.key, int(code.value[0]), details, transport, timeout, breakers)
    except BaseException:
        breakers.record(t.key, ok=True)  # cancelled by our side: says nothing about the service
        raise
    return answer


_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
_lean: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], Channel]] = (
    weakref.WeakKeyDictionary())
_lean_last: tuple[asyncio.AbstractEventLoop | None, dict[tuple[str, int], Channel]] = (None, {})  # the last loop's pool


def lean_channel(step: _Step, max_response_bytes: int, loop: asyncio.AbstractEventLoop | None = None,
                 ) -> Channel:
    """The running loop's connection to the step's target (made on first use, kept for the process's life)."""
    global _lean_last
    if loop is None:
        loop = asyncio.get_running_loop()  # (a getpid system call, in Python 3.11)
    last_loop, pool = _lean_last
    if loop is not last_loop:  # a WeakKeyDictionary lookup costs more than the rest of this
        found = _lean.get(loop)
        if found is None:
            found = _lean[loop] = {}
        pool = found
        _lean_last = (loop, pool)
    channel = pool.get(step.address)
    if channel is None:
        t = step.target
        channel = pool[step.address] = Channel(t.host, t.port, max_response_bytes)
    return channel


def lean_metadata(headers: Mapping[str, str]) -> list[tuple[str, str]] | None:
    found = metadata(headers)
    return list(found) if found else None
