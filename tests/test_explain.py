"""X-Graph-Explain: the path taken, per node kind, in a response header; Server-Timing always."""

from __future__ import annotations

from typing import Any

import orjson
from conftest import echo

from graph_router.settings import ServerSettings
from graph_router.telemetry.explain import MAX_HEADER_CHARS

ASK = {"X-Graph-Explain": "1"}


def explained(headers: Any) -> list[dict[str, Any]]:
    value = headers["X-Graph-Explain"]
    assert value.isascii() and "\n" not in value
    return orjson.loads(value)  # type: ignore[no-any-return]


def steps_of(path: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step entries, with the time checked and dropped (it varies)."""
    out = []
    for e in path:
        if "target" in e:
            assert isinstance(e["ms"], float | int) and e["ms"] >= 0
            out.append({k: v for k, v in e.items() if k != "ms"})
    return out


async def test_no_header_unless_asked(start_service: Any, start_router: Any) -> None:
    """Without the request header there is no explain header, but Server-Timing is always there."""
    svc = await start_service({"/m": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/m")}]}}})
    _, _, headers = await router.post({"x": 1})
    assert "X-Graph-Explain" not in headers
    assert headers["Server-Timing"].startswith("total;dur=")
    _, _, headers = await router.post({"x": 1}, headers={"X-Graph-Explain": "0"})
    assert "X-Graph-Explain" not in headers


async def test_sequence_with_condition(start_service: Any, start_router: Any) -> None:
    """Sequence: each step with status and time, and the condition that stopped it, unmatched."""
    svc = await start_service({"/a": (200, {"label": "cat"}), "/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"name": "classify", "serviceUrl": svc.url("/a")},
        {"name": "dogs", "serviceUrl": svc.url("/b"), "condition": 'label=="dog"'}]}}})
    status, body, headers = await router.post({"x": 1}, headers=ASK)
    assert (status, orjson.loads(body)) == (200, {"label": "cat"})
    path = explained(headers)
    assert path[0] == {"node": "root", "kind": "Sequence"}
    assert steps_of(path) == [{"node": "root", "step": "classify", "target": svc.url("/a"), "status": 200}]
    assert path[-1] == {"node": "root", "step": "dogs", "condition": 'label=="dog"', "matched": False}


async def test_switch_conditions_in_order(start_service: Any, start_router: Any) -> None:
    """Switch: every condition tested, in order, until the one that matched, then its step."""
    svc = await start_service({"/a": echo, "/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Switch", "steps": [
        {"name": "first", "condition": "a", "serviceUrl": svc.url("/a")},
        {"name": "second", "condition": "b", "serviceUrl": svc.url("/b")}]}}})
    _, _, headers = await router.post({"b": 1}, headers=ASK)
    path = explained(headers)
    assert [e for e in path if "condition" in e] == [
        {"node": "root", "step": "first", "condition": "a", "matched": False},
        {"node": "root", "step": "second", "condition": "b", "matched": True}]
    assert steps_of(path) == [{"node": "root", "step": "second", "target": svc.url("/b"), "status": 200}]


async def test_switch_without_match_explains_the_404(start_router: Any) -> None:
    """A Switch that matches nothing still answers with the conditions it tried."""
    router = await start_router({"nodes": {"root": {"routerType": "Switch", "steps": [
        {"condition": "a", "serviceUrl": "http://127.0.0.1:9/m"}]}}})
    status, _, headers = await router.post({"z": 1}, headers=ASK)
    assert status == 404
    assert explained(headers) == [{"node": "root", "kind": "Switch"},
                                  {"node": "root", "step": "0", "condition": "a", "matched": False}]


async def test_ensemble_members(start_service: Any, start_router: Any) -> None:
    """Ensemble: every member step with its status, unnamed members by index."""
    svc = await start_service({"/a": echo, "/b": (500, {"error": "x"})})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "a", "serviceUrl": svc.url("/a")}, {"serviceUrl": svc.url("/b")}]}}})
    status, _, headers = await router.post({"x": 1}, headers=ASK)
    assert status == 200
    path = explained(headers)
    assert path[0] == {"node": "root", "kind": "Ensemble"}
    assert sorted(steps_of(path), key=lambda e: e["step"]) == [
        {"node": "root", "step": "1", "target": svc.url("/b"), "status": 500},
        {"node": "root", "step": "a", "target": svc.url("/a"), "status": 200}]


async def test_splitter_draw(start_service: Any, start_router: Any) -> None:
    """Splitter: the number drawn and the step it selected, then that step."""
    svc = await start_service({"/a": echo, "/b": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Splitter", "steps": [
        {"name": "never", "serviceUrl": svc.url("/a"), "weight": 0},
        {"name": "always", "serviceUrl": svc.url("/b"), "weight": 100}]}}})
    _, _, headers = await router.post({"x": 1}, headers=ASK)
    path = explained(headers)
    [draw] = [e for e in path if "draw" in e]
    assert draw["step"] == "always" and 0 <= draw["draw"] < 100
    assert steps_of(path) == [{"node": "root", "step": "always", "target": svc.url("/b"), "status": 200}]


async def test_nested_node_and_step_error(start_service: Any, start_router: Any) -> None:
    """A nodeName step shows the child node inside it; a failed call shows its error, on the 500 answer."""
    svc = await start_service({"/a": echo})
    router = await start_router({"nodes": {
        "root": {"routerType": "Sequence", "steps": [
            {"name": "ok", "serviceUrl": svc.url("/a")}, {"name": "inner", "nodeName": "child"}]},
        "child": {"routerType": "Sequence", "steps": [{"name": "broken", "serviceUrl": "http://127.0.0.1:9/m"}]}}})
    status, _, headers = await router.post({"x": 1}, headers=ASK)
    assert status == 500
    path = explained(headers)
    assert [e.get("kind") for e in path if "kind" in e] == ["Sequence", "Sequence"]
    entries = steps_of(path)
    assert entries[0] == {"node": "root", "step": "ok", "target": svc.url("/a"), "status": 200}
    assert entries[1]["step"] == "inner" and entries[1]["target"] == "node:child" and "error" in entries[1]
    assert entries[2]["step"] == "broken" and "error" in entries[2]


async def test_long_path_is_truncated(start_service: Any, start_router: Any) -> None:
    """A path longer than the header budget is cut, ending with how many entries were left out."""
    svc = await start_service({"/a": echo})
    steps = [{"name": f"step-with-a-rather-long-name-{i:03d}", "serviceUrl": svc.url("/a")} for i in range(120)]
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": steps}}})
    status, _, headers = await router.post({"x": 1}, headers=ASK)
    assert status == 200
    assert len(headers["X-Graph-Explain"]) <= MAX_HEADER_CHARS
    path = explained(headers)
    assert path[-1]["truncated"] == 121 - (len(path) - 1)


async def test_non_ascii_step_names_stay_ascii(start_service: Any, start_router: Any) -> None:
    """Step names in any script arrive intact, escaped as JSON \\u sequences."""
    svc = await start_service({"/a": echo})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"name": "модель-é", "serviceUrl": svc.url("/a")}]}}})
    _, _, headers = await router.post({"x": 1}, headers=ASK)
    assert steps_of(explained(headers))[0]["step"] == "модель-é"


async def test_explain_can_be_turned_off(start_service: Any, start_router: Any) -> None:
    """With explain_header off (serve --no-explain) the request header is ignored."""
    svc = await start_service({"/a": echo})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, explain_header=False)
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/a")}]}}}, settings=settings)
    status, _, headers = await router.post({"x": 1}, headers=ASK)
    assert status == 200 and "X-Graph-Explain" not in headers
