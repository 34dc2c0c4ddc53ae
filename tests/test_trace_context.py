"""W3C trace context reaches every step even with tracing off (issue 13, item 20)."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import echo

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "vendor=opaque,other=1"


def two_steps(url: str) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": url}, {"serviceUrl": url, "data": "$response"}]}}}


@pytest.mark.parametrize("propagate", [None, "X-Other"])
async def test_caller_trace_context_passes_through_unchanged(
        start_service: Any, start_router: Any, propagate: str | None) -> None:
    """With tracing off, every step call carries the caller's traceparent and tracestate as they came."""
    svc = await start_service({"/m": echo})
    router = await start_router(two_steps(svc.url("/m")), propagate_headers=propagate)
    status, _, _ = await router.post({"a": 1}, headers={"traceparent": TRACEPARENT, "tracestate": TRACESTATE,
                                                        "X-Private": "no"})
    assert status == 200
    assert len(svc.received) == 2
    for got in svc.received:
        assert got.header_values("traceparent") == [TRACEPARENT]
        assert got.header_values("tracestate") == [TRACESTATE]
        assert got.header_values("X-Private") == []


async def test_no_trace_context_adds_none(start_service: Any, start_router: Any) -> None:
    """A request without trace context gives its steps none (nothing is invented with tracing off)."""
    svc = await start_service({"/m": echo})
    router = await start_router(two_steps(svc.url("/m")))
    status, _, _ = await router.post({"a": 1})
    assert status == 200
    assert all(got.header_values("traceparent") == [] for got in svc.received)
