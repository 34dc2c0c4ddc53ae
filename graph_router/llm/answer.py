"""Where LLM steps meet the request's edges: the budget gate before the graph, the answer after it."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context

from ..httpserver import Response, StreamingResponse, error_body
from .budget import Budgets
from .step import FALLBACK_HEADER, LLMRequest

if TYPE_CHECKING:
    from ..telemetry.recorder import RequestProbe

BUDGET_ERROR = "Too Many Requests"


def admit(budgets: Budgets, probe: RequestProbe, headers: list[tuple[str, str]]) -> tuple[Response, str] | None:
    """Take the request from its tenant's budget; the 429 answer and its cause when it has none left."""
    tenant = budgets.tenant_of(headers)
    probe.llm = LLMRequest(budgets, tenant)
    refused = budgets.admit(tenant)
    if refused is None:
        return None
    probe.telemetry.metrics.llm.rejected(probe.graph, refused.label, refused.limit)
    answer = Response(429, error_body(BUDGET_ERROR, refused.cause), "application/json",
                      [("Retry-After", str(refused.retry_after))])
    return answer, refused.cause


def settle(record: LLMRequest, probe: RequestProbe, answer: Response | StreamingResponse, status: int,
           total: float, own: float, cause: str | None) -> bool:
    """Add the fallback header; True when a stream is still being tallied, so that the span and
    the log line wait for its end (they then carry its tokens and time to first token)."""
    if record.fallback is not None and answer.headers is not None:
        answer.headers.append((FALLBACK_HEADER, str(record.fallback)))
    if not record.open_streams:
        if probe.span is not None:
            _attributes(record, probe)
        return False
    if probe.explain is not None and answer.headers is not None:
        from ..telemetry.explain import RESPONSE_HEADER, header_value

        answer.headers.append((RESPONSE_HEADER, header_value(probe.explain)))
    if probe.token is not None:  # leave the request's context now; the span itself ends later
        otel_context.detach(probe.token)
        probe.token = None
    record.deferred = partial(_finish, record, probe, status, total, own, cause)
    return True


def _attributes(record: LLMRequest, probe: RequestProbe) -> None:
    span = probe.span
    if span is not None and span.is_recording():
        for key, value in record.fields():
            span.set_attribute(key, value)  # type: ignore[arg-type]


def _finish(record: LLMRequest, probe: RequestProbe, status: int, total: float, own: float,
            cause: str | None) -> None:
    """The stream ended: the request's span and log line, with the stream's figures."""
    from ..telemetry.tracing import GraphTracer

    if probe.span is not None:
        _attributes(record, probe)
        GraphTracer.end_request(probe.span, None, status, cause)
    probe.write_log(status, total, own, cause)
