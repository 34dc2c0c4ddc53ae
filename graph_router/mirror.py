"""Traffic mirroring: a share of a step's calls also goes to a candidate, never in the way.

``mirror: {serviceUrl: URL, percent: P}`` on a step. A drawn call's body and
propagated headers are sent to the mirror too, as a task of its own; the primary's
answer is what the graph uses. The mirror's answer is read whole (a streamed primary
is mirrored with a plain request: :func:`plain_request`), compared with the primary's
(same status and equal as JSON, else equal bytes; an OpenAI stream by its text) and
discarded, and the outcome counted:
``same``, ``different``, ``error`` (the mirror gave no answer) or ``dropped``.

Never in the way of the primary:

- the primary is not awaited behind the mirror, and its bytes are passed on as they
  arrive (a streamed primary is copied aside, up to ``COMPARE_LIMIT``, for comparing);
- a mirror failure is only counted;
- mirror calls are tasks kept in one set per process, under one cap
  (``MirrorPool.cap``); past it a drawn call is not mirrored (``dropped``);
- a client that disconnects cancels its primary, not the mirror call: the candidate
  is being measured on the traffic it would have served, so its call finishes (bounded
  by the mirror's ``timeoutSeconds``); the comparison then counts ``different``, as
  does any primary without a complete answer;
- mirror calls go through the same per-host circuit breakers, so a dead candidate
  fails fast instead of filling the cap with hung calls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import orjson
from multidict import CIMultiDict

from .errors import RequestError
from .upstream import StepResponse, StepStream, readable

if TYPE_CHECKING:
    from .executor import RequestContext
    from .extensions import MirrorSpec
    from .upstream import UpstreamClient

COMPARE_LIMIT = 8 * 1024 * 1024  # bytes of a streamed primary kept for comparing
OUTCOMES = ("same", "different", "error", "dropped")


class MirrorPool:
    """This process's mirror calls: their task handles (kept so none is collected) and the cap."""

    def __init__(self, cap: int = 64) -> None:
        self.cap = cap
        self.tasks: set[asyncio.Task[None]] = set()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the mirror calls now running (tests; a stopping server)."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=timeout)


POOL = MirrorPool()


def plain_request(body: bytes) -> bytes:
    """The mirror's body: the primary's, with an OpenAI ``"stream": true`` turned off.

    A streamed primary is mirrored with a plain request: the candidate's whole answer is
    what is compared, and its stream's ids and timestamps would differ anyway.
    """
    if b'"stream"' not in body:
        return body
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(doc, dict) or doc.get("stream") is not True:
        return body
    doc["stream"] = False
    doc.pop("stream_options", None)
    return orjson.dumps(doc)


def same_answer(primary: tuple[int, bytes], status: int, body: bytes) -> bool:
    """Same status, and bodies equal as JSON (or as bytes when either is not JSON).

    A primary that streamed OpenAI chunks is compared by its text per choice with the
    mirror's plain completion (``choices[i].message.content``).
    """
    if primary[0] != status:
        return False
    if primary[1] == body:
        return True
    try:
        mirrored = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    streamed = _streamed_text(primary[1])
    if streamed is not None:
        return streamed == _message_text(mirrored)
    try:
        return bool(orjson.loads(primary[1]) == mirrored)
    except orjson.JSONDecodeError:
        return False


def _streamed_text(body: bytes) -> dict[int, str] | None:
    """The text of each choice of an OpenAI event stream; None when ``body`` is not one."""
    if not body.lstrip().startswith(b"data:"):
        return None
    text: dict[int, str] = {}
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            continue
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        for choice in event.get("choices") or () if isinstance(event, dict) else ():
            if isinstance(choice, dict):
                piece = (choice.get("delta") or {}).get("content")
                index = int(choice.get("index") or 0)
                text[index] = text.get(index, "") + (piece if isinstance(piece, str) else "")
    return text


def _message_text(doc: object) -> dict[int, str] | None:
    """The text of each choice of a plain OpenAI completion."""
    if not isinstance(doc, dict) or not isinstance(doc.get("choices"), list):
        return None
    text: dict[int, str] = {}
    for choice in doc["choices"]:
        if isinstance(choice, dict):
            content = (choice.get("message") or {}).get("content")
            text[int(choice.get("index") or 0)] = content if isinstance(content, str) else ""
    return text


class Mirror:
    """One step's mirror: where, how often, and its outcome counts in this process."""

    def __init__(self, spec: MirrorSpec, node: str, step: str, pool: MirrorPool | None = None,
                 rng: random.Random | None = None) -> None:
        self.url = spec.service_url
        self.percent = spec.percent
        self.timeout = spec.timeout_seconds
        self.node = node
        self.step = step
        self.pool = pool or POOL
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self._rng = rng or random.Random()

    def around(self, primary: Awaitable[StepResponse], client: UpstreamClient, body: bytes,
               headers: CIMultiDict[str], ctx: RequestContext) -> Awaitable[StepResponse]:
        """``primary``, with a mirror call started beside it when this call is drawn."""
        if self.percent < 100 and self._rng.random() * 100 >= self.percent:
            return primary
        if len(self.pool.tasks) >= self.pool.cap:
            self._count(ctx, "dropped")
            return primary
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[tuple[int, bytes] | None] = loop.create_future()
        task = loop.create_task(self._shadow(client, plain_request(body), CIMultiDict(headers), seen, ctx))
        self.pool.tasks.add(task)
        task.add_done_callback(self.pool.tasks.discard)
        return self._watched(primary, seen, client)

    async def _watched(self, primary: Awaitable[StepResponse], seen: asyncio.Future[tuple[int, bytes] | None],
                       client: UpstreamClient) -> StepResponse:
        try:
            result = await primary
        except BaseException:
            if not seen.done():
                seen.set_result(None)
            raise
        if result.stream is not None:
            return StepResponse(result.status, result.body, result.content_type,
                                _Copied(result.stream, seen, result.status, result.content_encoding, client),
                                result.content_encoding)
        seen.set_result((result.status, _decoded(result.body, result.content_encoding, client)))
        return result

    async def _shadow(self, client: UpstreamClient, body: bytes, headers: CIMultiDict[str],
                      seen: asyncio.Future[tuple[int, bytes] | None], ctx: RequestContext) -> None:
        try:
            answer = await client.call(self.url, body, headers, self.timeout)
        except RequestError:
            self._count(ctx, "error")
            return
        primary = await seen
        self._count(ctx, "same" if primary is not None and same_answer(primary, answer.status, answer.body)
                    else "different")

    def _count(self, ctx: RequestContext, outcome: str) -> None:
        self.outcomes[outcome] += 1
        probe = ctx.probe
        if probe is not None:
            counts = probe.telemetry.metrics.mirror_requests
            key = (probe.graph, self.node, self.step, outcome)
            counts[key] = counts.get(key, 0) + 1


def _decoded(body: bytes, encoding: str | None, client: UpstreamClient) -> bytes:
    if encoding is None:
        return body
    try:
        return readable(body, encoding, COMPARE_LIMIT, "mirror comparison")
    except RequestError:
        return body


class _Copied(StepStream):
    """A streamed primary passed on unchanged, its bytes copied aside for the comparison."""

    def __init__(self, inner: StepStream, seen: asyncio.Future[tuple[int, bytes] | None], status: int,
                 encoding: str | None, client: UpstreamClient) -> None:
        self._inner = inner
        self._seen = seen
        self._status = status
        self._encoding = encoding
        self._client = client
        self._chunks: list[bytes] | None = []
        self._size = 0

    def _settle(self, complete: bool) -> None:
        if self._seen.done():
            return
        if complete and self._chunks is not None:
            body = _decoded(b"".join(self._chunks), self._encoding, self._client)
            self._seen.set_result((self._status, body))
        else:
            self._seen.set_result(None)
        self._chunks = None

    def _keep(self, chunk: bytes) -> None:
        if self._chunks is not None:
            self._size += len(chunk)
            if self._size > COMPARE_LIMIT:
                self._chunks = None  # too long to compare: counted as different
            else:
                self._chunks.append(chunk)

    def ready(self) -> bytes | None:
        chunk = self._inner.ready()
        if chunk:
            self._keep(chunk)
        return chunk

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._inner.__anext__()
        except StopAsyncIteration:
            self._settle(True)
            raise
        except BaseException:
            self._settle(False)
            raise
        self._keep(chunk)
        return chunk

    async def aclose(self) -> None:
        self._settle(False)
        await self._inner.aclose()
