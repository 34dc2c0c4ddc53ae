"""The one module that talks HTTP to model services.

One pooled keep-alive client per process (:mod:`graph_router.httpclient`). A step call
is ``POST <url>`` with the current body as bytes; the answer is its status and body
(response headers are dropped, as KServe does, except its Content-Type and
Content-Encoding). Transport failures become :class:`UpstreamError` here and nowhere else.

Compressed answers (RFC 9110 §8.4): an answer that may become the graph's answer
(``stream``/tail calls) keeps its body and its ``content_encoding``, so the router relays
it byte for byte; every other answer is one a node reads, and is decoded here, bounded
by ``max_response_bytes`` (:func:`readable`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from . import httpclient
from .breaker import BREAKING_STATUSES, CircuitBreakers
from .errors import AnswerTooLarge, CircuitOpen, DeadlineExceeded, UnreadableAnswer, UpstreamError
from .extensions import StepPolicy
from .http1 import content_coding

logger = logging.getLogger(__name__)


class StepResponse:
    """What a step answered: status and body bytes, or a body still streaming in.

    ``content_encoding``: set when ``body`` (or ``stream``) is still in the service's
    content coding, to be relayed as it is; :func:`readable` decodes it for reading.
    A plain class: one is made for every step, and a dataclass's __init__ stays
    interpreted Python in the compiled build. Treat it as immutable.
    """

    __slots__ = ("body", "content_encoding", "content_type", "status", "stream")

    def __init__(self, status: int, body: bytes, content_type: str | None = None,
                 stream: StepStream | None = None, content_encoding: str | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.stream = stream
        self.content_encoding = content_encoding

    def __repr__(self) -> str:
        return f"StepResponse({self.status}, {self.body[:80]!r}, {self.content_type!r})"

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    async def whole(self, limit: int = 256 * 1024 * 1024) -> bytes:
        """The whole body, decoded, reading a streamed one to its end (for callers that read it)."""
        if self.stream is None:
            body = self.body
        else:
            chunks = []
            try:
                async for chunk in self.stream:
                    chunks.append(chunk)
            finally:
                await self.stream.aclose()
            body = b"".join(chunks)
        if self.content_encoding is None:
            return body
        return readable(body, self.content_encoding, limit, "the graph's answer")


def readable(body: bytes, encoding: str | None, limit: int, source: str) -> bytes:
    """``body`` with its content codings undone, for a node (or the router) to read it.

    Bounded while it runs; at most ``limit`` decoded bytes. A coding the router cannot
    undo, a corrupt body or one decoding past the limit fails with 502, naming
    ``source`` (the step call) and the coding.
    """
    if encoding is None:
        return body
    try:
        return content_coding.decode(body, encoding, limit)
    except content_coding.DecodedTooLarge as exc:
        raise AnswerTooLarge(f"{source}: {exc}") from None
    except content_coding.CodingError as exc:
        raise UnreadableAnswer(f"{source}: {exc}") from None


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """How step calls are made.

    istio_probe_url: KServe rewrites ``https`` step URLs to ``http`` when an Istio sidecar
    answers here (checked once); configurable so tests can point it at a loopback server.
    pool_per_host: keep-alive connections kept per service; bounded so a slow service
    cannot take every socket.
    keepalive_seconds: idle connections are closed after this, before typical servers do.
    max_response_bytes: a step answer above this fails the step (memory stays bounded);
    for a body the router reads, the limit is on its decoded bytes.
    max_response_head_bytes: a step answer's header section above this fails the step
    with 502 (enforced while it arrives).
    breaker_failures: consecutive failures that open a service's circuit (0: never).
    breaker_cooldown: seconds an open circuit fails calls fast before one probe.
    """

    istio_probe_url: str = "http://localhost:15000"
    pool_per_host: int = 256
    keepalive_seconds: float = 30.0
    connect_timeout: float = 10.0
    max_response_bytes: int = 256 * 1024 * 1024
    max_response_head_bytes: int = 64 * 1024
    breaker_failures: int = 5
    breaker_cooldown: float = 5.0
    istio_rewrite: bool = True  # serve --no-istio-rewrite: https steps stay https with a sidecar


class UpstreamClient:
    """Step calls through one pooled client; create once per process, in the event loop."""

    def __init__(self, settings: UpstreamSettings | None = None, rng: random.Random | None = None) -> None:
        self._settings = settings or UpstreamSettings()
        self._rng = rng or random.Random()
        self._breakers: CircuitBreakers | None = None
        self._http: httpclient.HTTPClient | None = None
        self._rewrite_https: bool | None = None
        self._istio_lock = asyncio.Lock()

    async def start(self) -> None:
        s = self._settings
        self._http = httpclient.HTTPClient(
            per_host=s.pool_per_host,
            keepalive=s.keepalive_seconds,
            connect_timeout=s.connect_timeout,
            max_body=s.max_response_bytes,
            max_head=s.max_response_head_bytes,
        )
        self._breakers = CircuitBreakers(s.breaker_failures, s.breaker_cooldown, self._http.loop.time)

    def set_step_tls(self, step_tls: dict[str, object]) -> None:
        """The served graph's per-step TLS settings (security.tls.step_tls), applied at load."""
        if self._http is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        self._http.set_step_tls(step_tls)
        if any(url.startswith("grpcs://") for url in step_tls) or "graph_router.grpc.steps" in sys.modules:
            from .grpc import steps as grpc_steps

            grpc_steps.set_step_tls(step_tls)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None

    async def _istio_rewrite(self) -> bool:
        """Whether an Istio sidecar is present (asked once, on the first https step without tls settings)."""
        if self._rewrite_https is None and not self._settings.istio_rewrite:
            self._rewrite_https = False
        if self._rewrite_https is None:
            async with self._istio_lock:
                if self._rewrite_https is None:
                    self._rewrite_https = await self._probe_istio()
        return self._rewrite_https

    async def _probe_istio(self) -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(
                self._settings.istio_probe_url, timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                found = resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            found = False
        if found:
            logger.info("Istio sidecar found: https step URLs are called over http")
        return found

    def call(
        self,
        url: str,
        body: bytes,
        headers: CIMultiDict[str],
        timeout: float | None,
        stream: bool = False,
        policy: StepPolicy | None = None,
        deadline: float | None = None,
        early: httpclient.HeadListener | None = None,
    ) -> Awaitable[StepResponse]:
        """POST ``body`` to ``url``; raise UpstreamError when no usable answer arrives.
        (The request path passes every argument by position: cheaper in the compiled build.)

        A kept-alive connection that the service had closed before any byte of the answer
        arrived is retried once, on a new connection. With ``stream``, an answer the
        service streams is returned at its first byte, its body in ``stream``.
        ``stream`` also means the answer may be relayed as the graph's: its body keeps its
        Content-Encoding. Without it, a node reads the body, so it comes back decoded.

        ``policy`` (from the extensions) sets the step's own timeout and retries;
        ``deadline`` (loop time) bounds every attempt and every backoff pause.
        ``early`` (a tail call without policy or deadline) hears of a streamed answer's head
        as soon as it is read (``httpclient._Connection.send``): no retry can follow it.
        """
        # A plain function handing back the coroutine: one frame less per step call.
        if policy is None and deadline is None:
            if self._http is not None and self._breakers is not None and url.startswith(("grpc://", "grpcs://")):
                return self._grpc_step(url, body, headers, timeout)  # as _guarded would await it: one level fewer
            return self._guarded(url, body, headers, timeout, stream, early)
        return self._with_policy(url, body, headers, timeout, stream, policy, deadline)

    async def _with_policy(
        self,
        url: str,
        body: bytes,
        headers: CIMultiDict[str],
        timeout: float | None,
        stream: bool,
        policy: StepPolicy | None,
        deadline: float | None,
    ) -> StepResponse:
        """Retries with exponential backoff and full jitter, never past the deadline."""
        loop = asyncio.get_running_loop()
        if policy is not None and policy.timeout_seconds is not None:
            timeout = policy.timeout_seconds
        retries = policy.retries if policy is not None else 0
        attempt = 0
        while True:
            call_timeout = timeout
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise DeadlineExceeded(f"the request's deadline passed before calling {url}")
                call_timeout = remaining if call_timeout is None else min(call_timeout, remaining)
            try:
                result = await self._guarded(url, body, headers, call_timeout, stream)
            except UpstreamError:
                if attempt >= retries:
                    if deadline is not None and loop.time() >= deadline:
                        raise DeadlineExceeded(f"the request's deadline passed while calling {url}") from None
                    raise
            else:
                if attempt >= retries or policy is None or result.status not in policy.retry_on:
                    return result
                if result.stream is not None:
                    await result.stream.aclose()
            assert policy is not None
            pause = min(policy.max_backoff_seconds, policy.backoff_seconds * 2**attempt) * self._rng.random()
            if deadline is not None and loop.time() + pause >= deadline:
                raise DeadlineExceeded(f"the request's deadline leaves no time to retry {url}")
            await asyncio.sleep(pause)
            attempt += 1

    def _grpc_step(
        self, url: str, body: bytes, headers: CIMultiDict[str], timeout: float | None
    ) -> Awaitable[StepResponse]:
        """A gRPC step's call (graph_router.grpc.steps): the same breakers, inside the same retries.
        Only once started (``_http`` and ``_breakers`` set)."""
        assert self._http is not None and self._breakers is not None
        return _grpc_call()(url, body, headers, timeout, self._breakers, self._settings.max_response_bytes,
                            self._http.loop)

    async def _guarded(
        self, url: str, body: bytes, headers: CIMultiDict[str], timeout: float | None, stream: bool,
        early: httpclient.HeadListener | None = None,
    ) -> StepResponse:
        """One call through the service's circuit breaker."""
        http = self._http
        breakers = self._breakers
        if http is None or breakers is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        if url.startswith(("grpc://", "grpcs://")):
            return await self._grpc_step(url, body, headers, timeout)
        if url.startswith("https://") and not http.has_step_tls(url) and await self._istio_rewrite():
            url = "http://" + url[len("https://") :]
        try:
            key = http.target(url).key
        except ValueError as exc:
            raise UpstreamError(f"step URL {url!r} is not a valid URL") from exc
        if not breakers.allow(key):
            raise CircuitOpen(
                f"service {key[1]}:{key[2]} is failing; calls are paused for "
                f"{breakers.retry_after(key):.1f}s more (circuit open)"
            )
        try:
            try:
                try:
                    # Positional: keyword arguments cost a parse per call in the compiled build.
                    answer = await http.post(url, headers, body, False, timeout, stream, early)
                except httpclient.StaleConnection:
                    logger.debug("kept-alive connection to %s was closed; retrying once", url)
                    answer = await http.post(url, headers, body, True, timeout, stream, early)  # fresh
            except TimeoutError as exc:
                raise UpstreamError(f"step call to {url} timed out after {timeout:g}s") from exc
            except (httpclient.ResponseTooLarge, httpclient.ResponseHeadTooLarge) as exc:
                raise AnswerTooLarge(f"step call to {url}: {exc}") from exc
            except httpclient.ClientError as exc:
                raise UpstreamError(f"step call to {url} failed: {exc}") from exc
        except UpstreamError:
            breakers.record(key, ok=False)
            raise
        except BaseException:
            breakers.record(key, ok=True)  # cancelled by our side: says nothing about the service
            raise
        breakers.record(key, ok=answer.status not in BREAKING_STATUSES)
        if answer.stream is not None:
            return StepResponse(answer.status, b"", answer.content_type, StepStream(answer.stream, url),
                                answer.encoding)
        if answer.encoding is None:
            return StepResponse(answer.status, answer.body, answer.content_type)
        if stream:  # may be relayed as the graph's answer: keep it as the service sent it
            return StepResponse(answer.status, answer.body, answer.content_type, None, answer.encoding)
        body = readable(answer.body, answer.encoding, self._settings.max_response_bytes, f"step call to {url}")
        return StepResponse(answer.status, body, answer.content_type)


_grpc_steps_call: Callable[..., Awaitable[StepResponse]] | None = None


def _grpc_call() -> Callable[..., Awaitable[StepResponse]]:
    """graph_router.grpc.steps.call, imported on the first gRPC step (it imports this module;
    an import statement per call costs more than the rest of the dispatch)."""
    global _grpc_steps_call
    if _grpc_steps_call is None:
        from .grpc import steps as grpc_steps

        _grpc_steps_call = grpc_steps.call
    return _grpc_steps_call


class StepStream:
    """A step's answer body as it arrives; transport errors become UpstreamError here."""

    # Made for every streamed answer before its first byte goes on: no instance dict.
    __slots__ = ("_body", "_url")

    def __init__(self, body: httpclient.BodyStream, url: str) -> None:
        self._body = body
        self._url = url

    def __aiter__(self) -> StepStream:
        return self

    def ready(self) -> bytes | None:
        """Bytes that have already arrived, without waiting (written with the answer's head)."""
        return self._body.ready()

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except httpclient.ClientError as exc:
            raise UpstreamError(f"step call to {self._url} failed mid-answer: {exc}") from exc

    async def aclose(self) -> None:
        """Stop reading (a client that left): the connection to the service is closed."""
        await self._body.aclose()
