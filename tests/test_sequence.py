"""Sequence node semantics, over HTTP against loopback model stand-ins."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiohttp import web
from conftest import echo

from graph_router.loader import load_graph_json
from graph_router.plan import compile_graph


async def test_request_goes_to_every_step_by_default(start_service: Any, start_router: Any) -> None:
    """Without data: $response, each step gets the node's own input; the last answer is returned."""
    a = await start_service({"/a": (200, {"from": "a"})})
    b = await start_service({"/b": (200, {"from": "b"})})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")}, {"serviceUrl": b.url("/b")}]}}})
    status, body, headers = await router.post({"x": 1})
    assert status == 200
    assert body == b'{"from":"b"}'
    assert headers["Content-Type"] == "application/json"
    assert a.received[0].json() == {"x": 1}
    assert b.received[0].json() == {"x": 1}
    assert a.received[0].method == "POST"


async def test_data_response_chains_previous_answer(start_service: Any, start_router: Any) -> None:
    """data: $response sends the previous step's answer, as bytes, to the next step."""
    a = await start_service({"/a": (200, b'{"predictions": [1, 2]}')})
    b = await start_service({"/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")}, {"serviceUrl": b.url("/b"), "data": "$response"}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 200
    assert b.received[0].body == b'{"predictions": [1, 2]}'
    assert body == b'{"predictions": [1, 2]}'


async def test_data_response_on_first_step_uses_request(start_service: Any, start_router: Any) -> None:
    """data: $response on step 0 has no previous answer, so the node input is sent."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a"), "data": "$response"}]}}})
    status, body, _ = await router.post(raw=b"not json at all")
    assert status == 200
    assert body == b"not json at all"
    assert a.received[0].body == b"not json at all"


async def test_map_predictions_to_instances(start_service: Any, start_router: Any) -> None:
    """mapPredictionsToInstances turns {"predictions": [...]} into {"instances": [...]}, dropping the rest."""
    a = await start_service({"/a": (200, {"predictions": [{"p": 1}], "model_name": "m"})})
    b = await start_service({"/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")},
        {"serviceUrl": b.url("/b"), "data": "$response", "mapPredictionsToInstances": True}]}}})
    status, _, _ = await router.post({"x": 1})
    assert status == 200
    assert b.received[0].json() == {"instances": [{"p": 1}]}


async def test_map_predictions_applies_at_first_step(start_service: Any, start_router: Any) -> None:
    """mapPredictionsToInstances also rewrites the node input at step 0."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a"), "mapPredictionsToInstances": True}]}}})
    await router.post({"predictions": [3, 4], "other": 1})
    assert a.received[0].json() == {"instances": [3, 4]}


async def test_map_predictions_leaves_empty_or_non_json(start_service: Any, start_router: Any) -> None:
    """An empty predictions array, or a non-JSON body, passes unchanged."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a"), "mapPredictionsToInstances": True}]}}})
    await router.post({"predictions": []})
    await router.post(raw=b"plain")
    assert a.received[0].json() == {"predictions": []}
    assert a.received[1].body == b"plain"


async def test_condition_miss_stops_with_previous_answer(start_service: Any, start_router: Any) -> None:
    """A condition that does not exist on the previous answer stops the sequence with status 200."""
    a = await start_service({"/a": (201, {"label": "cat"})})
    b = await start_service({"/b": (200, {"from": "b"})})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")},
        {"serviceUrl": b.url("/b"), "condition": 'label=="dog"'},
        {"serviceUrl": b.url("/b"), "condition": "[@this].#(label==\"dog\")"}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 200
    assert body == b'{"label":"cat"}'
    assert b.received == []


async def test_condition_hit_runs_step(start_service: Any, start_router: Any) -> None:
    """A condition that exists on the previous answer lets the step run."""
    a = await start_service({"/a": (200, {"label": "dog"})})
    b = await start_service({"/b": (200, {"from": "b"})})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")},
        {"serviceUrl": b.url("/b"), "condition": '[@this].#(label=="dog")'}]}}})
    status, body, _ = await router.post({"label": "cat"})
    assert (status, body) == (200, b'{"from":"b"}')


async def test_condition_on_first_step_fails_invalid_response(start_service: Any, start_router: Any) -> None:
    """A condition on step 0 has no previous answer to test: the node fails with 'invalid response'."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a"), "condition": "x"}]}}})
    status, body, headers = await router.post({"x": 1})
    assert status == 500
    assert headers["Content-Type"] == "application/json"
    import orjson
    assert orjson.loads(body) == {"error": "Failed to process request", "cause": "invalid response"}
    assert a.received == []


async def test_condition_on_non_json_answer_fails(start_service: Any, start_router: Any) -> None:
    """A condition over a previous answer that is not JSON fails the node."""
    a = await start_service({"/a": (200, b"plain text")})
    b = await start_service({"/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")}, {"serviceUrl": b.url("/b"), "condition": "x"}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 500
    assert b'"invalid response"' in body


async def test_hard_step_failure_stops_with_its_answer(start_service: Any, start_router: Any) -> None:
    """A Hard step's non-2xx answer stops the sequence and is returned as it is."""
    a = await start_service({"/a": (503, b'{"err":"busy"}')})
    b = await start_service({"/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a"), "dependency": "Hard"}, {"serviceUrl": b.url("/b")}]}}})
    status, body, _ = await router.post({"x": 1})
    assert (status, body) == (503, b'{"err":"busy"}')
    assert b.received == []


async def test_soft_step_failure_continues(start_service: Any, start_router: Any) -> None:
    """A Soft step's non-2xx answer is passed on, and the sequence goes on."""
    a = await start_service({"/a": (500, b'{"err":"x"}')})
    b = await start_service({"/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")}, {"serviceUrl": b.url("/b"), "data": "$response"}]}}})
    status, body, _ = await router.post({"x": 1})
    assert (status, body) == (200, b'{"err":"x"}')


async def test_soft_last_step_status_is_returned(start_service: Any, start_router: Any) -> None:
    """The last step's status is the sequence's, a Soft 4xx included."""
    a = await start_service({"/a": (200, {"ok": 1})})
    b = await start_service({"/b": (422, b'{"detail":"bad"}')})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")}, {"serviceUrl": b.url("/b")}]}}})
    status, body, _ = await router.post({"x": 1})
    assert (status, body) == (422, b'{"detail":"bad"}')


async def test_transport_error_fails_node(start_service: Any, start_router: Any) -> None:
    """A step whose service refuses the connection fails the node with 500 and the JSON error body."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": f"http://127.0.0.1:{port}/v1/models/m:predict"}]}}})
    status, body, headers = await router.post({"x": 1})
    import orjson
    doc = orjson.loads(body)
    assert headers["Content-Type"] == "application/json"
    assert status == 500
    assert doc["error"] == "Failed to process request"
    assert "cannot connect" in doc["cause"]
    assert "Traceback" not in doc["cause"]


async def test_non_json_success_body_is_sent_unchanged(start_service: Any, start_router: Any) -> None:
    """A non-JSON answer is passed through byte for byte, without a JSON content type."""

    async def text(request: web.Request) -> web.Response:
        return web.Response(body=b"\x00\x01binary", content_type="application/octet-stream")

    a = await start_service({"/a": text})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")}]}}})
    status, body, headers = await router.post({"x": 1})
    assert status == 200
    assert body == b"\x00\x01binary"
    assert headers["Content-Type"] != "application/json"


async def test_path_query_and_method_are_ignored(start_service: Any, start_router: Any) -> None:
    """Any path and method runs the graph; the step is always called with POST at its own URL."""
    a = await start_service({"/v1/models/m:predict": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/v1/models/m:predict")}]}}})
    async with router.session.put(router.url + "/some/path?q=1", data=b'{"a":1}') as resp:
        assert resp.status == 200
        assert await resp.read() == b'{"a":1}'
    async with router.session.get(router.url + "/x") as resp:
        assert resp.status == 200
    assert [r.method for r in a.received] == ["POST", "POST"]
    assert [r.path for r in a.received] == ["/v1/models/m:predict"] * 2
    assert a.received[1].body == b""


@pytest.mark.parametrize(("step", "direct"), [
    ({"serviceUrl": "http://m/v1"}, True),
    ({"serviceUrl": "http://m/v1", "condition": "a"}, False),  # fails as KServe's does: runs in _sequence
    ({"serviceUrl": "http://m/v1", "data": "$response"}, True),  # the first step has no previous answer
    ({"nodeName": "inner"}, False),  # a node's failure is mapped by its parent
])
def test_a_sequence_of_one_service_call_runs_as_that_call(step: dict[str, Any], direct: bool) -> None:
    """NodePlan.only: set for a plain one-call Sequence only, which the executor then calls directly."""
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [step]},
                      "inner": {"routerType": "Sequence", "steps": [{"serviceUrl": "http://m/v2"}]}}}
    plan = compile_graph(load_graph_json(orjson.dumps(spec).decode()))
    assert (plan.root.only is plan.root.steps[0]) == direct
    assert plan.nodes["inner"].only is not None


async def test_a_one_call_sequence_answers_and_fails_as_before(start_service: Any, start_router: Any) -> None:
    """The direct call keeps the Sequence's answers: the service's answer, and KServe's error for a dead one."""
    svc = await start_service({"/m": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence",
                                                    "steps": [{"serviceUrl": svc.url("/m")}]}}})
    status, body, _ = await router.post({"x": 1})
    assert (status, orjson.loads(body)) == (200, {"x": 1})
    dead = await start_router({"nodes": {"root": {"routerType": "Sequence",
                                                  "steps": [{"serviceUrl": "http://127.0.0.1:1/m"}]}}})
    status, body, _ = await dead.post({"x": 1})
    assert status == 500 and orjson.loads(body)["error"] == "Failed to process request"
