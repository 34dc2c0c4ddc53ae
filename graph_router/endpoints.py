"""Replica-aware step calls: which of a step's endpoints answers this call.

A step normally has one URL and never reaches this module: the plan decides that once
(``StepPlan.route`` is None) and the executor calls the URL directly. A step with
several endpoints (``--service NAME=URL1,URL2``, or the controller's EndpointSlices),
or with a mirror, gets a :class:`StepRoute` at plan time, which picks per call:

- by default, the endpoint with fewer outstanding calls of two drawn at random
  (power of two choices: near-least-loaded without scanning every endpoint);
- ``balance: roundRobin``: in turn (a baseline, mostly for comparisons);
- ``affinity``: consistent hashing with bounded load. A key from the request (a GJSON
  path into the body, cut to ``prefixChars``, or a header) is hashed onto a ring of
  virtual points; the same prompt prefix reaches the same replica (its KV cache).
  Two bounds, one on keys and one on calls:

  - keys: the keys seen at least twice in the step's last ``64 x endpoints`` keyed calls
    (active keys) are shared so that no endpoint holds more than its mean, rounded up:
    rank by rank, each key bids for the next endpoint of its ring order, and an endpoint
    takes bidders in hash order until it is full. A key stays at its ring owner unless
    that owner has more than its share, and only that excess moves, to the nearest
    endpoint with room; the sharing depends only on which keys are active and which
    endpoints are up, so every worker and router replica seeing the same traffic agrees,
    and an overflowed key stays where it went however calls fluctuate. Shares are
    recomputed when the active keys or the endpoints up change, at most once per 32
    keyed calls (the cost grows with the active keys); a key not yet shared goes by the
    ring. One-off keys (every prompt unique) never become active and cost nothing. A replica's
    cache needs room for its share of prefixes, not for the ring's uneven split (32
    prompts on 4 endpoints give one 10 or 11 of them: measured, 76-84% hits with caches
    of 8 instead of 97%).
  - calls: the endpoint answers if its share of the step's last ``64 x endpoints``
    calls stays within 1.25x the mean, and its calls outstanding within 2x the mean;
    otherwise the next endpoint clockwise with room does, for that call. The bound
    counts recent calls rather than only those in flight because a cache miss is slow:
    counting in-flight calls alone, every slow miss would push keys off their replica,
    miss again there, and cascade (measured: about 85% hits instead of 95%); the
    in-flight guard still moves keys off a replica that stalls.

An endpoint whose circuit breaker is open (:mod:`graph_router.breaker`, per host:port)
is skipped: its keys move to their next endpoint on the ring (at the next sharing, to
the nearest with room: keys at home elsewhere stay, since each share only grows), and
come back when its probe succeeds. Removing an endpoint removes only its points, so
with no key over a share only its keys move.
"""

from __future__ import annotations

import asyncio
import math
import random
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Mapping, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

import orjson
from multidict import CIMultiDict

from . import gjson
from .errors import CircuitOpen, DeadlineExceeded, RequestError, UpstreamError
from .upstream import StepResponse, StepStream

if TYPE_CHECKING:
    from .breaker import CircuitBreakers
    from .executor import RequestContext
    from .extensions import Affinity, MirrorSpec, StepPolicy
    from .mirror import Mirror
    from .plan import StepPlan
    from .upstream import UpstreamClient

ENDPOINTS_ANNOTATION = "graph-router.io/endpoints"  # serviceUrl -> [endpoint URL, ...], written by the controller
VIRTUAL_POINTS = 160  # per endpoint: enough that four endpoints share the ring within a few percent
LOAD_FACTOR = 1.25  # the bound on an endpoint's share of recent calls, over the mean
IN_FLIGHT_FACTOR = 2.0  # the bound on its calls outstanding, over the mean
WINDOW_PER_ENDPOINT = 64  # recent calls counted per endpoint, for the load bound
KEY_WINDOW_PER_ENDPOINT = 64  # recent keyed calls per endpoint whose keys are balanced
KEY_LOAD_FACTOR = 1  # active keys per endpoint: at most their mean, rounded up
REBALANCE_CALLS = 32  # keyed calls at least between two rebalances (its cost grows with the active keys)


def split_endpoints(value: str) -> list[str]:
    """``URL1,URL2,...`` as a list (a URL never holds a bare comma in its authority)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def annotated(annotations: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The controller's endpoints annotation as ``--service URL=URL1,URL2`` pairs, and its problems."""
    text = annotations.get(ENDPOINTS_ANNOTATION)
    if not text:
        return {}, []
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return {}, [f"annotation {ENDPOINTS_ANNOTATION}: not JSON: {exc}"]
    if not isinstance(doc, dict) or not all(
            isinstance(v, list) and v and all(isinstance(u, str) for u in v) for v in doc.values()):
        return {}, [f"annotation {ENDPOINTS_ANNOTATION}: expected a JSON object of URL -> [URL, ...]"]
    return {str(url): ",".join(found) for url, found in doc.items()}, []


def _hash(text: str) -> int:
    return int.from_bytes(blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def breaker_key(url: str) -> object:
    """The key the upstream client's circuit breakers use for ``url`` (host and port)."""
    if url.startswith(("grpc://", "grpcs://")):
        from .grpc.steps import target as grpc_target

        return grpc_target(url).key
    from .httpclient import parse_target

    return parse_target(url).key


class Endpoint:
    """One replica: its URL, breaker key and calls outstanding from this process."""

    __slots__ = ("key", "label", "outstanding", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.key = breaker_key(url)
        self.label = url
        self.outstanding = 0


class Ring:
    """Consistent-hash ring over endpoints: ``VIRTUAL_POINTS`` points each, by URL."""

    def __init__(self, endpoints: Sequence[Endpoint], points: int = VIRTUAL_POINTS) -> None:
        marks = sorted((_hash(f"{e.url}#{i}"), n) for n, e in enumerate(endpoints) for i in range(points))
        self.hashes = [h for h, _ in marks]
        self.owners = [n for _, n in marks]
        self.size = len(endpoints)

    def order(self, h: int) -> list[int]:
        """Endpoint indices in ring order from ``h``, each once (the first owns ``h``)."""
        seen: list[int] = []
        start = bisect_left(self.hashes, h)
        total = len(self.owners)
        for step in range(total):
            owner = self.owners[(start + step) % total]
            if owner not in seen:
                seen.append(owner)
                if len(seen) == self.size:
                    break
        return seen

    def owner(self, key: str) -> int:
        """The endpoint a key maps to with every endpoint up and idle."""
        return self.order(_hash(key))[0]


class KeySource:
    """Where an affinity key comes from: a body path (fast for plain dotted paths) or a header."""

    __slots__ = ("header", "parts", "path", "prefix")

    def __init__(self, affinity: Affinity) -> None:
        self.header = affinity.header.lower() if affinity.header else None
        self.prefix = affinity.prefix_chars
        self.path = gjson.compile_path(affinity.key) if affinity.key else None
        self.parts: list[str | int] | None = None
        if affinity.key and all(c.isalnum() or c in "._-" for c in affinity.key):
            self.parts = [int(p) if p.isdigit() else p for p in affinity.key.split(".")]

    def key(self, body: bytes, headers: CIMultiDict[str]) -> str | None:
        """The key of one call, or None (the call is then balanced without affinity)."""
        if self.header is not None:
            value = headers.get(self.header)
            return value if value else None
        text: str | None = None
        if self.parts is not None:
            try:
                doc: Any = orjson.loads(body)
                for part in self.parts:
                    doc = doc[part]
            except (orjson.JSONDecodeError, LookupError, TypeError):
                return None
            text = doc if isinstance(doc, str) else orjson.dumps(doc).decode()
        elif self.path is not None:
            result = self.path.get(body)
            if not result.exists:
                return None
            selected = result.value()
            text = selected if isinstance(selected, str) else result.raw
        if text is None:
            return None
        return text[: self.prefix] if self.prefix is not None else text


class EndpointSet:
    """A step's endpoints and how one is chosen per call."""

    def __init__(self, urls: Sequence[str], affinity: Affinity | None = None, balance: str = "leastRequest",
                 rng: random.Random | None = None) -> None:
        self.endpoints = [Endpoint(u) for u in dict.fromkeys(urls)]
        self.ring = Ring(self.endpoints)
        self.keys = KeySource(affinity) if affinity is not None else None
        self.round_robin = balance == "roundRobin"
        self.in_flight = 0
        self.window: deque[int] = deque()  # the endpoints (indices) of the last calls, newest last
        self.recent = [0] * len(self.endpoints)  # how often each appears in ``window``
        self._window_size = WINDOW_PER_ENDPOINT * len(self.endpoints)
        self._index = {id(e): n for n, e in enumerate(self.endpoints)}
        self._turn = 0
        self._rng = rng or random.Random()
        # Keys, for affinity: the hashes of the last ``_key_window_size`` keys, how often each
        # occurs there, and the ring order of each (computed once per stay in the window).
        self.key_window: deque[int] = deque()
        self.key_counts: dict[int, int] = {}
        self._orders: dict[int, list[int]] = {}
        self._key_window_size = KEY_WINDOW_PER_ENDPOINT * len(self.endpoints)
        self.active: set[int] = set()  # keys seen twice since they entered the window
        self.homes: dict[int, int] = {}  # active key -> endpoint index, from the last rebalance
        self._dirty = False
        self._balanced_at = -REBALANCE_CALLS  # the key count (``_seen``) at the last rebalance
        self._seen = 0
        self._alive: tuple[int, ...] = ()  # the endpoints up at the last rebalance

    def pick(self, body: bytes, headers: CIMultiDict[str], breakers: CircuitBreakers | None,
             tried: Sequence[Endpoint] = ()) -> Endpoint:
        """The endpoint for one call (does not count it: see :meth:`StepRoute.call`).

        ``tried``: endpoints this call already failed on (a retry goes elsewhere when it can).
        """
        endpoints = self.endpoints
        alive = endpoints if breakers is None else [e for e in endpoints if not breakers.is_open(e.key)]
        if not alive:
            alive = endpoints  # every circuit open: the call fails fast with the breaker's 503
        up = alive
        if tried:
            untried = [e for e in up if e not in tried]
            up = untried or up
        if self.keys is not None:
            key = self.keys.key(body, headers)
            if key is not None:
                h = _hash(key)
                self.remember(h, alive)
                return self._by_hash(h, up)
        if len(up) == 1:
            return up[0]
        if self.round_robin:
            self._turn += 1
            return up[self._turn % len(up)]
        a, b = self._rng.sample(up, 2)
        return b if b.outstanding < a.outstanding else a

    def record(self, endpoint: Endpoint) -> None:
        """Count a call in the recent window (the load ``by_key`` bounds)."""
        index = self._index[id(endpoint)]
        self.window.append(index)
        self.recent[index] += 1
        if len(self.window) > self._window_size:
            self.recent[self.window.popleft()] -= 1

    def remember(self, h: int, alive: Sequence[Endpoint]) -> None:
        """Count the key (hash ``h``) of a call, and rebalance the active keys when they changed.

        A key becomes active on its second call within the window (a key seen once has
        nothing cached to come back to, and one-off keys would otherwise churn the set) and
        stays active until it leaves the window.
        """
        window = self.key_window
        counts = self.key_counts
        window.append(h)
        n = counts.get(h, 0) + 1
        counts[h] = n
        if n == 1:
            self._orders[h] = self.ring.order(h)
        elif n == 2:
            self.active.add(h)
            self._dirty = True
        if len(window) > self._key_window_size:
            old = window.popleft()
            left = counts[old] - 1
            if left:
                counts[old] = left
            else:
                del counts[old], self._orders[old]
                if old in self.active:
                    self.active.discard(old)
                    self._dirty = True
        self._seen += 1
        if len(alive) != len(self._alive) or (len(alive) < len(self.endpoints) and tuple(
                self._index[id(e)] for e in alive) != self._alive):
            self._dirty = True
        if self._dirty and self._seen - self._balanced_at >= REBALANCE_CALLS:
            self.rebalance(alive)

    def rebalance(self, alive: Sequence[Endpoint]) -> None:
        """Share the active keys among the endpoints up, at most ``ceil(keys / endpoints)`` each.

        Rank by rank: first every key bids for the first endpoint of its ring order, then
        those left over for their second, and so on; an endpoint takes bidders in hash order
        until it holds its share. The result depends only on the set of active keys and of
        endpoints up, never on the order calls came in, so every worker and router replica
        that sees the same traffic makes the same choice. A key at its ring owner stays there
        while the owner is up and no more keys bid for it first; when an endpoint goes down,
        the other shares only grow, so the keys at home elsewhere stay.
        """
        index = self._index
        self._alive = tuple(index[id(e)] for e in alive)
        self._dirty = False
        self._balanced_at = self._seen
        pending = sorted(self.active)
        homes: dict[int, int] = {}
        if pending:
            up = [False] * len(self.endpoints)
            for n in self._alive:
                up[n] = True
            share = -(-len(pending) * KEY_LOAD_FACTOR // len(self._alive))
            held = [0] * len(self.endpoints)
            orders = self._orders
            for rank in range(len(self.endpoints)):
                rest: list[int] = []
                for h in pending:
                    n = orders[h][rank]
                    if up[n] and held[n] < share:
                        homes[h] = n
                        held[n] += 1
                    else:
                        rest.append(h)
                if not rest:
                    break
                pending = rest
        self.homes = homes

    def home(self, key: str) -> str | None:
        """The URL of the endpoint the last rebalance gave ``key``, if the key is active."""
        index = self.homes.get(_hash(key))
        return None if index is None else self.endpoints[index].url

    def by_key(self, key: str, up: Sequence[Endpoint]) -> Endpoint:
        """Consistent hashing with bounded load: the key's endpoint if it has room, else the next with room."""
        return self._by_hash(_hash(key), up)

    def _by_hash(self, h: int, up: Sequence[Endpoint]) -> Endpoint:
        # Counting this call, within 1.25x the mean (and at least one call: the window may be empty).
        share = max(1.0, LOAD_FACTOR * (len(self.window) + 1) / len(up))
        in_flight = math.ceil(IN_FLIGHT_FACTOR * (self.in_flight + 1) / len(up))
        endpoints = self.endpoints
        recent = self.recent
        home = self.homes.get(h)
        if home is not None:
            e = endpoints[home]
            if e in up and recent[home] + 1 <= share and e.outstanding < in_flight:
                return e
        first: Endpoint | None = None
        order = self._orders.get(h)
        for index in order if order is not None else self.ring.order(h):
            e = endpoints[index]
            if e not in up:
                continue
            if recent[index] + 1 <= share and e.outstanding < in_flight:
                return e
            if first is None:
                first = e
        assert first is not None
        return first


class _Released(StepStream):
    """A streamed answer that releases its endpoint's slot when it ends or is closed."""

    def __init__(self, inner: StepStream, route: StepRoute, endpoint: Endpoint) -> None:
        self._inner = inner
        self._route: StepRoute | None = route
        self._endpoint = endpoint

    def _release(self) -> None:
        if self._route is not None:
            self._route.release(self._endpoint)
            self._route = None

    def ready(self) -> bytes | None:
        return self._inner.ready()

    async def __anext__(self) -> bytes:
        try:
            return await self._inner.__anext__()
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        self._release()
        await self._inner.aclose()


class StepRoute:
    """What a step with several endpoints, or a mirror, does per call (built at plan time)."""

    def __init__(self, node: str, step: str, urls: Sequence[str], affinity: Affinity | None = None,
                 balance: str = "leastRequest", mirror: MirrorSpec | None = None) -> None:
        self.node = node
        self.step = step
        self.endpoints = EndpointSet(urls, affinity, balance) if len(set(urls)) > 1 else None
        self.url = urls[0]
        self._once: tuple[StepPolicy, StepPolicy] | None = None  # the step's policy, and it without retries
        self.mirror: Mirror | None = None
        if mirror is not None:
            from .mirror import Mirror

            self.mirror = Mirror(mirror, node, step)

    def call(self, client: UpstreamClient, step: StepPlan, body: bytes, headers: CIMultiDict[str],
             ctx: RequestContext, tail: bool) -> Awaitable[StepResponse]:
        """The step's call: its endpoint chosen, and a copy sent to the mirror when drawn."""
        primary = self._primary(client, step, body, headers, ctx, tail)
        if self.mirror is None:
            return primary
        return self.mirror.around(primary, client, body, headers, ctx)

    def _primary(self, client: UpstreamClient, step: StepPlan, body: bytes, headers: CIMultiDict[str],
                 ctx: RequestContext, tail: bool) -> Awaitable[StepResponse]:
        if self.endpoints is None:
            return client.call(self.url, body, headers, ctx.step_timeout, stream=tail, policy=step.policy,
                               deadline=ctx.deadline)
        return self._chosen(client, step, body, headers, ctx, tail)

    def release(self, endpoint: Endpoint) -> None:
        endpoint.outstanding -= 1
        assert self.endpoints is not None
        self.endpoints.in_flight -= 1

    async def _chosen(self, client: UpstreamClient, step: StepPlan, body: bytes, headers: CIMultiDict[str],
                      ctx: RequestContext, tail: bool) -> StepResponse:
        endpoints = self.endpoints
        assert endpoints is not None
        policy = step.policy
        if policy is None or policy.retries == 0:
            endpoint = endpoints.pick(body, headers, client._breakers)
            return await self._attempt(client, endpoint, policy, body, headers, ctx, tail)
        return await self._retried(client, policy, body, headers, ctx, tail)

    async def _retried(self, client: UpstreamClient, policy: StepPolicy, body: bytes, headers: CIMultiDict[str],
                       ctx: RequestContext, tail: bool) -> StepResponse:
        """The step policy's retries, each on an endpoint this call has not failed on yet.

        The same rules as UpstreamClient's (transport errors, or a status in ``retryOn``;
        exponential backoff with full jitter; never past the deadline), plus an open
        circuit, since another endpoint may answer.
        """
        endpoints = self.endpoints
        assert endpoints is not None
        once = self._once
        if once is None or once[0] is not policy:
            once = self._once = (policy, policy.model_copy(update={"retries": 0}))
        loop = asyncio.get_running_loop()
        tried: list[Endpoint] = []
        attempt = 0
        while True:
            endpoint = endpoints.pick(body, headers, client._breakers, tried)
            try:
                result = await self._attempt(client, endpoint, once[1], body, headers, ctx, tail)
            except (UpstreamError, CircuitOpen):
                if attempt >= policy.retries:
                    raise
            else:
                if attempt >= policy.retries or result.status not in policy.retry_on:
                    return result
                if result.stream is not None:
                    await result.stream.aclose()
            tried.append(endpoint)
            pause = min(policy.max_backoff_seconds, policy.backoff_seconds * 2**attempt) * random.random()
            if ctx.deadline is not None and loop.time() + pause >= ctx.deadline:
                raise DeadlineExceeded(f"the request's deadline leaves no time to retry step {self.step}")
            await asyncio.sleep(pause)
            attempt += 1

    async def _attempt(self, client: UpstreamClient, endpoint: Endpoint, policy: StepPolicy | None, body: bytes,
                       headers: CIMultiDict[str], ctx: RequestContext, tail: bool) -> StepResponse:
        """One call to ``endpoint``, counted while it is outstanding and in the metrics."""
        endpoints = self.endpoints
        assert endpoints is not None
        if ctx.explain is not None:
            ctx.explain.append({"node": self.node, "step": self.step, "endpoint": endpoint.label})
        probe = ctx.probe
        if probe is not None:
            probe.endpoint = endpoint.label
        endpoint.outstanding += 1
        endpoints.in_flight += 1
        endpoints.record(endpoint)
        try:
            result = await client.call(endpoint.url, body, headers, ctx.step_timeout, stream=tail,
                                       policy=policy, deadline=ctx.deadline)
        except BaseException as exc:
            self.release(endpoint)
            self._count(ctx, endpoint, "error" if isinstance(exc, RequestError) else "cancelled")
            raise
        self._count(ctx, endpoint, result.status)
        if result.stream is None:
            self.release(endpoint)
            return result
        return StepResponse(result.status, result.body, result.content_type,
                            _Released(result.stream, self, endpoint), result.content_encoding)

    def _count(self, ctx: RequestContext, endpoint: Endpoint, code: int | str) -> None:
        probe = ctx.probe
        if probe is not None:
            counts = probe.telemetry.metrics.endpoint_requests
            key = (probe.graph, self.node, self.step, endpoint.label, str(code))
            counts[key] = counts.get(key, 0) + 1

