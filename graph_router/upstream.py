"""The one module that talks HTTP to model services.

One pooled keep-alive client per process (:mod:`graph_router.httpclient`). A step call
is ``POST <url>`` with the current body as bytes; the answer is its status and body
(response headers are dropped, as KServe does). Transport failures become
:class:`UpstreamError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from . import httpclient
from .errors import UpstreamError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepResponse:
    """What a step answered: status and body bytes, or a body still streaming in."""

    status: int
    body: bytes
    content_type: str | None = None
    stream: StepStream | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    """How step calls are made.

    istio_probe_url: KServe rewrites ``https`` step URLs to ``http`` when an Istio sidecar
    answers here (checked once); configurable so tests can point it at a loopback server.
    pool_per_host: keep-alive connections kept per service; bounded so a slow service
    cannot take every socket.
    keepalive_seconds: idle connections are closed after this, before typical servers do.
    max_response_bytes: a step answer above this fails the step (memory stays bounded).
    """

    istio_probe_url: str = "http://localhost:15000"
    pool_per_host: int = 256
    keepalive_seconds: float = 30.0
    connect_timeout: float = 10.0
    max_response_bytes: int = 256 * 1024 * 1024


class UpstreamClient:
    """Step calls through one pooled client; create once per process, in the event loop."""

    def __init__(self, settings: UpstreamSettings | None = None) -> None:
        self._settings = settings or UpstreamSettings()
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
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        self._http = None

    async def _istio_rewrite(self) -> bool:
        """Whether an Istio sidecar is present (asked once, on the first https step)."""
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

    async def call(
        self,
        url: str,
        body: bytes,
        headers: CIMultiDict[str],
        timeout: float | None,
        *,
        stream: bool = False,
    ) -> StepResponse:
        """POST ``body`` to ``url``; raise UpstreamError when no usable answer arrives.

        A kept-alive connection that the service had closed before any byte of the answer
        arrived is retried once, on a new connection. With ``stream``, an answer the
        service streams is returned at its first byte, its body in ``stream``.
        """
        http = self._http
        if http is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        if url.startswith("https://") and await self._istio_rewrite():
            url = "http://" + url[len("https://") :]
        try:
            try:
                answer = await http.post(url, headers, body, timeout=timeout, stream=stream)
            except httpclient.StaleConnection:
                logger.debug("kept-alive connection to %s was closed; retrying once", url)
                answer = await http.post(url, headers, body, fresh=True, timeout=timeout, stream=stream)
        except TimeoutError as exc:
            raise UpstreamError(f"step call to {url} timed out after {timeout:g}s") from exc
        except ValueError as exc:
            raise UpstreamError(f"step URL {url!r} is not a valid URL") from exc
        except httpclient.ClientError as exc:
            raise UpstreamError(f"step call to {url} failed: {exc}") from exc
        if answer.stream is not None:
            return StepResponse(answer.status, b"", answer.content_type, StepStream(answer.stream, url))
        return StepResponse(answer.status, answer.body, answer.content_type)


class StepStream:
    """A step's answer body as it arrives; transport errors become UpstreamError here."""

    def __init__(self, body: httpclient.BodyStream, url: str) -> None:
        self._body = body
        self._url = url

    def __aiter__(self) -> StepStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._body.__anext__()
        except httpclient.ClientError as exc:
            raise UpstreamError(f"step call to {self._url} failed mid-answer: {exc}") from exc

    async def aclose(self) -> None:
        """Stop reading (a client that left): the connection to the service is closed."""
        await self._body.aclose()
