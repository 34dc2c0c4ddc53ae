"""Loading and validating graphs: file shapes, KServe's admission rules and what KServe misses."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from graph_router.errors import GraphError, GraphValidationError
from graph_router.loader import load_graph_file, load_graph_json, load_graph_text
from graph_router.plan import compile_graph
from graph_router.spec import InferenceGraph, RouterType

RESOURCE = """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: my-graph
  namespace: ns
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - name: first
          serviceName: model-a
        - nodeName: pick
          data: $response
    pick:
      routerType: Switch
      steps:
        - serviceUrl: http://b.ns.svc/v1/models/b:predict
          condition: 'predictions.#(label=="dog")'
  routerTimeouts: {serverRead: 5, serviceClient: 2}
status:
  url: http://my-graph.ns.example.com
  observedGeneration: 3
  conditions:
    - {type: Ready, status: "True", lastTransitionTime: "2026-01-01T00:00:00Z"}
"""


def test_full_resource_round_trips() -> None:
    """A full resource loads with spec and status, and dumps back with its wire field names."""
    graph = load_graph_text(RESOURCE, "r.yaml")
    assert graph.metadata.name == "my-graph"
    assert graph.spec.nodes["pick"].router_type is RouterType.SWITCH
    assert graph.spec.router_timeouts is not None and graph.spec.router_timeouts.service_client == 2
    assert graph.status is not None and graph.status.conditions[0].status == "True"
    dumped = graph.model_dump(by_alias=True, exclude_none=True)
    assert dumped["spec"]["nodes"]["root"]["steps"][1]["nodeName"] == "pick"
    assert InferenceGraph.model_validate(dumped) == graph


def test_multi_document_and_bare_spec(tmp_path: Path) -> None:
    """A multi-document YAML with one InferenceGraph, and a bare JSON spec, both load."""
    f = tmp_path / "all.yaml"
    f.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n" + RESOURCE)
    assert load_graph_file(f).metadata.name == "my-graph"
    j = tmp_path / "bare.json"
    j.write_text(orjson.dumps({"nodes": {"root": {"routerType": "Splitter", "steps": [
        {"serviceUrl": "http://a/", "weight": 100}]}}}).decode())
    assert load_graph_file(j, name="bare").spec.nodes["root"].steps[0].weight == 100


def test_shape_error_names_file_line_and_field() -> None:
    """A wrongly typed field is reported with the file, its line and the field path."""
    text = ("nodes:\n  root:\n    routerType: Sequence\n    steps:\n"
            "      - serviceUrl: http://a/\n        weight: lots\n")
    with pytest.raises(GraphError) as info:
        load_graph_text(text, "g.yaml")
    message = str(info.value)
    assert "g.yaml:6" in message
    assert "spec.nodes.root.steps[0].weight" in message


def test_unknown_router_type_is_rejected() -> None:
    """A routerType outside the four kinds is a load error naming the field."""
    with pytest.raises(GraphError, match="routerType"):
        load_graph_json('{"nodes": {"root": {"routerType": "Loop", "steps": []}}}')


def test_bad_yaml_reports_line() -> None:
    """Broken YAML is reported with the file and line."""
    with pytest.raises(GraphError, match=r"x.yaml:2"):
        load_graph_text("nodes:\n\troot: 1\n", "x.yaml")


def _problems(spec: dict[str, object], name: str = "g") -> list[str]:
    with pytest.raises(GraphValidationError) as info:
        compile_graph(load_graph_json(orjson.dumps(spec).decode(), name=name))
    assert info.value.graph == name
    return info.value.problems


def test_every_problem_is_listed_with_node_and_step() -> None:
    """Validation lists every problem, each naming its node and step."""
    problems = _problems({"nodes": {
        "root": {"routerType": "Sequence", "steps": [
            {"name": "a", "serviceUrl": "http://a/"}, {"name": "a", "serviceUrl": "http://b/"},
            {"serviceUrl": "http://c/", "nodeName": "x"}, {}]},
        "split": {"routerType": "Splitter", "steps": [{"serviceUrl": "http://a/", "weight": 60},
                                                        {"serviceUrl": "http://a/", "weight": 30}]},
        "sw": {"routerType": "Switch", "steps": [{"serviceUrl": "http://a/"}]},
        "ens": {"routerType": "Ensemble", "steps": []}}})
    text = "\n".join(problems)
    assert "node 'root' step 1 ('a'): step name 'a' is already used by step 0" in text
    assert "node 'root' step 2: names nodeName, serviceUrl" in text
    assert "node 'root' step 3: needs one of nodeName, serviceName or serviceUrl" in text
    assert "node 'split': Splitter weights sum to 90" in text
    assert "node 'sw' step 0: a Switch step needs a condition" in text
    assert "node 'ens': a Ensemble node needs at least one step" in text


def test_root_cycles_and_dangling_nodes() -> None:
    """A missing root, nodeName cycles and nodeName of a missing node are rejected."""
    problems = _problems({"nodes": {
        "a": {"routerType": "Sequence", "steps": [{"nodeName": "b"}, {"nodeName": "ghost"}]},
        "b": {"routerType": "Sequence", "steps": [{"nodeName": "a"}]}}})
    text = "\n".join(problems)
    assert "no node named 'root'" in text
    assert "nodeName cycle: 'a' -> 'b' -> 'a'" in text
    assert "nodeName 'ghost' is not a node of this graph" in text


def test_self_cycle_and_invalid_condition_and_name() -> None:
    """A node calling itself, a condition that is not GJSON and a bad graph name are rejected."""
    problems = _problems({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"nodeName": "root"}, {"serviceUrl": "http://a/", "condition": "a.#(b==1"}]}}}, name="Bad_Name")
    text = "\n".join(problems)
    assert "nodeName cycle: 'root' -> 'root'" in text
    assert "is not valid GJSON" in text
    assert "graph name 'Bad_Name'" in text


def test_service_name_needs_url_to_serve() -> None:
    """A step naming only a serviceName cannot be served until it has a URL; --service supplies it."""
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceName": "m"}]}}}
    problems = _problems(spec)
    assert "serviceName 'm' has no URL" in problems[0]
    plan = compile_graph(load_graph_json(orjson.dumps(spec).decode()), {"m": "http://127.0.0.1:9/x"})
    assert plan.root.steps[0].url == "http://127.0.0.1:9/x"


def test_resolved_form_is_accepted() -> None:
    """serviceName beside serviceUrl is KServe's resolved form, not two targets."""
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceName": "m", "serviceUrl": "http://m.ns.svc/v1/models/m:predict"}]}}}
    plan = compile_graph(load_graph_json(orjson.dumps(spec).decode()))
    assert plan.root.steps[0].url == "http://m.ns.svc/v1/models/m:predict"


def test_service_url_must_be_http() -> None:
    """A serviceUrl that is not an http(s) URL is rejected at load."""
    problems = _problems({"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": "ftp://x"}]}}})
    assert "is not an http(s) URL" in problems[0]


def test_validate_command_summarises_and_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`graph-router validate` prints one line per valid graph and every problem of an invalid one, exit 1."""
    from graph_router.cli import main

    samples = Path(__file__).resolve().parents[1] / "config" / "samples"
    assert main(["validate", str(samples / "rag-pipeline.yaml"), str(samples / "classic-v1-chain.yaml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert "OK graph 'rag-pipeline'" in out[0] and "3 step(s)" in out[0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  root:\n    routerType: Splitter\n    steps:\n"
                   "      - {serviceUrl: 'http://a/', weight: 60}\n      - {nodeName: ghost, weight: 30}\n")
    assert main(["validate", str(samples / "rag-pipeline.yaml"), str(bad)]) == 1
    captured = capsys.readouterr()
    assert "OK graph 'rag-pipeline'" in captured.out
    assert f"{bad}: INVALID" in captured.err
    assert "weights sum to 90" in captured.err
    assert "nodeName 'ghost' is not a node of this graph" in captured.err
