"""Interoperability with real KServe model servers: V1 predict and V2 infer through the router."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from graph_router.extensions import ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
PEER_READY = ROOT / ".venv-kserve" / ".installed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def kserve_base() -> Iterator[str]:
    """A real kserve ModelServer on loopback, run by its own virtualenv (made by `make test`)."""
    if not PEER_READY.exists():
        pytest.skip("the kserve peer venv (.venv-kserve) is missing: `make test` creates it when PyPI is reachable")
    port = free_port()
    proc = subprocess.Popen([str(PEER_PYTHON), str(Path(__file__).parent / "peers" / "kserve_model.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import time
    import urllib.request

    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"kserve ModelServer exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(base + "/v1/models/doubler", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("kserve ModelServer did not become ready in 30 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def test_v1_chain_with_map_predictions(kserve_base: str, start_router: Any) -> None:
    """Two V1 predict calls chained with data: $response and mapPredictionsToInstances, as KServe users do."""
    url = f"{kserve_base}/v1/models/doubler:predict"
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": url}, {"serviceUrl": url, "data": "$response", "mapPredictionsToInstances": True}]}}})
    status, body, headers = await router.post({"instances": [1, 2, 3]})
    assert status == 200
    assert orjson.loads(body) == {"predictions": [4, 8, 12]}
    assert headers["Content-Type"] == "application/json"


async def test_v1_to_v2_with_template_and_outputs_to_inputs(kserve_base: str, start_router: Any) -> None:
    """A V1 answer feeds a V2 infer through a template; V2 outputs feed the next V2 inputs."""
    v1 = f"{kserve_base}/v1/models/doubler:predict"
    v2 = f"{kserve_base}/v2/models/doubler/infer"
    extensions = {"steps": {
        "root/to-v2": {"request": {"inputs": [{"name": "x", "shape": [3], "datatype": "INT64",
                                               "data": "{{ $response.predictions }}"}]}},
        "root/again": {"v2OutputsToInputs": True}}}
    text = yaml.safe_dump({"kind": "InferenceGraph",
                           "metadata": {"name": "interop", "annotations": {ANNOTATION: yaml.safe_dump(extensions)}},
                           "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [
                               {"name": "v1", "serviceUrl": v1},
                               {"name": "to-v2", "serviceUrl": v2, "dependency": "Hard"},
                               {"name": "again", "serviceUrl": v2}]}}}})
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": v1}]}}})
    router.router.swap(compile_graph(load_graph_text(text, "interop.yaml")))
    status, body, _ = await router.post({"instances": [1, 2, 3]})
    assert status == 200
    doc = orjson.loads(body)
    assert doc["model_name"] == "doubler"
    assert doc["outputs"][0]["data"] == [8, 16, 24]


async def test_kserve_error_passes_through_hard_step(kserve_base: str, start_router: Any) -> None:
    """KServe's own 404 for an unknown model stops a Hard step and reaches the client as it is."""
    router = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": f"{kserve_base}/v1/models/nope:predict", "dependency": "Hard"},
        {"serviceUrl": f"{kserve_base}/v1/models/doubler:predict"}]}}})
    status, body, _ = await router.post({"instances": [1]})
    assert status == 404
    assert "nope" in orjson.loads(body)["error"]
    await asyncio.sleep(0)
