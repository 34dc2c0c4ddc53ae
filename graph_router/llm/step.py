"""An LLM step's calls: OpenAI accounting and fallbacks, decided when the plan is compiled.

:class:`LLMStep` sits on a :class:`~graph_router.plan.StepPlan` only when the step is an
OpenAI step or declares fallbacks; every other step's ``llm`` is None and its calls
never come here. Per graph request, :class:`LLMRequest` (on the request's probe)
collects the figures the answer, the access log and the span report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from multidict import CIMultiDict

from ..errors import CircuitOpen, DeadlineExceeded, RequestError, UpstreamError
from ..mapping import Template
from ..upstream import StepResponse, StepStream, UpstreamClient
from .budget import Budgets
from .metrics import LLMMetrics, StepSeries
from .sse import UsageStream, ask_for_usage, plain_usage

if TYPE_CHECKING:
    from ..executor import RequestContext
    from ..httpclient import BodyStream, HeadListener, Ready
    from ..plan import StepPlan
    from ..telemetry.recorder import RequestProbe

OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
FALLBACK_HEADER = "X-Graph-Fallback"


def is_openai(url: str | None, declared: bool | None) -> bool:
    """An OpenAI step: declared so, or (undeclared) its URL path ends in an OpenAI endpoint."""
    if declared is not None:
        return declared
    if not url:
        return False
    return urlsplit(url).path.rstrip("/").endswith(OPENAI_PATHS)


def fails_over(status: int) -> bool:
    """An answer that sends the call on to the next fallback: 429 or 5xx."""
    return status == 429 or status >= 500


class Target:
    """One fallback: where to call, and the template that rewrites the step's body for it."""

    __slots__ = ("template", "url")

    def __init__(self, url: str, template: Template | None) -> None:
        self.url = url
        self.template = template

    def body(self, body: bytes, graph_request: bytes, label: str) -> bytes:
        """The step's body for this target: the rendered template's keys over the step's own object.

        In the template, ``$request`` is the graph's request and ``$response`` the body the
        step sends its first target, so ``{model: small}`` changes only the model.
        """
        if self.template is None:
            return body
        rendered = self.template.render({"$request": graph_request, "$response": body}, label)
        try:
            base = orjson.loads(body)
            over = orjson.loads(rendered)
        except orjson.JSONDecodeError:
            return rendered
        if isinstance(base, dict) and isinstance(over, dict):
            base.update(over)
            return orjson.dumps(base)
        return rendered


class LLMRequest:
    """One graph request's LLM figures (summed over its OpenAI steps) and its tenant."""

    __slots__ = ("budgets", "deferred", "fallback", "input_tokens", "itl", "open_streams", "output_tokens",
                 "tenant", "ttfb", "ttft")

    def __init__(self, budgets: Budgets | None = None, tenant: str = "default") -> None:
        self.budgets = budgets
        self.tenant = tenant
        self.fallback: int | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.ttfb: float | None = None
        self.ttft: float | None = None
        self.itl: float | None = None
        self.open_streams = 0
        self.deferred: Any = None  # the probe's log line and span end, waiting for a stream's usage

    def charge(self, prompt: int, completion: int) -> None:
        self.input_tokens = (self.input_tokens or 0) + prompt
        self.output_tokens = (self.output_tokens or 0) + completion
        if self.budgets is not None:
            self.budgets.charge(self.tenant, prompt + completion)

    def fields(self) -> list[tuple[str, object]]:
        """The figures known so far, under OpenTelemetry GenAI names (access log, span)."""
        out: list[tuple[str, object]] = []
        if self.input_tokens is not None:
            out.append(("gen_ai.usage.input_tokens", self.input_tokens))
            out.append(("gen_ai.usage.output_tokens", self.output_tokens))
        if self.ttfb is not None:
            out.append(("gen_ai.server.time_to_first_byte_ms", round(self.ttfb * 1000, 3)))
        if self.ttft is not None:
            out.append(("gen_ai.server.time_to_first_token_ms", round(self.ttft * 1000, 3)))
        if self.itl is not None:
            out.append(("gen_ai.server.time_per_output_token_ms", round(self.itl * 1000, 3)))
        if self.fallback is not None:
            out.append(("graph_router.fallback", self.fallback))
        return out


class StepTally:
    """One OpenAI call's figures as its answer arrives; reported once, when it has ended."""

    __slots__ = ("contents", "first", "last", "record", "series", "started", "usage_seen")

    def __init__(self, record: LLMRequest | None, series: StepSeries | None, started: float) -> None:
        self.record = record
        self.series = series
        self.started = started
        self.first = 0.0
        self.last = 0.0
        self.contents = 0
        self.usage_seen = False

    def content(self, at: float) -> None:
        if not self.contents:
            self.first = at
        self.last = at
        self.contents += 1

    def usage(self, prompt: int, completion: int) -> None:
        if self.usage_seen:
            return
        self.usage_seen = True
        if self.series is not None:
            self.series.prompt += prompt
            self.series.completion += completion
        if self.record is not None:
            self.record.charge(prompt, completion)

    def ended(self) -> None:
        """The stream is over (or abandoned): time to first token and between tokens."""
        record = self.record
        if self.contents:
            ttft = self.first - self.started
            itl = (self.last - self.first) / (self.contents - 1) if self.contents > 1 else None
            if self.series is not None:
                self.series.observe_ttft(ttft)
                if itl is not None:
                    self.series.observe_itl(itl)
            if record is not None:
                record.ttft = ttft
                record.itl = itl
        if record is not None:
            record.open_streams -= 1
            if not record.open_streams and record.deferred is not None:
                finish, record.deferred = record.deferred, None
                finish()


class LLMStep:
    """What the router adds to one step: OpenAI accounting and/or fallbacks."""

    __slots__ = ("_graph", "_metrics", "_series", "fallbacks", "label", "node", "openai")

    def __init__(self, node: str, label: str, openai: bool, fallbacks: tuple[Target, ...]) -> None:
        self.node = node
        self.label = label
        self.openai = openai
        self.fallbacks = fallbacks
        # The step's series, looked up once per (metrics, graph) rather than per answer:
        # the lookup runs before the first byte is relayed.
        self._metrics: LLMMetrics | None = None
        self._graph = ""
        self._series: StepSeries | None = None

    def call(self, client: UpstreamClient, step: StepPlan, url: str, body: bytes, headers: CIMultiDict[str],
             ctx: RequestContext, tail: bool) -> Awaitable[StepResponse]:
        return self._call(client, step, url, body, headers, ctx, tail)

    async def _call(self, client: UpstreamClient, step: StepPlan, url: str, body: bytes,
                    headers: CIMultiDict[str], ctx: RequestContext, tail: bool) -> StepResponse:
        probe = ctx.probe
        record: LLMRequest | None = None
        metrics: LLMMetrics | None = None
        if probe is not None:
            record = probe.llm
            if record is None:
                record = probe.llm = LLMRequest()
            metrics = probe.telemetry.metrics.llm
        last = len(self.fallbacks)
        for index in range(last + 1):
            target = url if index == 0 else self.fallbacks[index - 1].url
            request = body if index == 0 else self.fallbacks[index - 1].body(body, ctx.request_body, self.label)
            strip = False
            if self.openai and tail:
                asked = ask_for_usage(request)
                if asked is not None:
                    request, strip = asked, True
            started = perf_counter()
            early: _EarlyUsage | None = None
            try:
                route = getattr(step, "route", None) if index == 0 else None
                outer = ctx.early_for(step.policy, tail) if not last and self.openai else None  # no fallbacks
                if route is not None:  # the step's own endpoints (graph_router/endpoints.py)
                    result: StepResponse = await route.call(client, step, request, headers, ctx, tail)
                elif outer is not None:
                    # The router's head, and the first events tallied, may go out from the callback
                    # that reads the step's head.
                    early = _EarlyUsage(self, outer, probe, record, metrics, started, strip, target)
                    result = await client.call(target, request, headers, ctx.step_timeout, True, None, None, early)
                else:
                    result = await client.call(target, request, headers, ctx.step_timeout, stream=tail,
                                               policy=step.policy, deadline=ctx.deadline)
            except DeadlineExceeded:
                raise
            except (UpstreamError, CircuitOpen) as exc:
                self._explain(ctx, index, target, started, None, exc)
                if index == last:
                    raise
                self._moved_on(probe, metrics, index + 1)
                continue
            if index < last and fails_over(result.status):
                if result.stream is not None:
                    await result.stream.aclose()
                self._explain(ctx, index, target, started, result.status, None)
                self._moved_on(probe, metrics, index + 1)
                continue
            if last:
                self._explain(ctx, index, target, started, result.status, None)
            if index and record is not None:
                record.fallback = index - 1
            if self.openai and 200 <= result.status <= 299:
                if early is not None and early.stream is not None and result.stream is not None:
                    # Wrapped when its head came in (_EarlyUsage): the same stream, already tallying.
                    return StepResponse(result.status, result.body, result.content_type, early.stream, None)
                return self._account(result, probe, record, metrics, started, strip)
            return result
        raise AssertionError("unreachable: the last target raises or answers")

    def _moved_on(self, probe: RequestProbe | None, metrics: LLMMetrics | None, to: int) -> None:
        if probe is not None and metrics is not None:
            metrics.fallback(probe.graph, self.node, self.label, self.fallbacks[to - 1].url)

    def _explain(self, ctx: RequestContext, index: int, target: str, started: float, status: int | None,
                 exc: BaseException | None) -> None:
        """With fallbacks, explain lists each attempt (0: the step's own target)."""
        if ctx.explain is None:
            return
        entry: dict[str, object] = {"node": self.node, "step": self.label, "attempt": index, "target": target}
        if isinstance(exc, RequestError):
            entry["error"] = exc.cause
        else:
            entry["status"] = status
        entry["ms"] = round((perf_counter() - started) * 1000, 3)
        ctx.explain.append(entry)

    def _account(self, result: StepResponse, probe: RequestProbe | None, record: LLMRequest | None,
                 metrics: LLMMetrics | None, started: float, strip: bool) -> StepResponse:
        """Figures for an answer that has begun: usage now (plain) or as the stream passes."""
        tally = self.tally(probe, record, metrics, started)
        if result.stream is None:
            if result.content_encoding is None:
                counts = plain_usage(result.body)
                if counts is not None:
                    tally.usage(*counts)
            return result
        if result.content_encoding is not None:
            return result  # compressed bytes: relayed untouched, not read
        stream = self.tallied(result.stream, result.content_type, tally, record, strip)
        return StepResponse(result.status, result.body, result.content_type, stream, None)

    def tally(self, probe: RequestProbe | None, record: LLMRequest | None, metrics: LLMMetrics | None,
              started: float) -> StepTally:
        """The answer's tally, its time to first byte taken now."""
        series = None
        if metrics is not None and probe is not None:
            graph = probe.graph
            if metrics is self._metrics and graph == self._graph:
                series = self._series
            else:
                series = self._series = metrics.step(graph, self.node, self.label)
                self._metrics, self._graph = metrics, graph
        if record is not None:
            record.ttfb = perf_counter() - started
        return StepTally(record, series, started)

    @staticmethod
    def tallied(stream: StepStream, content_type: str | None, tally: StepTally, record: LLMRequest | None,
                strip: bool) -> UsageStream:
        """A streamed (not encoded) answer's body, tallied as it passes."""
        if record is not None:
            record.open_streams += 1
        return UsageStream(stream, tally, strip, (content_type or "").startswith("text/event-stream"))


class _EarlyUsage:
    """An OpenAI tail step's head listener: the stream is wrapped (and tallied) when its head is
    read, and handed on to the router's listener, which writes the head and first events then.

    Only for a call nothing can retry or replace (no fallbacks, policy or deadline); the
    step's coroutine, when it resumes, returns the same stream (``stream``).
    """

    __slots__ = ("_llm", "_metrics", "_outer", "_probe", "_record", "_started", "_strip", "_url", "stream")

    def __init__(self, llm: LLMStep, outer: HeadListener, probe: RequestProbe | None, record: LLMRequest | None,
                 metrics: LLMMetrics | None, started: float, strip: bool, url: str) -> None:
        self._llm = llm
        self._outer = outer
        self._probe = probe
        self._record = record
        self._metrics = metrics
        self._started = started
        self._strip = strip
        self._url = url
        self.stream: UsageStream | None = None

    def stream_head(self, status: int, content_type: str | None, encoding: str | None, stream: Ready) -> None:
        if 200 <= status <= 299 and encoding is None:  # as _account: other answers pass untouched
            tally = self._llm.tally(self._probe, self._record, self._metrics, self._started)
            if TYPE_CHECKING:  # the connection hands its BodyStream (typing.cast would run interpreted)
                assert isinstance(stream, BodyStream)
            body = StepStream(stream, self._url)
            usage = self.stream = LLMStep.tallied(body, content_type, tally, self._record, self._strip)
            self._outer.stream_head(status, content_type, encoding, usage)
        else:
            self._outer.stream_head(status, content_type, encoding, stream)


def fallback_problems(fallbacks: list[Any]) -> list[str]:
    """What is wrong with a step's ``fallback`` list (URLs and templates), for the load error."""
    from ..validation import step_url_problem

    problems = []
    for i, fallback in enumerate(fallbacks):
        if step_url_problem(fallback.service_url) is not None:
            problems.append(f"fallback.{i}.serviceUrl: {fallback.service_url!r} is not an http:// or https:// URL")
        if fallback.request is not None:
            try:
                template = Template(fallback.request)
            except ValueError as exc:
                problems.append(f"fallback.{i}.request: {exc}")
                continue
            if template.step_names:
                problems.append(f"fallback.{i}.request: only $request and $response (the step's own request) "
                                "can be read here")
    return problems


def build(node: str, label: str, url: str | None, ext: Any, services: Mapping[str, str]) -> LLMStep | None:
    """The step's LLMStep (``ext``: its StepExtension), or None when it is neither an OpenAI
    step nor has fallbacks: then its calls pay nothing for this package."""
    openai = ext.openai if ext is not None else None
    fallbacks = list(ext.fallback) if ext is not None else []
    is_ai = is_openai(url, openai)
    if url is None or (not is_ai and not fallbacks):
        return None
    targets = tuple(
        Target(services.get(f.service_url) or f.service_url, Template(f.request) if f.request is not None else None)
        for f in fallbacks
    )
    return LLMStep(node, label, is_ai, targets)
