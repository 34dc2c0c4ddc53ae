"""Data mapping between steps (the extensions annotation), over HTTP against loopback stand-ins."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import yaml
from conftest import echo

from graph_router.errors import GraphValidationError
from graph_router.extensions import ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph


def graph_text(nodes: dict[str, Any], extensions: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
        "metadata": {"name": "mapped", "annotations": {ANNOTATION: yaml.safe_dump(extensions)}},
        "spec": {"nodes": nodes},
    })


async def start(start_router: Any, nodes: dict[str, Any], extensions: dict[str, Any]) -> Any:
    """The real router serving the annotated graph (swapped in as the reloader does)."""
    graph = load_graph_text(graph_text(nodes, extensions), "g.yaml")
    plan = compile_graph(graph)
    running = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": "http://127.0.0.1:9/unused"}]}}})
    running.router.swap(plan)
    return running


async def test_template_selects_from_request_response_and_named_steps(start_service: Any, start_router: Any) -> None:
    """A template builds the request from $request, $response and $steps.NAME; whole refs keep JSON types."""
    embed = await start_service({"/e": (200, {"data": [{"embedding": [0.1, 0.2]}]})})
    search = await start_service({"/s": (200, {"passages": [{"text": "p1"}, {"text": "p2"}]})})
    llm = await start_service({"/l": echo})
    nodes = {"root": {"routerType": "Sequence", "steps": [
        {"name": "embed", "serviceUrl": embed.url("/e")},
        {"name": "retrieve", "serviceUrl": search.url("/s")},
        {"name": "generate", "serviceUrl": llm.url("/l")}]}}
    ext = {"steps": {
        "root/embed": {"request": {"input": "{{ $request.question }}"}},
        "root/retrieve": {"request": {"vector": "{{ $response.data.0.embedding }}", "top_k": 2}},
        "root/generate": {"request": {"messages": [{"role": "user", "content":
            "Q: {{ $request.question }} P: {{ $steps.retrieve.passages.#.text }} n={{ $request.n }}"}],
            "n": "{{ $request.n }}", "stream": False}}}}
    router = await start(start_router, nodes, ext)
    status, body, _ = await router.post({"question": "why?", "n": 3})
    assert status == 200
    assert embed.received[0].json() == {"input": "why?"}
    assert search.received[0].json() == {"vector": [0.1, 0.2], "top_k": 2}
    assert orjson.loads(body) == {"messages": [{"role": "user", "content": 'Q: why? P: ["p1","p2"] n=3'}],
                                  "n": 3, "stream": False}


async def test_missing_request_field_is_400_naming_step(start_service: Any, start_router: Any) -> None:
    """A $request reference that selects nothing answers 400 and names the step and reference."""
    svc = await start_service({"/e": echo})
    nodes = {"root": {"routerType": "Sequence", "steps": [{"name": "embed", "serviceUrl": svc.url("/e")}]}}
    router = await start(start_router, nodes, {"steps": {"root/embed": {"request": {"q": "{{ $request.question }}"}}}})
    status, body, _ = await router.post({"other": 1})
    assert status == 400
    assert orjson.loads(body)["cause"] == "step embed: {{ $request.question }} selected nothing"
    assert svc.received == []


async def test_missing_response_field_is_502(start_service: Any, start_router: Any) -> None:
    """A $response reference that selects nothing fails with 502 naming the step."""
    a = await start_service({"/a": (200, {"nope": 1})})
    b = await start_service({"/b": echo})
    nodes = {"root": {"routerType": "Sequence", "steps": [
        {"name": "a", "serviceUrl": a.url("/a")}, {"name": "b", "serviceUrl": b.url("/b")}]}}
    router = await start(start_router, nodes, {"steps": {"root/b": {"request": {"v": "{{ $response.vector }}"}}}})
    status, body, _ = await router.post({})
    assert status == 502
    assert "step b: {{ $response.vector }} selected nothing" in orjson.loads(body)["cause"]
    assert b.received == []


async def test_v2_outputs_become_inputs(start_service: Any, start_router: Any) -> None:
    """v2OutputsToInputs turns an Open Inference Protocol answer's outputs into the next request's inputs."""
    a = await start_service({"/a": (200, {"model_name": "m", "id": "r1", "outputs": [
        {"name": "out", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 0.9]},
        {"name": "dropped", "shape": [1], "datatype": "INT64", "data": [1]}]})})
    b = await start_service({"/b": echo})
    nodes = {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": a.url("/a")}, {"name": "b", "serviceUrl": b.url("/b")}]}}
    ext = {"steps": {"root/b": {"v2OutputsToInputs": {"rename": {"out": "input-0"}, "only": ["out"]}}}}
    router = await start(start_router, nodes, ext)
    status, _, _ = await router.post({"inputs": []})
    assert status == 200
    assert b.received[0].json() == {"id": "r1", "inputs": [
        {"name": "input-0", "shape": [1, 2], "datatype": "FP32", "data": [0.1, 0.9]}]}


async def test_templates_in_switch_and_ensemble_read_request(start_service: Any, start_router: Any) -> None:
    """Outside a Sequence, templates read the original request."""
    svc = await start_service({"/x": echo})
    nodes = {"root": {"routerType": "Ensemble", "steps": [
        {"name": "a", "serviceUrl": svc.url("/x")}, {"name": "b", "nodeName": "pick"}]},
        "pick": {"routerType": "Switch", "steps": [{"name": "only", "serviceUrl": svc.url("/x"), "condition": "k"}]}}
    ext = {"steps": {"root/a": {"request": {"a": "{{ $request.k }}"}},
                     "pick/only": {"request": {"only": "{{ $request.k }}"}}}}
    router = await start(start_router, nodes, ext)
    status, body, _ = await router.post({"k": [1]})
    assert status == 200
    assert orjson.loads(body) == {"a": {"a": [1]}, "b": {"only": [1]}}


@pytest.mark.parametrize(("ext", "message"), [
    ({"steps": {"root/ghost": {"request": {}}}}, "node 'root' has no step named 'ghost'"),
    ({"steps": {"nowhere/x": {"request": {}}}}, "expected '<node>/<step name or index>'"),
    ({"steps": {"root/a": {"request": {"x": "{{ $response.y }}"}}}}, "$response needs a previous step"),
    ({"steps": {"root/a": {"request": {"x": "{{ $steps.b.y }}"}}}}, "$steps.b is not an earlier named step"),
    ({"steps": {"root/b": {"request": {"x": "{{ body.y }}"}}}}, "must start with $request, $response or $steps"),
    ({"steps": {"root/b": {"request": {"x": "{{ $request.#(a==1 }}"}}}}, "{{ $request.#(a==1 }}"),
    ({"steps": {"root/b": {"requets": {}}}}, "steps.root/b.requets: Extra inputs are not permitted"),
    ({"deadlineSeconds": -1}, "deadlineSeconds: Input should be greater than 0"),
])
def test_extension_mistakes_are_rejected_at_load(ext: dict[str, Any], message: str) -> None:
    """Each mistake in the extensions annotation is a load error that names the annotation and field."""
    nodes = {"root": {"routerType": "Sequence", "steps": [
        {"name": "a", "serviceUrl": "http://a/"}, {"name": "b", "serviceUrl": "http://b/"}]}}
    with pytest.raises(GraphValidationError) as info:
        compile_graph(load_graph_text(graph_text(nodes, ext), "g.yaml"))
    text = "\n".join(info.value.problems)
    assert message in text
    assert ANNOTATION in text


def test_annotation_that_is_not_yaml_is_rejected() -> None:
    """An annotation value that is not YAML is reported with its line."""
    text = yaml.safe_dump({
        "kind": "InferenceGraph", "metadata": {"name": "g", "annotations": {ANNOTATION: "steps: [unclosed"}},
        "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": "http://a/"}]}}}})
    graph = load_graph_text(text, "g.yaml")
    with pytest.raises(GraphValidationError, match="not valid YAML/JSON"):
        compile_graph(graph)
