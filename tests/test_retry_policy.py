"""A step's retry policy retries exactly the statuses in ``retryOn``, no others.

Retrying every 5xx whatever ``retryOn`` says passed the earlier tests (they only used
503, which is in the default list); here each status is counted at a real loopback
service.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_resilience import serve_with_extensions

from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamSettings

NO_BREAKER = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                            upstream=UpstreamSettings(breaker_failures=0))


def policy(**fields: Any) -> dict[str, Any]:
    return {"steps": {"root/s": {"policy": {"retries": 2, "backoffSeconds": 0.001, **fields}}}}


@pytest.mark.parametrize("status", [500, 501, 505, 429, 404])
async def test_a_status_outside_the_default_retry_on_is_answered_after_one_call(
    start_service: Any, start_router: Any, status: int
) -> None:
    """Default retryOn is 502, 503, 504: any other status is the answer, from a single call."""
    svc = await start_service({"/m": (status, {"status": status})})
    router = await serve_with_extensions(start_router, svc.url("/m"), policy(), settings=NO_BREAKER)
    assert (await router.post({}))[0] == status
    assert len(svc.received) == 1


@pytest.mark.parametrize(("retry_on", "status", "calls"), [
    ([500], 500, 3),     # listed: retried twice
    ([500], 503, 1),     # in the default list, not in this one: not retried
    ([500], 502, 1),
    ([429, 503], 429, 3),
    ([429, 503], 503, 3),
    ([429, 503], 504, 1),
    ([], 503, 1),        # an empty list retries no status
])
async def test_a_custom_retry_on_is_honoured_exactly(
    start_service: Any, start_router: Any, retry_on: list[int], status: int, calls: int
) -> None:
    svc = await start_service({"/m": (status, {"status": status})})
    router = await serve_with_extensions(start_router, svc.url("/m"), policy(retryOn=retry_on),
                                         settings=NO_BREAKER)
    assert (await router.post({}))[0] == status
    assert len(svc.received) == calls
