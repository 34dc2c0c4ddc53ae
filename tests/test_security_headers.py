"""Per-graph header policy (annotation ``headers``): propagate adds to PROPAGATE_HEADERS, drop wins
over both, set adds fixed or file-read values (reread on change), over real loopback calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from graph_router.errors import GraphValidationError
from graph_router.extensions import ANNOTATION
from graph_router.headers import HeaderPropagator
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph
from graph_router.security.headers import PolicyPropagator

pytestmark = pytest.mark.asyncio


def _plan(url: str, extensions: dict[str, Any]) -> Any:
    text = yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
        "metadata": {"name": "policy", "annotations": {ANNOTATION: yaml.safe_dump(extensions)}},
        "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}}},
    })
    return compile_graph(load_graph_text(text, "g.yaml"))


async def _start(start_service: Any, start_router: Any, extensions: dict[str, Any],
                 propagate: str | None) -> tuple[Any, Any]:
    svc = await start_service({"/m": (200, {"ok": True})})
    running = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": "http://127.0.0.1:9/unused"}]}}}, propagate_headers=propagate)
    running.router.swap(_plan(svc.url("/m"), extensions))
    return running, svc


INCOMING = {
    "X-Tenant": "t1", "X-Secret-Key": "s3cr3t", "X-Other": "o", "Authorization": "Bearer abc",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
}


async def test_propagate_adds_drop_wins_set_adds(start_service: Any, start_router: Any, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first-token\n")
    ext = {"headers": {"propagate": ["^X-Tenant$", "^Authorization$"], "drop": ["^X-Secret", "^Authorization$"],
                       "set": {"X-Fixed": "v1", "X-Service-Token": f"@{token}"}}}
    running, svc = await _start(start_service, start_router, ext, propagate="^X-")
    assert (await running.post({}, headers=INCOMING))[0] == 200
    got = {k.lower(): v for k, v in svc.received[-1].headers}
    assert got["x-tenant"] == "t1"          # the graph's propagate
    assert got["x-other"] == "o"            # PROPAGATE_HEADERS
    assert "x-secret-key" not in got        # drop beats PROPAGATE_HEADERS
    assert "authorization" not in got       # drop beats the graph's propagate
    assert got["traceparent"] == INCOMING["traceparent"]
    assert got["x-fixed"] == "v1"
    assert got["x-service-token"] == "first-token"
    # The token file is rotated: the next calls carry the new value, no reload of the graph.
    token.write_text("second-token\n")
    await asyncio.sleep(1.1)
    assert (await running.post({}, headers=INCOMING))[0] == 200
    assert dict((k.lower(), v) for k, v in svc.received[-1].headers)["x-service-token"] == "second-token"


async def test_set_replaces_a_forwarded_value_and_drop_applies_without_propagate_headers(
    start_service: Any, start_router: Any
) -> None:
    ext = {"headers": {"drop": ["^Traceparent$"], "set": {"X-Tenant": "fixed"}}}
    running, svc = await _start(start_service, start_router, ext, propagate=None)
    assert (await running.post({}, headers=INCOMING))[0] == 200
    got = [(k.lower(), v) for k, v in svc.received[-1].headers]
    assert ("x-tenant", "fixed") in got and ("x-tenant", "t1") not in got
    assert not any(k == "traceparent" for k, _ in got)
    assert not any(k in ("x-other", "x-secret-key", "authorization") for k, _ in got)


async def test_graph_without_policy_keeps_the_plain_propagator(start_service: Any, start_router: Any) -> None:
    running, svc = await _start(start_service, start_router, {"deadlineSeconds": 5}, propagate="^X-Other$")
    assert type(running.router._propagator) is HeaderPropagator
    assert (await running.post({}, headers=INCOMING))[0] == 200
    got = {k.lower() for k, _ in svc.received[-1].headers}
    assert "x-other" in got and "x-tenant" not in got
    running.router.swap(_plan(svc.url("/m"), {"headers": {"propagate": ["^X-Tenant$"]}}))
    assert isinstance(running.router._propagator, PolicyPropagator)


async def test_missing_set_file_leaves_the_header_out(start_service: Any, start_router: Any, tmp_path: Path) -> None:
    running, svc = await _start(start_service, start_router,
                                {"headers": {"set": {"X-Service-Token": f"@{tmp_path / 'absent'}"}}}, propagate=None)
    assert (await running.post({}, headers=INCOMING))[0] == 200
    assert "x-service-token" not in {k.lower() for k, _ in svc.received[-1].headers}


@pytest.mark.parametrize(("headers", "message"), [
    ({"drop": ["("]}, "headers.drop: Value error, '(' is not a regular expression"),
    ({"propagate": ["[a-"]}, "headers.propagate: Value error, '[a-' is not a regular expression"),
    ({"set": {"Content-Length": "3"}}, "'Content-Length' is managed by the router"),
    ({"set": {"X-Bad Name": "3"}}, "'X-Bad Name' is not a header name"),
    ({"set": {"X-Token": "@"}}, "'@' must be followed by a file path"),
    ({"sett": {}}, "headers.sett: Extra inputs are not permitted"),
])
async def test_policy_mistakes_are_load_errors(headers: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphValidationError) as info:
        _plan("http://127.0.0.1:9/m", {"headers": headers})
    assert message in str(info.value)
    assert ANNOTATION in str(info.value)
