"""The sidecar resolves a Service to its ready pods from EndpointSlices, against the fake API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fake_kube import FakeKube
from test_controller import (
    NS,
    RAG_SERVICES,
    conditions,
    eventually,
    fake,
    isvc,
    rag_graph,
    seed_rag,
    start_controller,
    v1,
)

from graph_router.controller.endpoints import endpoint_urls, service_of
from graph_router.endpoints import ENDPOINTS_ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph

__all__ = ["fake", "start_controller"]  # the fixtures, shared with test_controller


def endpoint_slice(name: str, service: str, pods: list[tuple[str, bool | None]], port: int = 8080) -> dict[str, Any]:
    endpoints = []
    for address, ready in pods:
        endpoint: dict[str, Any] = {"addresses": [address]}
        if ready is not None:
            endpoint["conditions"] = {"ready": ready}
        endpoints.append(endpoint)
    return {"metadata": {"name": name, "namespace": NS, "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": port}],
            "endpoints": endpoints}


def replicas(path: Path) -> dict[str, list[str]]:
    if not path.exists():
        return {}
    annotations = orjson.loads(path.read_bytes())["metadata"].get("annotations") or {}
    text = annotations.get(ENDPOINTS_ANNOTATION)
    return orjson.loads(text) if text else {}


def pod_url(address: str) -> str:
    return f"http://{address}:8080/v1/models/qwen-llm:predict"


async def test_ready_endpoints_are_written_and_followed(fake: FakeKube, start_controller: Any) -> None:
    seed_rag(fake)
    fake.put("endpointslices", endpoint_slice("qwen-llm-abc", "qwen-llm",
                                              [("10.0.0.1", True), ("10.0.0.2", None), ("10.0.0.3", False)]))
    fake.put("endpointslices", endpoint_slice("other-xyz", "other", [("10.9.0.1", True), ("10.9.0.2", True)]))
    controller = await start_controller()
    output = controller.settings.output
    service_url = v1("http://qwen-llm", "qwen-llm")
    await eventually(lambda: replicas(output), "endpoints in the graph file")
    assert replicas(output) == {service_url: [pod_url("10.0.0.1"), pod_url("10.0.0.2")]}
    await eventually(lambda: conditions(fake).get("Ready", {}).get("status") == "True", "Ready=True")
    plan = compile_graph(load_graph_text(output.read_text(), str(output)))
    step = next(s for n in plan.nodes.values() for s in n.steps if s.service_name == "qwen-llm")
    assert step.route is not None and step.route.endpoints is not None
    assert [e.url for e in step.route.endpoints.endpoints] == [pod_url("10.0.0.1"), pod_url("10.0.0.2")]
    # A pod turning ready, in a second slice of the same Service, joins.
    fake.put("endpointslices", endpoint_slice("qwen-llm-def", "qwen-llm", [("10.0.0.4", True)]))
    await eventually(lambda: len(replicas(output).get(service_url, [])) == 3, "the joined pod")
    # Down to one ready pod: nothing to choose between, the Service's URL alone.
    fake.delete("endpointslices", NS, "qwen-llm-abc")
    await eventually(lambda: replicas(output) == {}, "the annotation gone")
    assert service_url in output.read_text()


async def test_a_service_url_step_in_the_namespace_gets_its_pods_too(fake: FakeKube, start_controller: Any) -> None:
    graph = rag_graph()
    steps = graph["spec"]["nodes"]["root"]["steps"]
    steps[0] = {"name": steps[0].get("name", "embed"), "serviceUrl": f"http://embedder.{NS}.svc.cluster.local/embed"}
    for name in RAG_SERVICES:
        fake.put("inferenceservices", isvc(name, f"http://{name}"))
    fake.put("inferencegraphs", graph)
    fake.put("endpointslices", endpoint_slice("embedder-1", "embedder", [("10.1.0.1", True), ("10.1.0.2", True)]))
    controller = await start_controller()
    output = controller.settings.output
    await eventually(lambda: replicas(output), "endpoints in the graph file")
    assert replicas(output) == {f"http://embedder.{NS}.svc.cluster.local/embed": [
        "http://10.1.0.1:8080/embed", "http://10.1.0.2:8080/embed"]}


def test_service_of_a_url() -> None:
    assert service_of("http://qwen-llm-predictor.models.svc.cluster.local/v1/x", NS) == "qwen-llm-predictor"
    assert service_of("http://qwen-llm", NS) == "qwen-llm"
    assert service_of("http://qwen.other.svc.cluster.local", NS) is None
    assert service_of("http://10.0.0.1:8080", NS) is None
    assert service_of("grpc://qwen:8081/v2/models/q/infer", NS) is None


def test_ipv6_and_a_single_port() -> None:
    slices = {"s": {"metadata": {"labels": {"kubernetes.io/service-name": "m"}}, "ports": [{"port": 8000}],
                    "endpoints": [{"addresses": ["fd00::1"]}, {"addresses": ["fd00::2"]}]}}
    assert endpoint_urls("https://m/v1/chat/completions", NS, slices) == [
        "https://[fd00::1]:8000/v1/chat/completions", "https://[fd00::2]:8000/v1/chat/completions"]
