"""Switch, Ensemble, Splitter and nesting semantics, over HTTP against loopback stand-ins."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import orjson
from aiohttp import web
from conftest import echo

from graph_router.executor import Executor

FAILED = "Failed to process request"


async def test_switch_runs_first_matching_step(start_service: Any, start_router: Any) -> None:
    """The first step in order whose condition exists in the input runs; its answer is the node's."""
    a = await start_service({"/a": (200, {"from": "a"})})
    b = await start_service({"/b": (202, {"from": "b"})})
    router = await start_router({"nodes": {"root": {"routerType": "Switch", "steps": [
        {"serviceUrl": a.url("/a"), "condition": 'instances.#(modelId=="1")'},
        {"serviceUrl": b.url("/b"), "condition": 'instances.#(modelId=="2")'},
        {"serviceUrl": a.url("/a"), "condition": "instances"}]}}})
    status, body, _ = await router.post({"instances": [{"modelId": "2"}]})
    assert (status, body) == (202, b'{"from":"b"}')
    assert a.received == []
    assert b.received[0].json() == {"instances": [{"modelId": "2"}]}


async def test_switch_no_match_is_404(start_service: Any, start_router: Any) -> None:
    """No matching condition: 404 with KServe's error body."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Switch", "steps": [
        {"serviceUrl": a.url("/a"), "condition": 'instances.#(modelId=="1")'}]}}})
    status, body, headers = await router.post({"instances": [{"modelId": "9"}]})
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert orjson.loads(body) == {"error": FAILED,
                                  "cause": "None of the routes matched with the switch condition"}


async def test_switch_non_json_input_matches_nothing(start_service: Any, start_router: Any) -> None:
    """A Switch input that is not valid JSON matches no condition, even a catch-all one."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Switch", "steps": [
        {"serviceUrl": a.url("/a"), "condition": "@this"}]}}})
    status, _, _ = await router.post(raw=b"{not json")
    assert status == 404
    assert a.received == []


async def test_switch_inside_sequence_no_match_is_500(start_service: Any, start_router: Any) -> None:
    """A nested Switch with no match fails its Sequence parent with 500, not 404."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {
        "root": {"routerType": "Sequence", "steps": [{"nodeName": "pick"}]},
        "pick": {"routerType": "Switch", "steps": [{"serviceUrl": a.url("/a"), "condition": "nope"}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 500
    assert orjson.loads(body)["cause"] == "None of the routes matched with the switch condition"


async def test_ensemble_merges_by_name_and_index(start_service: Any, start_router: Any) -> None:
    """Ensemble answers one object keyed by step name, or index when unnamed, Soft failures included."""
    a = await start_service({"/a": (200, {"a": 1})})
    b = await start_service({"/b": (500, {"err": "b"})})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "first", "serviceUrl": a.url("/a")}, {"serviceUrl": b.url("/b")}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 200
    assert orjson.loads(body) == {"first": {"a": 1}, "1": {"err": "b"}}
    assert a.received[0].json() == b.received[0].json() == {"x": 1}


async def test_ensemble_runs_steps_concurrently(start_service: Any, start_router: Any) -> None:
    """Ensemble steps run at the same time: two 0.3 s steps take well under 0.6 s together."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.json_response({"ok": True})

    s = await start_service({"/s": slow})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"serviceUrl": s.url("/s")}, {"serviceUrl": s.url("/s")}]}}})
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, _, _ = await router.post({"x": 1})
    assert status == 200
    assert loop.time() - started < 0.55


async def test_ensemble_first_hard_failure_in_step_order_wins(start_service: Any, start_router: Any) -> None:
    """The first Hard non-2xx step in step order (not completion order) gives the node's answer."""

    async def slow_fail(request: web.Request) -> web.Response:
        await asyncio.sleep(0.2)
        return web.json_response({"which": "slow"}, status=503)

    slow = await start_service({"/s": slow_fail})
    fast = await start_service({"/f": (400, {"which": "fast"})})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"serviceUrl": slow.url("/s"), "dependency": "Hard"},
        {"serviceUrl": fast.url("/f"), "dependency": "Hard"}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 503
    assert orjson.loads(body) == {"which": "slow"}


async def test_ensemble_non_object_answer_fails(start_service: Any, start_router: Any) -> None:
    """A member that answers with something other than a JSON object fails the node with 500."""
    a = await start_service({"/a": (200, [1, 2])})
    b = await start_service({"/b": (200, {"b": 1})})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"serviceUrl": a.url("/a")}, {"serviceUrl": b.url("/b")}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 500
    assert orjson.loads(body)["error"] == FAILED


async def test_ensemble_ignores_data_condition_and_mapping(start_service: Any, start_router: Any) -> None:
    """Ensemble members get the node input; data, condition and mapPredictionsToInstances are ignored."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "a", "serviceUrl": a.url("/a"), "data": "$response", "condition": "nope",
         "mapPredictionsToInstances": True}]}}})
    status, body, _ = await router.post({"predictions": [1]})
    assert status == 200
    assert orjson.loads(body) == {"a": {"predictions": [1]}}


async def test_splitter_follows_weights(start_service: Any, start_router: Any) -> None:
    """Splitter traffic follows the weights: 80/20 over 300 requests lands near 240/60."""
    a = await start_service({"/a": (200, {"s": "a"})})
    b = await start_service({"/b": (200, {"s": "b"})})
    router = await start_router({"nodes": {"root": {"routerType": "Splitter", "steps": [
        {"serviceUrl": a.url("/a"), "weight": 80}, {"serviceUrl": b.url("/b"), "weight": 20}]}}})
    counts: Counter[str] = Counter()
    for _ in range(300):
        status, body, _ = await router.post({"x": 1})
        assert status == 200
        counts[orjson.loads(body)["s"]] += 1
    assert 200 <= counts["a"] <= 280
    assert counts["a"] + counts["b"] == 300


async def test_splitter_draw_walks_running_sum(start_service: Any) -> None:
    """A seeded draw r picks the first step whose running weight sum exceeds r."""
    from graph_router.loader import load_graph_json
    from graph_router.plan import compile_graph
    from graph_router.upstream import UpstreamClient

    a = await start_service({"/a": (200, {"s": "a"})})
    b = await start_service({"/b": (200, {"s": "b"})})
    spec = {"nodes": {"root": {"routerType": "Splitter", "steps": [
        {"serviceUrl": a.url("/a"), "weight": 30}, {"serviceUrl": b.url("/b"), "weight": 70}]}}}
    plan = compile_graph(load_graph_json(orjson.dumps(spec).decode()))
    rng = random.Random(7)
    expected = ["a" if r < 30 else "b" for r in [random.Random(7).randrange(100) for _ in range(1)]]
    client = UpstreamClient()
    await client.start()
    try:
        from multidict import CIMultiDict

        result = await Executor(client, rng).run(plan, b"{}", CIMultiDict())
        assert orjson.loads(result.body)["s"] == expected[0]
    finally:
        await client.close()


async def test_nested_nodes_pass_input(start_service: Any, start_router: Any) -> None:
    """A nodeName step runs that node with the step's input; its answer flows on."""
    a = await start_service({"/a": (200, {"predictions": [7]})})
    b = await start_service({"/b": echo})
    router = await start_router({"nodes": {
        "root": {"routerType": "Sequence", "steps": [
            {"serviceUrl": a.url("/a")},
            {"nodeName": "inner", "data": "$response"}]},
        "inner": {"routerType": "Ensemble", "steps": [
            {"name": "echo", "serviceUrl": b.url("/b")}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 200
    assert orjson.loads(body) == {"echo": {"predictions": [7]}}


async def test_child_failure_fails_parent_with_500(start_service: Any, start_router: Any) -> None:
    """A child node's failure (not a non-2xx answer) fails an Ensemble parent with 500."""
    a = await start_service({"/a": echo})
    router = await start_router({"nodes": {
        "root": {"routerType": "Ensemble", "steps": [{"nodeName": "pick"}, {"serviceUrl": a.url("/a")}]},
        "pick": {"routerType": "Switch", "steps": [{"serviceUrl": a.url("/a"), "condition": "nope"}]}}})
    status, body, _ = await router.post({"x": 1})
    assert status == 500
    assert orjson.loads(body)["error"] == FAILED


async def test_hard_inside_switch_changes_nothing(start_service: Any, start_router: Any) -> None:
    """Hard on a step inside a Switch is ignored; the enclosing Sequence step's dependency counts."""
    bad = await start_service({"/bad": (500, {"err": 1})})
    after = await start_service({"/after": (200, {"after": True})})
    router = await start_router({"nodes": {
        "root": {"routerType": "Sequence", "steps": [
            {"nodeName": "pick"}, {"serviceUrl": after.url("/after")}]},
        "pick": {"routerType": "Switch", "steps": [
            {"serviceUrl": bad.url("/bad"), "condition": "x", "dependency": "Hard"}]}}})
    status, body, _ = await router.post({"x": 1})
    assert (status, orjson.loads(body)) == (200, {"after": True})
