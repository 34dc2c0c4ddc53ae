"""The one module that talks HTTP to model services.

One pooled keep-alive client per process. A step call is ``POST <url>`` with the
current body as bytes; the answer is its status and body (response headers are
dropped, as KServe does). Transport failures become :class:`UpstreamError` here and
nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

from .errors import UpstreamError

logger = logging.getLogger(__name__)

# Errors that mean "the server closed the connection before answering": on a pooled
# connection this is the classic keep-alive race, and the request never reached a handler.
_STALE_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientConnectionResetError,
)


@dataclass(frozen=True, slots=True)
class StepResponse:
    """What a step answered: status and body bytes."""

    status: int
    body: bytes
    content_type: str | None = None

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
    """

    istio_probe_url: str = "http://localhost:15000"
    pool_per_host: int = 256
    keepalive_seconds: float = 60.0
    max_response_bytes: int = 256 * 1024 * 1024


class UpstreamClient:
    """Pooled HTTP client for step calls; create once per process, in the event loop."""

    def __init__(self, settings: UpstreamSettings | None = None) -> None:
        self._settings = settings or UpstreamSettings()
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None
        self._rewrite_https: bool | None = None
        self._istio_lock = asyncio.Lock()

    async def start(self) -> None:
        s = self._settings
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=s.pool_per_host, keepalive_timeout=s.keepalive_seconds, ttl_dns_cache=30
        )
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=True, timeout=aiohttp.ClientTimeout(total=None)
        )
        # Retries of a stale pooled connection must not pick another stale one.
        self._fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True, limit=0),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def close(self) -> None:
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()
        self._session = self._fresh = None

    async def _istio_rewrite(self) -> bool:
        """Whether an Istio sidecar is present (asked once, on the first https step)."""
        if self._rewrite_https is None:
            async with self._istio_lock:
                if self._rewrite_https is None:
                    self._rewrite_https = await self._probe_istio()
        return self._rewrite_https

    async def _probe_istio(self) -> bool:
        assert self._fresh is not None
        try:
            async with self._fresh.get(
                self._settings.istio_probe_url, timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                found = resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            found = False
        if found:
            logger.info("Istio sidecar found: https step URLs are called over http")
        return found

    async def call(
        self, url: str, body: bytes, headers: CIMultiDict[str], timeout: float | None
    ) -> StepResponse:
        """POST ``body`` to ``url``; raise UpstreamError when no answer arrives."""
        session = self._session
        if session is None:
            raise RuntimeError("UpstreamClient.start() was not awaited")
        if url.startswith("https://") and await self._istio_rewrite():
            url = "http://" + url[len("https://") :]
        if "Content-Type" not in headers:
            headers = headers.copy()
            headers["Content-Type"] = "application/json"
        client_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else None
        try:
            try:
                return await self._post(session, url, body, headers, client_timeout)
            except _STALE_CONNECTION_ERRORS:
                assert self._fresh is not None
                logger.debug("connection to %s closed before any answer; retrying once", url)
                return await self._post(self._fresh, url, body, headers, client_timeout)
        except TimeoutError as exc:
            raise UpstreamError(f"step call to {url} timed out after {timeout}s") from exc
        except aiohttp.InvalidURL as exc:
            raise UpstreamError(f"step URL {url!r} is not a valid URL") from exc
        except aiohttp.ClientResponseError as exc:
            raise UpstreamError(f"step call to {url} got a malformed answer: {exc.message}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(f"step call to {url} failed: {_describe(exc)}") from exc

    async def _post(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: bytes,
        headers: CIMultiDict[str],
        timeout: aiohttp.ClientTimeout | None,
    ) -> StepResponse:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            try:
                data = await resp.read()
            except _STALE_CONNECTION_ERRORS as exc:
                # Part of the answer arrived: the request reached the service, never retry.
                raise aiohttp.ClientPayloadError("the answer's body was cut short") from exc
            return StepResponse(resp.status, data, resp.headers.get("Content-Type"))


def _describe(exc: BaseException) -> str:
    """A short, credential-free description of a transport error."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the service closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the answer's body was cut short"
    text = str(exc) or type(exc).__name__
    return text
