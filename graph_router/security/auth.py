"""Kubernetes authentication and authorization in front of the graph (OpenShift AI's ``--enable-auth``).

A request must carry ``Authorization: Bearer TOKEN``. The token is checked with a
TokenReview; its user must then be allowed ``get`` on ``inferencegraphs/NAME`` in the
router's namespace (a SubjectAccessReview). The answer is 401 (no, bad or expired
token) or 403 (a known user without the permission), a JSON body and
``X-Forbidden-Reason``; the graph never runs.

Why a cache, and why bounds: every request would otherwise cost two API calls. A
decision (allowed, 401 or 403) is kept ``cache_seconds`` in a cache of at most
``cache_size`` entries (oldest out first), keyed by a hash of the token so raw tokens
are not kept. Concurrent requests with the same new token share one review. Reviews
run on the official client in a few threads (it is synchronous); past
``max_reviews`` in progress, or past ``review_timeout``, the answer is 503 at once, so
a slow API server cannot pile requests up behind it. API failures are not cached.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from ..httpserver import Response
from .settings import AuthSettings

logger = logging.getLogger(__name__)

JSON = "application/json"
GROUP = "serving.kserve.io"
RESOURCE = "inferencegraphs"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one token's reviews: ``status`` 200 (allowed), 401 or 403."""

    status: int
    reason: str
    user: str = ""


def _denial(status: int, error: str, reason: str) -> Response:
    body = orjson.dumps({"error": error, "cause": reason})
    headers = [("X-Forbidden-Reason", reason)]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="graph-router"'))
    return Response(status, body, JSON, headers)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (scheme case-insensitive), else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class Reviewer:
    """The two reviews, synchronous, on the official client (run in a thread by :class:`Authorizer`)."""

    def __init__(self, api_client: Any, settings: AuthSettings) -> None:
        from kubernetes import client

        self._client = client
        self._authn = client.AuthenticationV1Api(api_client)
        self._authz = client.AuthorizationV1Api(api_client)
        self._settings = settings
        # A little past the router's own wait, so the thread ends soon after it stops waiting.
        self._timeout = settings.review_timeout + 1.0

    def review(self, token: str) -> Decision:
        c = self._client
        tr = self._authn.create_token_review(
            c.V1TokenReview(spec=c.V1TokenReviewSpec(token=token)), _request_timeout=self._timeout)
        status = tr.status
        if status is None or not status.authenticated or status.user is None:
            reason = (status.error if status is not None else None) or "the token is not valid"
            return Decision(401, f"token review failed: {reason}")
        user = status.user
        s = self._settings
        sar = self._authz.create_subject_access_review(
            c.V1SubjectAccessReview(spec=c.V1SubjectAccessReviewSpec(
                user=user.username, groups=user.groups, uid=user.uid, extra=user.extra,
                resource_attributes=c.V1ResourceAttributes(
                    namespace=s.namespace, verb="get", group=GROUP, resource=RESOURCE, name=s.graph_name),
            )), _request_timeout=self._timeout)
        if sar.status is not None and sar.status.allowed:
            return Decision(200, "", user.username or "")
        why = (sar.status.reason if sar.status is not None else None) or "no RBAC rule allows it"
        return Decision(403, f"user {user.username!r} may not get {RESOURCE}/{s.graph_name} in namespace "
                             f"{s.namespace!r}: {why}", user.username or "")


class Authorizer:
    """Checks requests against the reviews, with a bounded TTL cache and bounded concurrency."""

    def __init__(self, settings: AuthSettings, review: Callable[[str], Decision], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._review = review
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[Decision]] = {}
        self._threads = ThreadPoolExecutor(max_workers=settings.max_reviews, thread_name_prefix="auth-review")
        self.reviews_running = 0
        self.reviews = 0

    @classmethod
    def for_cluster(cls, settings: AuthSettings) -> Authorizer:
        """Reviews against the cluster the router runs in (or ``settings.kubeconfig``'s)."""
        from ..controller.kube import KubeClient

        api_client = KubeClient.from_environment(settings.kubeconfig)._api_client
        return cls(settings, Reviewer(api_client, settings).review)

    @property
    def cached(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def check(self, authorization: str | None) -> Response | None:
        """None when the request may run; otherwise the answer to send instead."""
        token = bearer_token(authorization)
        if token is None:
            return _denial(401, "Unauthorized", "missing bearer token (Authorization: Bearer TOKEN)")
        key = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self._clock():
            decision = hit[1]
        else:
            try:
                decision = await self._decide(key, token)
            except TimeoutError:
                return _denial(503, "Service Unavailable", "authentication timed out (the Kubernetes API is slow)")
            except _Busy:
                return _denial(503, "Service Unavailable", "too many authentication reviews in progress")
            except Exception as exc:  # the API server answered an error, or is unreachable
                logger.warning("authentication review failed: %s", exc)
                return _denial(503, "Service Unavailable", "authentication is unavailable")
        if decision.status == 200:
            return None
        return _denial(decision.status, "Unauthorized" if decision.status == 401 else "Forbidden", decision.reason)

    async def _decide(self, key: bytes, token: str) -> Decision:
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.wait_for(asyncio.shield(pending), self.settings.review_timeout)
        if self.reviews_running >= self.settings.max_reviews:
            raise _Busy
        loop = asyncio.get_running_loop()
        self.reviews_running += 1
        self.reviews += 1
        future = loop.run_in_executor(self._threads, self._review, token)

        def finished(f: asyncio.Future[Decision]) -> None:
            # Counted until the thread is done, even when the request stopped waiting:
            # the bound is on work the API server still has, not on waiters.
            self.reviews_running -= 1
            self._pending.pop(key, None)
            if not f.cancelled() and f.exception() is None:
                self._remember(key, f.result())

        future.add_done_callback(finished)
        self._pending[key] = future
        return await asyncio.wait_for(asyncio.shield(future), self.settings.review_timeout)

    def _remember(self, key: bytes, decision: Decision) -> None:
        cache = self._cache
        cache[key] = (self._clock() + self.settings.cache_seconds, decision)
        cache.move_to_end(key)
        while len(cache) > self.settings.cache_size:
            cache.popitem(last=False)


class _Busy(Exception):
    """Too many reviews in progress."""
