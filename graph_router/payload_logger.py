"""Payload logging (the annotation's ``logger``, kserve#2722): step requests and answers as CloudEvents.

Each selected step call sends its request body and its answer to ``url`` as CloudEvents
over HTTP in binary mode, as KServe's model logger does: the body is the payload, the
attributes are ``ce-*`` headers (``ce-type`` ``org.kubeflow.serving.inference.request``
or ``.response``, ``ce-id`` the request id, shared by both events of a call).

It must never delay or fail a request: events go into a bounded queue that one task
drains; a full queue drops the event (counted in
``graph_router_logger_events_total{outcome="dropped"}``), and a sink that is slow or
down only costs that task's time (``outcome="failed"``). Which steps are logged is
decided when the graph loads (:func:`attach`); other steps' calls are untouched.

Modes: ``all`` (request and answer), ``request``, ``response``, ``failures`` (both, only
for a call that failed: a transport error or a status of 400 and above). ``sample``
draws per call. A streamed answer is logged without its body (``ce-streamed: true``):
holding it would delay the client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import httpclient
from .errors import RequestError
from .security.models import LoggerSpec

if TYPE_CHECKING:
    from multidict import CIMultiDict

    from .executor import Executor, RequestContext
    from .plan import NodePlan, StepPlan
    from .upstream import StepResponse

logger = logging.getLogger(__name__)

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
QUEUE_SIZE = 1024
SEND_TIMEOUT = 5.0


class PayloadLogger:
    """One sink: a bounded queue and the task that posts its events, started on first use."""

    def __init__(self, spec: LoggerSpec, graph: str, *, queue_size: int = QUEUE_SIZE) -> None:
        self.spec = spec
        self.graph = graph
        self.counts: dict[tuple[str, str], int] = {}  # (graph, outcome) -> events
        self._queue: asyncio.Queue[tuple[list[tuple[str, str]], bytes]] | None = None
        self._queue_size = queue_size
        self._task: asyncio.Task[None] | None = None
        self._http: httpclient.HTTPClient | None = None

    def _count(self, outcome: str) -> None:
        key = (self.graph, outcome)
        self.counts[key] = self.counts.get(key, 0) + 1

    def emit(self, ce_type: str, request_id: str, source: str, body: bytes, content_type: str | None,
             extra: Mapping[str, str] | None = None) -> None:
        """Queue one event; never waits (a full queue drops it)."""
        if self._queue is None:
            self._queue = asyncio.Queue(self._queue_size)
            self._task = asyncio.get_running_loop().create_task(self._send_all())
        headers = [
            ("ce-specversion", "1.0"), ("ce-id", request_id), ("ce-type", ce_type), ("ce-source", source),
            ("ce-inferencegraph", self.graph), ("Content-Type", content_type or "application/json"),
        ]
        if extra:
            headers.extend(extra.items())
        try:
            self._queue.put_nowait((headers, body))
        except asyncio.QueueFull:
            self._count("dropped")

    async def _send_all(self) -> None:
        assert self._queue is not None
        self._http = httpclient.HTTPClient(per_host=4, connect_timeout=SEND_TIMEOUT)
        while True:
            headers, body = await self._queue.get()
            try:
                answer = await self._http.post(self.spec.url, _Headers(headers), body, timeout=SEND_TIMEOUT)
                if answer.stream is not None:
                    await answer.stream.aclose()
                self._count("sent" if answer.status < 300 else "failed")
            except (httpclient.ClientError, TimeoutError, OSError, ValueError) as exc:
                self._count("failed")
                logger.debug("payload logger: sending to %s failed: %s", self.spec.url, exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._http is not None:
            await self._http.close()


class _Headers:
    """Header pairs in the shape HTTPClient.build_request reads (``items()``)."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def items(self) -> list[tuple[str, str]]:
        return self._pairs


class StepTap:
    """One logged step: calls it as it would be called, and queues its events."""

    __slots__ = ("inner", "log", "mode", "sample", "source")

    def __init__(self, inner: StepPlan, log: PayloadLogger, source: str) -> None:
        self.inner = inner  # the same step without the tap
        self.log = log
        self.mode = log.spec.mode
        self.sample = log.spec.sample
        self.source = source

    async def call(self, executor: Executor, url: str, body: bytes, headers: CIMultiDict[str],
                   ctx: RequestContext, tail: bool) -> StepResponse:
        if self.sample < 1.0 and random.random() >= self.sample:
            return await executor._call(self.inner, url, body, headers, ctx, tail)
        probe = ctx.probe
        if probe is not None:
            if probe.request_id is None:
                probe.request_id = str(uuid.uuid4())  # one id for every event of the request (and its log line)
            request_id = probe.request_id
            counts = probe.telemetry.metrics.logger_events
            if self.log.counts is not counts:
                counts.update(self.log.counts)
                self.log.counts = counts  # /metrics reads the same dict
        else:
            request_id = headers.get("x-request-id") or str(uuid.uuid4())
        mode, log = self.mode, self.log
        content_type = headers.get("content-type")
        if mode == "all" or mode == "request":
            log.emit(REQUEST_TYPE, request_id, self.source, body, content_type)
        try:
            result = await executor._call(self.inner, url, body, headers, ctx, tail)
        except RequestError as exc:
            if mode != "request":
                if mode == "failures":
                    log.emit(REQUEST_TYPE, request_id, self.source, body, content_type)
                log.emit(RESPONSE_TYPE, request_id, self.source,
                         b'{"error": %s}' % _json_str(exc.cause), "application/json",
                         {"ce-status": str(exc.status), "ce-failed": "true"})
            raise
        if mode == "request" or (mode == "failures" and result.status < 400):
            return result
        if mode == "failures":
            log.emit(REQUEST_TYPE, request_id, self.source, body, content_type)
        extra = {"ce-status": str(result.status)}
        if result.stream is not None:
            extra["ce-streamed"] = "true"
            log.emit(RESPONSE_TYPE, request_id, self.source, b"", result.content_type, extra)
        else:
            if result.content_encoding is not None:
                extra["ce-contentencoding"] = result.content_encoding
            log.emit(RESPONSE_TYPE, request_id, self.source, result.body, result.content_type, extra)
        return result


def _json_str(text: str) -> bytes:
    import orjson

    return orjson.dumps(text)


_LOGGERS: dict[tuple[str, LoggerSpec], PayloadLogger] = {}


def attach(nodes: Mapping[str, NodePlan], spec: LoggerSpec | None, graph: str) -> PayloadLogger | None:
    """Give every service-calling step of the graph a tap (at load); None when there is no ``logger``."""
    if spec is None:
        return None
    # One logger (queue and task) per graph and settings for the life of the process:
    # a reloaded graph keeps sending through the same one.
    log = _LOGGERS.get((graph, spec))
    if log is None:
        log = _LOGGERS[(graph, spec)] = PayloadLogger(spec, graph)
    for node in nodes.values():
        for step in node.steps:
            if step.url is None:
                continue
            inner = dataclasses.replace(step)
            # StepPlan is frozen for the request path; the tap is set once, here, before serving.
            object.__setattr__(step, "tap", StepTap(inner, log, f"graph-router/{graph}/{node.name}/{step.label}"))
    return log
