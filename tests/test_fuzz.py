"""Property-based fuzzing: request bodies, headers, raw bytes and graph files never crash the router."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph_router.errors import GraphError
from graph_router.extensions import ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph
from graph_router.server import Router, start_server
from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamClient

GRAPH = """
kind: InferenceGraph
metadata:
  name: fuzz
  annotations:
    %s: |
      steps:
        root/shape: {request: {"q": "{{ $request.question }}", "n": 1}}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - {name: pick, nodeName: pick}
        - {name: shape, serviceUrl: "%s", data: $response}
    pick:
      routerType: Switch
      steps:
        - {serviceUrl: "%s", condition: 'instances.#(kind=="a")'}
        - {serviceUrl: "%s", condition: "question"}
"""


@pytest.fixture(scope="module")
def router_url() -> Iterator[str]:
    """A real router and echo service on loopback, run in a thread so hypothesis can drive it synchronously."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        async def echo(request: web.Request) -> web.Response:
            return web.Response(body=await request.read(), content_type="application/json")

        app = web.Application()
        app.router.add_post("/echo", echo)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/echo"
        plan = compile_graph(load_graph_text(GRAPH % (ANNOTATION, url, url, url), "fuzz.yaml"))
        client = UpstreamClient()
        await client.start()
        settings = ServerSettings(host="127.0.0.1", port=0, max_body_bytes=64 * 1024, propagate_headers="")
        server = await start_server(Router(settings, plan, client), "127.0.0.1", 0)
        holder["url"] = f"127.0.0.1:{server.port}"
        holder["stop"] = stop = asyncio.Event()
        holder["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await server.shutdown(1)
        await client.close()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield holder["url"]
    holder["loop"].call_soon_threadsafe(holder["stop"].set)
    thread.join(5)


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    host, port = url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(orjson.dumps),
    st.fixed_dictionaries({"question": json_values}).map(orjson.dumps),
    st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries({"kind": json_values}), max_size=3)})
    .map(orjson.dumps),
)
header_names = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1,
                       max_size=20)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, headers=st.dictionaries(header_names, header_values, max_size=5))
def test_any_body_and_headers_get_a_meaningful_answer(router_url: str, body: bytes, headers: dict[str, str]) -> None:
    """Whatever the body and headers, the answer is the graph's (200/400/404/500 with KServe's body), never a crash."""
    skip = {"content-length", "transfer-encoding", "host", "connection", "expect", "content-encoding"}
    headers = {k: v for k, v in headers.items() if k.lower() not in skip}
    status, answer = post(router_url, body, headers)
    assert status in (200, 400, 404, 500), (status, answer)
    if status != 200:
        doc = orjson.loads(answer)
        assert set(doc) == {"error", "cause"}
        assert "internal error" not in doc["cause"]
        assert "Traceback" not in doc["cause"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=1, max_size=400))
def test_raw_bytes_never_disturb_the_server(router_url: str, raw: bytes) -> None:
    """Arbitrary bytes on a connection get a 4xx or a close, and the next client is served normally."""
    host, port = router_url.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(3)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    if data.startswith(b"HTTP/1.1 5"):
        raise AssertionError(f"server error for client bytes: {data[:200]!r}")
    status, _ = post(router_url, b'{"question": "still there?"}', {})
    assert status == 200


graph_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12)
    | st.sampled_from(["Sequence", "Switch", "Ensemble", "Splitter", "root", "$response", "http://a/"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["nodes", "root", "routerType", "steps", "serviceUrl", "nodeName", "weight",
                         "condition", "name", "data", "dependency", "spec", "kind", "metadata"]) | st.text(max_size=6),
        children, max_size=5),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(doc=graph_docs)
def test_graph_files_fail_only_with_graph_errors(doc: Any) -> None:
    """Any YAML document either compiles into a plan or raises GraphError with a message; nothing else escapes."""
    text = yaml.safe_dump(doc)
    try:
        compile_graph(load_graph_text(text, "fuzz.yaml"), require_urls=False)
    except GraphError as exc:
        assert str(exc)
