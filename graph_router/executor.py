"""Runs a compiled plan: one executor per node kind, KServe's semantics exactly.

Bodies stay bytes end to end; JSON is parsed only where a node must look inside
(conditions, Ensemble merge, mapPredictionsToInstances), once per body.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson
from multidict import CIMultiDict

from . import gjson
from .conditions import exists_parsed
from .errors import NodeFailure, NoRouteMatched, RequestError
from .mapping import v2_outputs_to_inputs
from .plan import GraphPlan, NodePlan, StepPlan
from .spec import RouterType
from .upstream import StepResponse, UpstreamClient

if TYPE_CHECKING:
    from .extensions import StepPolicy
    from .httpclient import HeadListener
    from .telemetry.recorder import RequestProbe


class RequestContext:
    """What every step of one graph request shares.

    ``explain``: when a list, every node entered, condition tested and step run appends
    one small dict to it, in execution order (the path the request took). None (the
    default) records nothing and costs one ``is None`` test per event.
    ``request_body``: the graph's original request, for $request in templates.
    ``probe``: the server's metrics and spans; None outside the server.
    ``deadline``: loop time by which the whole request must be answered.
    ``early``: told of the graph's streamed answer's head as soon as the tail step's
    head is read (a plain tail call only: see ``Executor._call``).
    """

    __slots__ = ("deadline", "early", "explain", "headers", "probe", "request_body", "step_timeout")

    def __init__(self, headers: CIMultiDict[str], step_timeout: float | None,
                 explain: list[dict[str, object]] | None = None, request_body: bytes = b"",
                 probe: RequestProbe | None = None, deadline: float | None = None,
                 early: HeadListener | None = None) -> None:
        self.headers = headers
        self.step_timeout = step_timeout
        self.explain = explain
        self.request_body = request_body
        self.probe = probe
        self.deadline = deadline
        self.early = early

    def early_for(self, policy: StepPolicy | None, tail: bool) -> HeadListener | None:
        """The head listener for a step call whose answer nothing can retry or replace once
        its head is in (the tail call, no policy, no deadline); None for any other call."""
        if tail and policy is None and self.deadline is None:
            return self.early
        return None


def map_predictions_to_instances(body: bytes) -> bytes:
    """``{"predictions": [...]}`` becomes ``{"instances": [...]}``; anything else is unchanged."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(doc, dict):
        predictions = doc.get("predictions")
        if isinstance(predictions, list) and predictions:
            return orjson.dumps({"instances": predictions})
    return body


def _as_child_failure(exc: RequestError) -> RequestError:
    """A child node's failure seen by a Sequence or Ensemble parent: 500, same cause (as KServe).

    Errors that are not node failures (a template reference that selected nothing)
    keep their own status.
    """
    if not isinstance(exc, NodeFailure) or exc.status == 500:
        return exc
    return NodeFailure(exc.cause, status=500)


class Executor:
    """Executes plans against services through one shared upstream client."""

    def __init__(self, client: UpstreamClient, rng: random.Random | None = None) -> None:
        self._client = client
        self._rng = rng or random.Random()
        self._kinds: dict[
            RouterType, Callable[[NodePlan, bytes, RequestContext, bool], Awaitable[StepResponse]]
        ] = {
            RouterType.SEQUENCE: self._sequence,
            RouterType.SWITCH: self._switch,
            RouterType.ENSEMBLE: self._ensemble,
            RouterType.SPLITTER: self._splitter,
        }

    # ``run`` and ``_node`` are plain functions handing back the coroutine that does the
    # work: each coroutine level a request passes through costs CPU to make and resume.
    def run(
        self,
        plan: GraphPlan,
        body: bytes,
        headers: CIMultiDict[str],
        explain: list[dict[str, object]] | None = None,
        probe: RequestProbe | None = None,
        deadline: float | None = None,
        early: HeadListener | None = None,
    ) -> Awaitable[StepResponse]:
        """Run the graph from ``root``; awaiting it raises RequestError when the graph fails.

        Pass a list as ``explain`` to have the path taken recorded into it, and a probe
        to have every step reported to it (metrics, spans). ``early``: see RequestContext.
        """
        ctx = RequestContext(headers, plan.timeouts.service_client, explain, body, probe, deadline, early)
        return self._node(plan.root, body, ctx, True)

    def _node(self, node: NodePlan, body: bytes, ctx: RequestContext, tail: bool) -> Awaitable[StepResponse]:
        """Run a node; ``tail``: its answer is the graph's answer, so it may stream."""
        if ctx.explain is not None:
            ctx.explain.append({"node": node.name, "kind": node.kind.value})
        probe = ctx.probe
        if probe is not None and probe.tracer is not None:
            return probe.tracer.node(probe.graph, node, self._kinds[node.kind](node, body, ctx, tail))
        if node.only is not None:  # a Sequence of one service call, as _sequence would run it: one level less
            return self._step(node, node.only, body, ctx, tail)
        return self._kinds[node.kind](node, body, ctx, tail)

    async def _step(
        self, node: NodePlan, step: StepPlan, body: bytes, ctx: RequestContext, tail: bool = False
    ) -> StepResponse:
        probe = ctx.probe
        if ctx.explain is None:
            if probe is None:
                if step.node is not None:
                    return await self._node(step.node, body, ctx, tail)
                assert step.url is not None
                return await self._call(step, step.url, body, ctx.headers, ctx, tail)
            if step.url is not None and probe.tracer is None:
                # The serving path: one service call, timed for the metrics
                # (RequestProbe.call_started written out: this runs for every step).
                started = time.perf_counter()
                if not probe.outstanding:
                    probe.wait_from = started
                probe.outstanding += 1
                try:
                    result = await self._call(step, step.url, body, ctx.headers, ctx, tail)
                except (RequestError, asyncio.CancelledError) as exc:
                    probe.step_failed(node, step, exc, started)
                    raise
                probe.call_done(node, step, result.status, started)
                return result
        entry: dict[str, object] | None = None
        if ctx.explain is not None:
            entry = {"node": node.name, "step": step.label, "target": step.target}
            ctx.explain.append(entry)
        started = time.perf_counter()
        try:
            if step.node is not None:
                result = await self._node(step.node, body, ctx, tail)
            else:
                url = step.url
                assert url is not None
                if probe is None:
                    result = await self._call(step, url, body, ctx.headers, ctx, tail)
                else:
                    started = probe.call_started()
                    if probe.tracer is None:
                        result = await self._call(step, url, body, ctx.headers, ctx, tail)
                    else:
                        result = await probe.tracer.call(
                            probe.graph, node, step, ctx.headers,
                            lambda headers: self._call(step, url, body, headers, ctx, tail),
                        )
        except (RequestError, asyncio.CancelledError) as exc:
            if probe is not None:
                probe.step_failed(node, step, exc, started)
            if entry is not None:
                if isinstance(exc, RequestError):
                    entry["error"] = exc.cause
                entry["ms"] = round((time.perf_counter() - started) * 1000, 3)
            raise
        if probe is not None:
            if step.url is not None:
                probe.call_done(node, step, result.status, started)
            else:
                probe.step_done(step, result.status, started)
        if entry is not None:
            entry["ms"] = round((time.perf_counter() - started) * 1000, 3)
            entry["status"] = result.status
        return result

    def _call(
        self, step: StepPlan, url: str, body: bytes, headers: CIMultiDict[str], ctx: RequestContext, tail: bool
    ) -> Awaitable[StepResponse]:
        """One service call with the step's policy and the request's deadline."""
        if step.tap is not None:  # payload logging (graph_router/payload_logger.py), decided at plan time
            return step.tap.call(self, url, body, headers, ctx, tail)
        if step.llm is not None:  # an OpenAI step or fallbacks (graph_router/llm), decided at plan time
            return step.llm.call(self._client, step, url, body, headers, ctx, tail)
        route = step.route
        if route is not None:  # several endpoints or a mirror, decided at plan time
            return route.call(self._client, step, body, headers, ctx, tail)
        policy = step.policy
        early = ctx.early_for(policy, tail)
        if early is not None:  # the router's head may go out from the callback that reads the step's
            return self._client.call(url, body, headers, ctx.step_timeout, True, None, None, early)
        return self._client.call(url, body, headers, ctx.step_timeout, tail, policy, ctx.deadline)  # stream=tail

    @staticmethod
    def _condition(ctx: RequestContext, node: NodePlan, step: StepPlan, matched: bool) -> bool:
        if ctx.explain is not None:
            assert step.condition is not None
            ctx.explain.append(
                {"node": node.name, "step": step.label, "condition": step.condition.source, "matched": matched}
            )
        return matched

    async def _sequence(self, node: NodePlan, body: bytes, ctx: RequestContext, tail: bool) -> StepResponse:
        response: bytes | None = None
        named: dict[str, bytes] | None = {} if node.keep_answers else None
        for step in node.steps:
            request = response if step.use_response and response is not None else body
            if step.map_predictions:
                request = map_predictions_to_instances(request)
            if step.v2_rename is not None:
                request = v2_outputs_to_inputs(
                    response if response is not None else body, step.v2_rename, step.v2_only, step.label
                )
            if step.template is not None:
                sources: dict[str, bytes] = {"$request": ctx.request_body}
                if response is not None:
                    sources["$response"] = response
                if named:
                    sources.update(named)
                request = step.template.render(sources, step.label)
            if step.condition is not None:
                parsed = _parse_for_conditions(response)
                if parsed is _INVALID:
                    raise NodeFailure("invalid response")
                assert response is not None
                if not self._condition(ctx, node, step, _matches(step, response, parsed)):
                    return StepResponse(200, response)
            last = step.index == len(node.steps) - 1
            try:
                result = await self._step(node, step, request, ctx, tail and last)
            except RequestError as exc:
                raise _as_child_failure(exc) from exc
            if last:
                return result
            response = result.body
            if named is not None and step.name in node.keep_answers:
                named[step.name] = response
            if step.hard and not result.ok:
                return result
        raise NodeFailure(f"node {node.name} has no steps")  # validation rejects such graphs

    async def _switch(self, node: NodePlan, body: bytes, ctx: RequestContext, tail: bool) -> StepResponse:
        parsed = _parse_for_conditions(body)  # once for every condition
        if parsed is _INVALID:
            raise NoRouteMatched()
        for step in node.steps:
            if step.condition is not None and self._condition(ctx, node, step, _matches(step, body, parsed)):
                return await self._step(node, step, _templated(step, body, ctx), ctx, tail)
        raise NoRouteMatched()

    async def _splitter(self, node: NodePlan, body: bytes, ctx: RequestContext, tail: bool) -> StepResponse:
        draw = self._rng.randrange(100)
        for step, bound in zip(node.steps, node.weight_bounds, strict=True):
            if draw < bound:
                if ctx.explain is not None:
                    ctx.explain.append({"node": node.name, "draw": draw, "step": step.label})
                return await self._step(node, step, _templated(step, body, ctx), ctx, tail)
        raise NodeFailure("no route was selected by the splitter")

    async def _ensemble(self, node: NodePlan, body: bytes, ctx: RequestContext, tail: bool) -> StepResponse:
        """Members never stream: their answers are merged into one object."""
        bodies = [_templated(s, body, ctx) for s in node.steps]
        try:
            results = await _all_or_none(
                [self._ensemble_member(node, s, b, ctx) for s, b in zip(node.steps, bodies, strict=True)]
            )
        except RequestError as exc:
            # Siblings were cancelled; any member's failure fails the node.
            raise _as_child_failure(exc) from None
        for step, result in zip(node.steps, results, strict=True):
            if step.hard and not result.ok:
                return result
        # Go's encoder writes map keys sorted; the members' bodies are already valid JSON.
        parts = sorted((step.label, result.body) for step, result in zip(node.steps, results, strict=True))
        merged = b"{" + b",".join(orjson.dumps(key) + b":" + raw for key, raw in parts) + b"}"
        return StepResponse(200, merged)

    async def _ensemble_member(
        self, node: NodePlan, step: StepPlan, body: bytes, ctx: RequestContext
    ) -> StepResponse:
        result = await self._step(node, step, body, ctx)
        try:
            is_object = isinstance(orjson.loads(result.body), dict)
        except orjson.JSONDecodeError:
            is_object = False
        if not is_object:
            raise NodeFailure(f"ensemble step {step.label} did not answer with a JSON object")
        return result


class _Members:
    """The members of one Ensemble run: their tasks and how many are still running.

    A class rather than a closure: in the compiled build a closure inside a coroutine
    forms a reference cycle, which only the garbage collector would free, per request.
    """

    __slots__ = ("failures", "finished", "pending", "tasks")

    def __init__(self, tasks: list[asyncio.Task[StepResponse]], finished: asyncio.Future[None]) -> None:
        self.tasks = tasks
        self.finished = finished
        self.failures: list[BaseException] = []
        self.pending = len(tasks)

    def settle(self, task: asyncio.Task[StepResponse]) -> None:
        """A member ended: its failure (the first one) cancels the others."""
        self.pending -= 1
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self.failures.append(exc)
                if len(self.failures) == 1:
                    for other in self.tasks:
                        other.cancel()  # no-op for those already done
        if self.pending == 0 and not self.finished.done():
            self.finished.set_result(None)


async def _all_or_none(coros: list[Coroutine[Any, Any, StepResponse]]) -> list[StepResponse]:
    """Run ``coros`` concurrently: every answer, or the first failure (the rest cancelled).

    What asyncio.TaskGroup does for this case, without its interpreted-Python
    bookkeeping per task (an Ensemble runs this on every request). No member outlives
    the call: if the caller is cancelled, so are the members, and they are awaited.
    """
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(c) for c in coros]
    members = _Members(tasks, loop.create_future())
    for task in tasks:
        task.add_done_callback(members.settle)
    try:
        await members.finished
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        raise
    if members.failures:
        raise members.failures[0]
    return [task.result() for task in tasks]  # a member cancelled on its own raises CancelledError


_UNPARSED = object()  # valid JSON for gjson, but not for orjson: conditions read the raw text
_INVALID = object()  # not JSON at all (KServe: conditions cannot be tested)


def _parse_for_conditions(body: bytes | None) -> Any:
    """The body parsed once for its conditions: a value, _UNPARSED or _INVALID."""
    if body is None:
        return _INVALID
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _UNPARSED if gjson.valid(body) else _INVALID


def _matches(step: StepPlan, body: bytes, parsed: Any) -> bool:
    """Whether the step's condition exists in ``body`` (``parsed``: the same, parsed)."""
    assert step.condition is not None
    if parsed is not _UNPARSED and step.fast_condition is not None:
        answer = exists_parsed(step.fast_condition, parsed)
        if answer is not None:
            return answer
    return step.condition.exists(body)


def _templated(step: StepPlan, body: bytes, ctx: RequestContext) -> bytes:
    """The step's request template rendered over the original request, if it has one."""
    if step.template is None:
        return body
    return step.template.render({"$request": ctx.request_body}, step.label)
