"""The controller sidecar against a fake API server on loopback, through the real ``kubernetes`` client.

Each test starts the fake server (``fake_kube.FakeKube``), writes a kubeconfig pointing at
it, runs the real Controller in the test's loop and checks what crossed the wire: the
graph file the router would read and the status the API server was patched with.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from fake_kube import FakeKube

from graph_router.controller import Controller, ControllerSettings, WatchSettings
from graph_router.controller.kube import INFERENCE_SERVICES, KubeClient
from graph_router.reload import GraphFileReloader
from graph_router.server import Router, start_server
from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamClient

NS = "models"
GRAPH = "rag-pipeline"
RAG_SERVICES = ("bge-embedder", "vector-search", "qwen-llm")
IG = "inferencegraphs"
ISVC = "inferenceservices"
SAMPLES = Path(__file__).resolve().parents[1] / "config" / "samples"

# Short everything, so that reconnects and backoff happen within a test's time.
FAST = WatchSettings(resync_seconds=30, watch_timeout_seconds=10, read_grace_seconds=3, request_timeout=5,
                     connect_timeout=1, backoff_initial=0.05, backoff_max=0.4)


async def eventually(check: Callable[[], Any], what: str, timeout: float = 6.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)


def rag_graph() -> dict[str, Any]:
    """The sample RAG graph from config/samples, placed in the test namespace."""
    doc = yaml.safe_load((SAMPLES / "rag-pipeline.yaml").read_text())
    doc["metadata"]["namespace"] = NS
    return doc



def seed_rag(fake: FakeKube, url_suffix: str = "") -> None:
    """The sample RAG graph and its three InferenceServices, ready, in the fake cluster."""
    for name in RAG_SERVICES:
        fake.put(ISVC, isvc(name, f"http://{name}{url_suffix}"))
    fake.put(IG, rag_graph())

def isvc(name: str, url: str | None = None, *, predictor: dict[str, Any] | None = None,
         transformer: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": NS},
        "spec": {"predictor": predictor or {"model": {"modelFormat": {"name": "sklearn"},
                                                       "storageUri": f"gs://models/{name}"}}},
    }
    if transformer is not None:
        obj["spec"]["transformer"] = transformer
    if url is not None:
        obj["status"] = {"address": {"url": url}, "conditions": [{"type": "Ready", "status": "True"}]}
    return obj


def v1(url: str, model: str) -> str:
    return f"{url}/v1/models/{model}:predict"


def step_urls(path: Path) -> dict[str, str]:
    """serviceName -> serviceUrl in the written graph file."""
    doc = orjson.loads(path.read_bytes())
    return {s["serviceName"]: s["serviceUrl"] for n in doc["spec"]["nodes"].values() for s in n["steps"]
            if "serviceName" in s}


def conditions(fake: FakeKube) -> dict[str, dict[str, Any]]:
    obj = fake.get(IG, NS, GRAPH) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


@pytest.fixture
async def fake() -> AsyncIterator[FakeKube]:
    server = FakeKube()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def start_controller(fake: FakeKube, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Controller]]]:
    """Start the real controller against ``fake``: ``await start_controller(url=..., output=...)``."""
    running: list[tuple[asyncio.Task[None], KubeClient]] = []
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", NS)

    async def start(*, url: str | None = None, output: Path | None = None,
                    watch: WatchSettings = FAST) -> Controller:
        kube = KubeClient.from_environment(str(kubeconfig), request_timeout=watch.request_timeout,
                                           connect_timeout=watch.connect_timeout)
        settings = ControllerSettings(namespace=NS, name=GRAPH, output=output or tmp_path / "graph" / "graph.json",
                                      url=url, debounce_seconds=0.02, watch=watch)
        controller = Controller(settings, kube, rng=random.Random(7))
        running.append((asyncio.create_task(controller.run()), kube))
        return controller

    yield start
    for task, kube in running:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        kube.close()


async def test_graph_create_update_delete(fake: FakeKube, start_controller: Any) -> None:
    """A created graph is written resolved with Ready status; an update rewrites it; a delete keeps the file."""
    for name in RAG_SERVICES:
        fake.put(ISVC, isvc(name, f"http://{name}.{NS}.svc.cluster.local"))
    controller = await start_controller(url="http://rag-pipeline.models.example")
    output = controller.settings.output
    fake.put(IG, rag_graph())

    await eventually(output.exists, "the graph file")
    assert step_urls(output) == {
        "bge-embedder": v1(f"http://bge-embedder.{NS}.svc.cluster.local", "bge-embedder"),
        "vector-search": v1(f"http://vector-search.{NS}.svc.cluster.local", "vector-search"),
        "qwen-llm": v1(f"http://qwen-llm.{NS}.svc.cluster.local", "qwen-llm"),
    }
    written = orjson.loads(output.read_bytes())
    extensions = rag_graph()["metadata"]["annotations"]["graph-router.io/extensions"]
    assert written["metadata"] == {"name": GRAPH, "namespace": NS,
                                   "annotations": {"graph-router.io/extensions": extensions}}
    assert written["spec"]["routerTimeouts"] == {"serviceClient": 120}
    await eventually(lambda: conditions(fake).get("Ready", {}).get("status") == "True", "Ready=True")
    status = fake.get(IG, NS, GRAPH)["status"]
    assert status["observedGeneration"] == 1
    assert status["url"] == "http://rag-pipeline.models.example"
    assert conditions(fake)["ServicesResolved"]["status"] == "True"

    updated = rag_graph()
    updated["metadata"].pop("annotations")  # its templates read the retrieval step
    del updated["spec"]["nodes"]["root"]["steps"][1]  # no retrieval step any more
    fake.put(IG, updated)
    await eventually(lambda: "vector-search" not in step_urls(output), "the updated graph file")
    await eventually(lambda: fake.get(IG, NS, GRAPH)["status"].get("observedGeneration") == 2,
                     "observedGeneration 2")

    before = output.read_bytes()
    patches = len(fake.status_patches)
    fake.delete(IG, NS, GRAPH)
    await eventually(lambda: GRAPH not in controller.graphs.objects, "the delete to arrive")
    await asyncio.sleep(0.2)
    assert output.read_bytes() == before, "a deleted graph leaves the router on its last graph"
    assert len(fake.status_patches) == patches, "nothing to patch on a deleted graph"

    fake.put(IG, rag_graph())  # created again
    await eventually(lambda: "vector-search" in step_urls(output), "the re-created graph file")


async def test_service_that_becomes_ready_late(fake: FakeKube, start_controller: Any) -> None:
    """Missing and not-ready services are named in status and no file is written until all resolve."""
    fake.put(ISVC, isvc("bge-embedder", "http://bge"))
    fake.put(ISVC, isvc("qwen-llm"))  # exists, no status.address.url yet
    fake.put(IG, rag_graph())
    controller = await start_controller()

    services = await eventually(lambda: conditions(fake).get("ServicesResolved"), "ServicesResolved")
    assert services["status"] == "False"
    assert services["reason"] == "ServiceNotFound:vector-search,ServiceNotReady:qwen-llm"
    assert "'vector-search' not found" in services["message"]
    assert "'qwen-llm' is not ready" in services["message"]
    ready = conditions(fake)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ServicesNotResolved")
    assert "vector-search" in ready["message"] and "qwen-llm" in ready["message"]
    assert not controller.settings.output.exists()

    fake.put(ISVC, isvc("vector-search", "http://search"))
    await eventually(lambda: conditions(fake)["ServicesResolved"].get("reason") == "ServiceNotReady:qwen-llm",
                     "only qwen-llm unresolved")
    assert not controller.settings.output.exists()

    fake.set_status(ISVC, NS, "qwen-llm", {"address": {"url": "http://qwen"},
                                          "conditions": [{"type": "Ready", "status": "True"}]})
    await eventually(controller.settings.output.exists, "the graph file once qwen-llm is ready")
    assert step_urls(controller.settings.output)["qwen-llm"] == v1("http://qwen", "qwen-llm")
    await eventually(lambda: conditions(fake)["Ready"]["status"] == "True", "Ready=True")
    assert "reason" not in conditions(fake)["ServicesResolved"]


async def test_changed_service_url_rewrites_the_file(fake: FakeKube, start_controller: Any) -> None:
    """A changed status.address.url is picked up without any change to the graph (KServe misses it)."""
    seed_rag(fake, "-v1")
    controller = await start_controller()
    output = controller.settings.output
    await eventually(lambda: conditions(fake).get("Ready", {}).get("status") == "True", "Ready=True")
    patches = len(fake.status_patches)
    fake.set_status(ISVC, NS, "qwen-llm", {"address": {"url": "http://qwen-llm-v2"}})
    await eventually(lambda: step_urls(output)["qwen-llm"] == v1("http://qwen-llm-v2", "qwen-llm"), "the new URL")
    await asyncio.sleep(0.2)
    assert len(fake.status_patches) == patches, "the status did not change, so it is not patched"
    # An InferenceService the graph does not call changes nothing.
    writes = controller.writer.writes
    fake.put(ISVC, isvc("unrelated", "http://unrelated"))
    await asyncio.sleep(0.2)
    assert controller.writer.writes == writes


async def test_resolution_follows_kserve_rules(fake: FakeKube, start_controller: Any) -> None:
    """Model name, transformer protocol and a named runtime's protocol shape each URL as in KServe."""
    fake.put(ISVC, isvc("bge-embedder", "http://bge", predictor={
        "model": {"modelFormat": {"name": "huggingface"}, "args": ["--model_name", "bge-small"]}}))
    fake.put(ISVC, isvc("vector-search", "http://search", transformer={
        "containers": [{"name": "kserve-container", "image": "t", "env": [{"name": "PROTOCOL", "value": "v2"}]}]}))
    fake.put(ISVC, isvc("qwen-llm", "http://qwen", predictor={
        "model": {"modelFormat": {"name": "vllm"}, "runtime": "vllm-runtime", "storageUri": "hf://qwen"}}))
    fake.put("clusterservingruntimes", {"metadata": {"name": "vllm-runtime"},
                                        "spec": {"protocolVersions": ["grpc-v2", "v2"]}})
    fake.put(IG, rag_graph())
    controller = await start_controller()
    await eventually(controller.settings.output.exists, "the graph file")
    assert step_urls(controller.settings.output) == {
        "bge-embedder": "http://bge/v1/models/bge-small:predict",
        "vector-search": "http://search/v2/models/vector-search/infer",
        "qwen-llm": "http://qwen/v2/models/qwen-llm/infer",
    }
    # The namespace's ServingRuntime is looked up first, then the ClusterServingRuntime.
    runtime_gets = [r.path for r in fake.requests if "servingruntimes/" in r.path]
    assert runtime_gets[:2] == [
        f"/apis/serving.kserve.io/v1alpha1/namespaces/{NS}/servingruntimes/vllm-runtime",
        "/apis/serving.kserve.io/v1alpha1/clusterservingruntimes/vllm-runtime",
    ]


async def test_invalid_graph_update_keeps_the_last_good_graph(fake: FakeKube, start_controller: Any) -> None:
    """An invalid update leaves the file alone and says why in status; fixing it resumes."""
    seed_rag(fake)
    controller = await start_controller()
    output = controller.settings.output
    await eventually(lambda: conditions(fake).get("Ready", {}).get("status") == "True", "Ready=True")
    good = output.read_bytes()

    broken = rag_graph()
    broken["spec"]["nodes"]["root"]["steps"][0]["nodeName"] = "nowhere"  # two targets, one missing
    fake.put(IG, broken)
    ready = await eventually(lambda: conditions(fake)["Ready"].get("reason") == "InvalidGraph"
                             and conditions(fake)["Ready"], "Ready=False InvalidGraph")
    assert ready["status"] == "False"
    assert "nodeName" in ready["message"]
    assert fake.get(IG, NS, GRAPH)["status"]["observedGeneration"] == 2
    assert output.read_bytes() == good

    not_a_graph = rag_graph()
    not_a_graph["spec"]["nodes"]["root"]["routerType"] = "Pipeline"
    fake.put(IG, not_a_graph)
    await eventually(lambda: "routerType" in conditions(fake)["Ready"].get("message", ""), "a shape problem")
    assert conditions(fake)["ServicesResolved"]["status"] == "Unknown", "an unreadable graph names no services"
    assert output.read_bytes() == good

    fixed = rag_graph()
    fixed["metadata"].pop("annotations")  # its templates name the step being renamed
    fixed["spec"]["nodes"]["root"]["steps"][0]["name"] = "embed-question"
    fake.put(IG, fixed)
    await eventually(lambda: b"embed-question" in output.read_bytes(), "the fixed graph")
    await eventually(lambda: conditions(fake)["Ready"]["status"] == "True", "Ready=True again")


async def test_status_patches_carry_only_changes_and_keep_other_conditions(
        fake: FakeKube, start_controller: Any) -> None:
    """A generation bump patches observedGeneration alone; conditions of other owners survive."""
    for name in RAG_SERVICES:
        fake.put(ISVC, isvc(name, f"http://{name}"))
    graph = rag_graph()
    graph["status"] = {"conditions": [{"type": "Stopped", "status": "False",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    fake.put(IG, graph)
    await start_controller(url="http://graph")
    await eventually(lambda: "Ready" in conditions(fake), "our conditions")
    assert [c["type"] for c in fake.get(IG, NS, GRAPH)["status"]["conditions"]] == [
        "Stopped", "Ready", "ServicesResolved"]
    first = fake.status_patches[0].body["status"]
    assert set(first) == {"conditions", "observedGeneration", "url"}
    assert fake.status_patches[0].content_type == "application/merge-patch+json"

    count = len(fake.status_patches)
    updated = rag_graph()
    updated["spec"]["routerTimeouts"]["serviceClient"] = 60
    fake.put(IG, updated)
    await eventually(lambda: len(fake.status_patches) > count, "a patch for generation 2")
    assert fake.status_patches[-1].body == {"status": {"observedGeneration": 2}}


async def test_failed_status_patch_is_retried(fake: FakeKube, start_controller: Any) -> None:
    """A status patch the API server refuses is tried again after a backoff until it lands."""
    fake.put(IG, rag_graph())
    fake.fail(2, status=500, path_contains="/status")
    await start_controller()
    await eventually(lambda: "Ready" in conditions(fake), "the status after two refusals")
    refused = [r for r in fake.requests if r.path.endswith("/status")]
    assert len(refused) == 3 and len(fake.status_patches) == 1


async def test_two_sidecars_do_not_fight_over_status(fake: FakeKube, start_controller: Any,
                                                     tmp_path: Path) -> None:
    """Two sidecars of one graph agree on the status: after it settles, neither patches again."""
    fake.put(ISVC, isvc("bge-embedder", "http://bge"))
    fake.put(IG, rag_graph())
    await start_controller(url="http://graph", output=tmp_path / "a" / "graph.json")
    await start_controller(url="http://graph", output=tmp_path / "b" / "graph.json")
    await eventually(lambda: "ServicesResolved" in conditions(fake), "status")
    await asyncio.sleep(0.3)
    settled = len(fake.status_patches)
    assert settled <= 2
    # A change both see: each may patch once, then quiet again.
    fake.put(ISVC, isvc("vector-search", "http://search"))
    await eventually(lambda: "vector-search" not in conditions(fake)["ServicesResolved"]["reason"],
                     "status without vector-search")
    await asyncio.sleep(0.4)
    after = len(fake.status_patches)
    assert after - settled <= 2
    await asyncio.sleep(0.4)
    assert len(fake.status_patches) == after, "the sidecars kept patching each other"


async def test_dropped_watch_resumes_from_the_last_resource_version(
        fake: FakeKube, start_controller: Any) -> None:
    """A cut watch reconnects from where it was, without a relist, and misses nothing."""
    seed_rag(fake)
    controller = await start_controller()
    output = controller.settings.output
    await eventually(output.exists, "the graph file")
    await eventually(lambda: fake.watch_count(ISVC) == 1, "a live InferenceService watch")
    lists = fake.lists(ISVC)
    held = controller.services.resource_version

    fake.drop_watches()
    fake.set_status(ISVC, NS, "qwen-llm", {"address": {"url": "http://qwen-2"}})  # while disconnected
    await eventually(lambda: step_urls(output)["qwen-llm"] == v1("http://qwen-2", "qwen-llm"), "the change")
    assert fake.lists(ISVC) == lists, "a dropped connection must not cost a relist"
    resumed = [r for r in fake.requests if r.path.endswith("/" + ISVC) and r.query.get("watch") == "true"]
    assert resumed[-1].query["resourceVersion"] == held
    assert resumed[-1].query["allowWatchBookmarks"] == "true"


async def test_bookmarks_move_the_resource_version(fake: FakeKube, start_controller: Any) -> None:
    """A BOOKMARK moves the watch on: the next watch starts from the bookmark's version."""
    fake.put(IG, rag_graph())
    controller = await start_controller()
    await eventually(lambda: fake.watch_count(ISVC) == 1, "a live InferenceService watch")
    fake.bookmark()
    marked = str(fake.rv)
    await eventually(lambda: controller.services.resource_version == marked, "the bookmark's version")
    fake.drop_watches()
    await eventually(lambda: fake.watch_count(ISVC) == 1, "the watch back")
    resumed = [r for r in fake.requests if r.path.endswith("/" + ISVC) and r.query.get("watch") == "true"]
    assert resumed[-1].query["resourceVersion"] == marked


async def test_410_gone_relists(fake: FakeKube, start_controller: Any) -> None:
    """An ERROR event with 410 makes the watcher list again and carry on from the new version."""
    seed_rag(fake)
    controller = await start_controller()
    output = controller.settings.output
    await eventually(output.exists, "the graph file")
    await eventually(lambda: fake.watch_count(ISVC) == 1 and fake.watch_count(IG) == 1, "live watches")
    lists = fake.lists(ISVC), fake.lists(IG)

    fake.expire_watches()
    await eventually(lambda: fake.lists(ISVC) > lists[0] and fake.lists(IG) > lists[1], "relists")
    fake.set_status(ISVC, NS, "bge-embedder", {"address": {"url": "http://bge-2"}})
    await eventually(lambda: step_urls(output)["bge-embedder"] == v1("http://bge-2", "bge-embedder"),
                     "a change after the relist")


async def test_periodic_resync_catches_a_missed_event(fake: FakeKube, start_controller: Any) -> None:
    """A change whose event never arrived is found by the next periodic relist."""
    seed_rag(fake)
    controller = await start_controller(watch=dataclasses.replace(FAST, resync_seconds=0.6))
    output = controller.settings.output
    await eventually(output.exists, "the graph file")
    fake.set_status(ISVC, NS, "qwen-llm", {"address": {"url": "http://qwen-2"}}, silent=True)
    await asyncio.sleep(0.1)
    assert step_urls(output)["qwen-llm"] == v1("http://qwen-llm", "qwen-llm"), "no event, no change yet"
    await eventually(lambda: step_urls(output)["qwen-llm"] == v1("http://qwen-2", "qwen-llm"),
                     "the resync to find the change")


async def test_unknown_event_types_are_skipped(fake: FakeKube, start_controller: Any) -> None:
    """An event type the watcher does not know is logged and skipped; the watch goes on."""
    fake.put(IG, rag_graph())
    controller = await start_controller()
    await eventually(lambda: fake.watch_count(ISVC) == 1 and fake.watch_count(IG) == 1, "live watches")
    watches = fake.watch_requests
    fake.inject({"type": "SURPRISE", "object": {"metadata": {"name": "x", "resourceVersion": "1"}}})
    fake.put(ISVC, isvc("qwen-llm", "http://qwen"))
    await eventually(lambda: "qwen-llm" in controller.services.objects, "the next event")
    assert "x" not in controller.services.objects
    assert fake.watch_requests == watches, "the watch was not restarted"


async def test_api_server_restart_is_survived(fake: FakeKube, start_controller: Any) -> None:
    """The API server going away and coming back with a new watch cache: back off, relist, catch up."""
    seed_rag(fake)
    controller = await start_controller()
    output = controller.settings.output
    await eventually(output.exists, "the graph file")
    lists = fake.lists(ISVC)

    await fake.restart(0.4, while_down=lambda: fake.set_status(ISVC, NS, "vector-search",
                                                               {"address": {"url": "http://search-2"}}))
    await eventually(lambda: step_urls(output)["vector-search"] == v1("http://search-2", "vector-search"),
                     "the change made while the API server was down")
    assert fake.lists(ISVC) > lists
    await eventually(lambda: fake.watch_count(ISVC) == 1 and fake.watch_count(IG) == 1, "both watches back")


async def test_api_errors_back_off_before_retrying(fake: FakeKube, start_controller: Any) -> None:
    """Error answers are retried after growing, jittered delays, then the watch recovers."""
    fake.put(IG, rag_graph())
    controller = await start_controller()
    await eventually(lambda: fake.watch_count(ISVC) == 1, "a live InferenceService watch")
    fake.fail(4, status=500, path_contains="/" + ISVC)
    mark = len(fake.requests)
    started = time.monotonic()
    fake.drop_watches()
    await eventually(lambda: fake.watch_count(ISVC) == 1, "the watch back after the errors")
    elapsed = time.monotonic() - started
    # Delays of at least 0.025, 0.05, 0.1 and 0.2 s (half of each step is fixed, half jitter).
    assert elapsed >= 0.37
    tries = [r for r in fake.requests[mark:] if r.path.endswith("/" + ISVC)]
    assert len(tries) == 5, "four refused, then the one that worked"
    assert all(r.query.get("watch") == "true" for r in tries), "errors resume the watch; they do not relist"
    fake.put(ISVC, isvc("qwen-llm", "http://qwen"))
    await eventually(lambda: "qwen-llm" in controller.services.objects, "events after recovery")


async def test_kubeconfig_comes_from_the_environment(fake: FakeKube, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With no --kubeconfig, $KUBECONFIG is where the client finds the API server."""
    monkeypatch.setenv("KUBECONFIG", str(fake.write_kubeconfig(tmp_path / "env-kubeconfig", NS)))
    fake.put(ISVC, isvc("qwen-llm", "http://qwen"))
    kube = KubeClient.from_environment(None, request_timeout=5, connect_timeout=1)
    try:
        listed = await asyncio.to_thread(kube.list, INFERENCE_SERVICES, NS)
    finally:
        kube.close()
    assert [o["metadata"]["name"] for o in listed.items] == ["qwen-llm"]
    assert listed.resource_version == str(fake.rv)


async def test_router_takes_the_new_graph_while_requests_are_in_flight(
        fake: FakeKube, start_controller: Any, start_service: Any, tmp_path: Path) -> None:
    """The router turns ready with the first graph, and a new URL serves new requests while old ones finish."""
    release = asyncio.Event()

    async def slow_old(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.json_response({"served_by": "old"})

    old = await start_service({"/v1/models/qwen-llm:predict": slow_old})
    new = await start_service({"/v1/models/qwen-llm:predict": (200, {"served_by": "new"})})
    graph = rag_graph()
    graph["metadata"].pop("annotations")  # its templates name steps this graph leaves out
    graph["spec"]["nodes"]["root"]["steps"] = [{"name": "generate", "serviceName": "qwen-llm"}]
    fake.put(IG, graph)
    fake.put(ISVC, isvc("qwen-llm", old.base))
    output = tmp_path / "shared" / "graph.json"

    reloader = GraphFileReloader(output, interval=0.05)
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0)
    client = UpstreamClient(settings.upstream)
    await client.start()
    router = Router(settings, reloader.load_initial(), client)
    server = await start_server(router, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.port}"
    reloading = asyncio.create_task(reloader.run(router))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/readyz") as resp:
                assert resp.status == 503, "no graph yet"
            await start_controller(output=output)

            async def ready() -> bool:
                async with session.get(base + "/readyz") as resp:
                    return resp.status == 200

            deadline = time.monotonic() + 6
            while not await ready():
                assert time.monotonic() < deadline, "the router never became ready"
                await asyncio.sleep(0.05)

            async def ask() -> Any:
                async with session.post(base + "/", json={"q": "hi"}) as resp:
                    assert resp.status == 200
                    return await resp.json()

            in_flight = asyncio.create_task(ask())
            await eventually(lambda: len(old.received) == 1, "the first request at the old service")
            fake.set_status(ISVC, NS, "qwen-llm", {"address": {"url": new.base}})
            await eventually(lambda: reloader.swaps >= 2, "the new graph in the router")
            assert await asyncio.wait_for(ask(), 5) == {"served_by": "new"}
            assert not in_flight.done()
            release.set()
            assert await asyncio.wait_for(in_flight, 5) == {"served_by": "old"}
            assert len(old.received) == 1 and len(new.received) == 1
    finally:
        release.set()
        reloading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloading
        await server.shutdown(2)
        await client.close()


async def test_controller_command_end_to_end(fake: FakeKube, tmp_path: Path) -> None:
    """`graph-router controller ...` writes the file, reports the --url, and exits 0 on SIGTERM."""
    seed_rag(fake)
    output = tmp_path / "out" / "graph.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "controller", "--namespace", NS, "--name", GRAPH,
        "--output", str(output), "--kubeconfig", str(fake.write_kubeconfig(tmp_path / "kubeconfig", NS)),
        env={**os.environ, "GRAPH_URL": "http://from-env"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await eventually(output.exists, "the graph file", timeout=15)
        await eventually(lambda: (fake.get(IG, NS, GRAPH).get("status") or {}).get("url") == "http://from-env",
                         "status.url from $GRAPH_URL")
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, out.decode()
        assert b"wrote InferenceGraph models/rag-pipeline" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 5)


def test_fake_merge_patch_follows_rfc7386() -> None:
    """The fake's merge patch replaces lists, merges objects and deletes on null, as the API server does."""
    from fake_kube import merge_patch

    target = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}
    patch = {"b": {"c": None, "e": 4}, "l": [3], "a": None}
    assert merge_patch(copy.deepcopy(target), patch) == {"b": {"d": 3, "e": 4}, "l": [3]}
