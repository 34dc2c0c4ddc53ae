"""The controller's pure parts: KServe's URL rules, the status patch, the file writer, the backoff."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

from graph_router.controller.output import GraphFileWriter
from graph_router.controller.resolve import Unresolved, model_name_from_args, resolve_service, runtime_name
from graph_router.controller.settings import WatchSettings
from graph_router.controller.status import Outcome, status_patch
from graph_router.controller.watch import backoff_delay

NOW = "2026-05-01T12:00:00Z"
LATER = "2026-05-01T12:05:00Z"


def isvc(name: str = "m", url: str | None = "http://m.ns", **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name}, "spec": spec or {"predictor": {"sklearn": {"storageUri": "s3://m"}}}}
    if url:
        obj["status"] = {"address": {"url": url}}
    return obj


def resolve(obj: dict[str, Any], runtimes: dict[str, Any] | None = None) -> str | Unresolved:
    name = obj["metadata"]["name"]
    return resolve_service(name, "ns", {name: obj}, runtimes or {})


@pytest.mark.parametrize(("spec", "url"), [
    ({"predictor": {"sklearn": {"storageUri": "s3://m"}}}, "http://m.ns/v1/models/m:predict"),
    ({"predictor": {"sklearn": {"storageUri": "s3://m", "protocolVersion": "v2"}}}, "http://m.ns/v2/models/m/infer"),
    ({"predictor": {"triton": {"storageUri": "s3://m"}}}, "http://m.ns/v2/models/m/infer"),
    ({"predictor": {"model": {"modelFormat": {"name": "onnx"}, "storageUri": "s3://m",
                              "protocolVersion": "grpc-v2"}}}, "grpc://m.ns/v2/models/m/infer"),  # KServe: bare URL
    ({"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://m",
                              "args": ["--model_name=iris"]}}}, "http://m.ns/v1/models/iris:predict"),
    ({"predictor": {"model": {"modelFormat": {"name": "mlserver"}, "storageUri": "s3://m",
                              "env": [{"name": "MLSERVER_MODEL_NAME", "value": "ml"}],
                              "args": ["--model_name=ignored"]}}}, "http://m.ns/v1/models/ml:predict"),
    ({"predictor": {"containers": [{"name": "kserve-container", "args": ["--model_name", "custom"],
                                    "env": [{"name": "PROTOCOL", "value": "v2"}]}]}},
     "http://m.ns/v2/models/custom/infer"),
    ({"predictor": {"containers": [{"name": "kserve-container",
                                    "env": [{"name": "MULTI_MODEL_SERVER", "value": "true"}]}]}}, "http://m.ns"),
    ({"predictor": {"sklearn": {}}}, "http://m.ns"),  # no storage: a multi-model server, bare URL
    ({"predictor": {"model": {"modelFormat": {"name": "huggingface"}}}}, "http://m.ns/v1/models/m:predict"),
    ({"predictor": {"sklearn": {"storageUri": "s3://m", "protocolVersion": "v2"}},
      "transformer": {"containers": [{"name": "kserve-container", "args": ["--model_name", "t"]}]}},
     "http://m.ns/v1/models/t:predict"),
])
def test_urls_follow_kserves_rules(spec: dict[str, Any], url: str) -> None:
    """Protocol, model name and multi-model detection give the path KServe's controller would give."""
    assert resolve(isvc(**spec)) == url


def test_model_name_argument_forms() -> None:
    """Both ``--model_name=x`` and ``--model_name x`` count, and the last one wins."""
    assert model_name_from_args(["--model_name=a"]) == "a"
    assert model_name_from_args(["--model_name", "b"]) == "b"
    assert model_name_from_args(["--model_name=a", "--model_name", "c", "--port", "1"]) == "c"
    assert model_name_from_args(["--model_name", "--port"]) == ""


def test_named_runtime_decides_the_protocol() -> None:
    """A model predictor naming a runtime takes the runtime's first v1/v2 protocol, or fails without one."""
    obj = isvc(predictor={"model": {"modelFormat": {"name": "x"}, "runtime": "rt", "storageUri": "s3://m",
                                    "protocolVersion": "v1"}})
    assert runtime_name(obj) == "rt"
    assert resolve(obj, {"rt": {"protocolVersions": ["grpc-v2", "v2", "v1"]}}) == "http://m.ns/v2/models/m/infer"
    assert resolve(obj, {"rt": {}}) == "http://m.ns/v1/models/m:predict"  # none listed: keep the predictor's
    only_grpc = resolve(obj, {"rt": {"protocolVersions": ["grpc-v1"]}})
    assert isinstance(only_grpc, Unresolved) and only_grpc.reason == "RuntimeError"
    missing = resolve(obj)
    assert isinstance(missing, Unresolved)
    assert "No ServingRuntimes or ClusterServingRuntimes with the name: rt" in missing.message
    assert runtime_name(isvc()) is None


def test_missing_and_not_ready_services_are_unresolved() -> None:
    """No InferenceService: NotFound; no status.address.url: NotReady."""
    missing = resolve_service("ghost", "ns", {}, {})
    assert missing == Unresolved("ghost", "NotFound", "InferenceService 'ghost' not found in namespace 'ns'")
    not_ready = resolve(isvc(url=None))
    assert isinstance(not_ready, Unresolved) and not_ready.reason == "NotReady"


def test_status_patch_holds_only_what_changed() -> None:
    """Nothing changed: no patch; a new generation alone: observedGeneration alone."""
    first = status_patch(None, Outcome(generation=1, url="http://g"), NOW)
    assert first is not None
    status = first["status"]
    assert status["observedGeneration"] == 1 and status["url"] == "http://g"
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in status["conditions"]] == [
        ("Ready", "True", NOW), ("ServicesResolved", "True", NOW)]
    assert status_patch(status, Outcome(generation=1, url="http://g"), LATER) is None
    assert status_patch(status, Outcome(generation=2, url="http://g"), LATER) == {"status": {"observedGeneration": 2}}
    assert status_patch(status, Outcome(generation=1, url=None), LATER) is None, "no url: leave status.url alone"


def test_transition_time_moves_only_with_the_status() -> None:
    """A condition keeps its lastTransitionTime while its status holds, and takes a new one when it flips."""
    status = status_patch(None, Outcome(generation=1), NOW)["status"]  # type: ignore[index]
    gone = Unresolved("qwen-llm", "NotFound", "InferenceService 'qwen-llm' not found")
    patch = status_patch(status, Outcome(generation=1, unresolved=[gone]), LATER)
    assert patch is not None
    ready, services = patch["status"]["conditions"]
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == ("False", "ServicesNotResolved", LATER)
    assert services["reason"] == "ServiceNotFound:qwen-llm"
    now_status = {**status, **patch["status"]}
    assert now_status["conditions"][1]["lastTransitionTime"] == LATER
    again = status_patch(now_status, Outcome(generation=1, unresolved=[gone]), "2026-05-01T13:00:00Z")
    assert again is None


def test_other_owners_conditions_are_kept_in_place() -> None:
    """Conditions of types we do not own stay, in their order."""
    current = {"conditions": [{"type": "Stopped", "status": "False"},
                              {"type": "Ready", "status": "Unknown", "lastTransitionTime": NOW}]}
    patch = status_patch(current, Outcome(generation=None, problems=["no node named 'root'"]), LATER)
    assert patch is not None
    conds = patch["status"]["conditions"]
    assert [c["type"] for c in conds] == ["Stopped", "Ready", "ServicesResolved"]
    assert conds[0] == {"type": "Stopped", "status": "False"}
    assert conds[1]["reason"] == "InvalidGraph" and "no node named 'root'" in conds[1]["message"]
    assert conds[2]["status"] == "True", "a readable graph's services were resolved"
    assert "observedGeneration" not in patch["status"]
    unreadable = status_patch(None, Outcome(generation=3, problems=["spec.nodes: bad"], unresolved=None), LATER)
    assert unreadable is not None
    assert unreadable["status"]["conditions"][1]["status"] == "Unknown"


def test_writer_replaces_the_file_atomically_and_only_on_change(tmp_path: Path) -> None:
    """A write is a rename of a complete file; the same content is not written twice."""
    target = tmp_path / "graph" / "graph.json"
    writer = GraphFileWriter(target)
    assert writer.write(b'{"a": 1}\n') is True
    first_inode = os.stat(target).st_ino
    assert writer.write(b'{"a": 1}\n') is False
    assert os.stat(target).st_ino == first_inode
    assert writer.write(b'{"a": 2}\n') is True
    assert target.read_bytes() == b'{"a": 2}\n'
    assert os.stat(target).st_ino != first_inode, "replaced by rename, not rewritten in place"
    assert sorted(p.name for p in target.parent.iterdir()) == ["graph.json"], "no temporary file left"
    assert writer.writes == 2


def test_backoff_grows_is_capped_and_jittered() -> None:
    """Delays double up to the cap, each between half of its step and the whole step."""
    settings = WatchSettings(backoff_initial=0.5, backoff_max=8.0)
    rng = random.Random(1)
    for attempt, step in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0), (200, 8.0)]:
        delays = [backoff_delay(attempt, settings, rng) for _ in range(50)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1, "jittered"


def test_rendered_file_keeps_the_extensions_annotation() -> None:
    """The file the sidecar writes carries the extensions annotation, so the router applies the extensions."""
    import yaml

    from graph_router.controller.reconcile import render
    from graph_router.extensions import ANNOTATION
    from graph_router.loader import load_graph_text
    from graph_router.plan import compile_graph

    ext = yaml.safe_dump({"steps": {"root/a": {"request": {"q": "{{ $request.question }}"}}}})
    obj = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
           "metadata": {"name": "g", "namespace": "ns", "annotations": {ANNOTATION: ext, "other": "dropped"}},
           "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "a", "serviceName": "m"}]}}}}
    content = render(obj, "ns", "g", {"m": "http://m.ns.svc/v1/models/m:predict"})
    plan = compile_graph(load_graph_text(content.decode(), "graph.json"))
    step = plan.root.steps[0]
    assert step.url == "http://m.ns.svc/v1/models/m:predict"
    assert step.template is not None
    assert step.template.render({"$request": b'{"question": "hi"}'}, "a") == b'{"q":"hi"}'
