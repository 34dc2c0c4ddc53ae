"""``serve --graph FILE --reload``: the router follows the graph file the controller writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from graph_router.reload import GraphFileReloader
from graph_router.server import Router
from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamClient


def graph(url: str, name: str = "g") -> bytes:
    return orjson.dumps({"apiVersion": "serving.kserve.io/v1alpha1", "kind": "InferenceGraph",
                        "metadata": {"name": name},
                        "spec": {"nodes": {"root": {"routerType": "Sequence",
                                                    "steps": [{"serviceName": "m", "serviceUrl": url}]}}}})


def write(path: Path, content: bytes) -> None:
    """As the controller does: a complete temporary file renamed over the target."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def url_of(router: Router) -> str | None:
    plan = router.plan
    return plan.root.steps[0].url if plan is not None else None


async def eventually(check: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    client = UpstreamClient(ServerSettings().upstream)
    await client.start()
    yield Router(ServerSettings(), None, client)
    await client.close()


@pytest.fixture
async def follow(router: Router) -> AsyncIterator[Callable[[GraphFileReloader], None]]:
    """Run a reloader against ``router`` for the test's duration."""
    tasks: list[asyncio.Task[None]] = []

    def start(reloader: GraphFileReloader) -> None:
        plan = reloader.load_initial()
        if plan is not None:
            router.swap(plan)
        tasks.append(asyncio.create_task(reloader.run(router)))

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_new_valid_file_is_swapped_in(tmp_path: Path, router: Router, follow: Any) -> None:
    """Each new valid content becomes the router's plan; rewriting the same content swaps nothing."""
    path = tmp_path / "graph.json"
    write(path, graph("http://one/"))
    reloader = GraphFileReloader(path, interval=0.02)
    follow(reloader)
    assert url_of(router) == "http://one/"
    write(path, graph("http://two/"))
    await eventually(lambda: url_of(router) == "http://two/", "the second graph")
    swaps = reloader.swaps
    write(path, graph("http://two/"))  # new inode, same bytes
    await asyncio.sleep(0.15)
    assert reloader.swaps == swaps


async def test_invalid_file_keeps_the_old_graph(tmp_path: Path, router: Router, follow: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Content that does not compile is logged once at ERROR and the old plan keeps serving."""
    path = tmp_path / "graph.json"
    write(path, graph("http://good/"))
    reloader = GraphFileReloader(path, interval=0.02)
    follow(reloader)
    old_plan = router.plan
    with caplog.at_level(logging.ERROR, logger="graph_router.reload"):
        write(path, b'{"spec": {"nodes": {"leaf": {"routerType": "Sequence", "steps": []}}}}')
        await eventually(lambda: reloader.rejected == 1, "the rejection")
        await asyncio.sleep(0.1)
    assert router.plan is old_plan
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeping the current graph" in errors[0].getMessage()
    write(path, b"{not json")
    await eventually(lambda: reloader.rejected == 2, "the second rejection")
    assert router.plan is old_plan
    write(path, graph("http://fixed/"))
    await eventually(lambda: url_of(router) == "http://fixed/", "the fixed graph")


async def test_missing_file_means_not_ready_until_it_appears(tmp_path: Path, router: Router,
                                                             follow: Any) -> None:
    """No file at start: no plan; the first valid file becomes the plan; removing the file keeps it."""
    path = tmp_path / "graph.json"
    follow(GraphFileReloader(path, interval=0.02))
    assert router.plan is None
    write(path, graph("http://first/"))
    await eventually(lambda: router.plan is not None, "the first graph")
    path.unlink()
    await asyncio.sleep(0.1)
    assert url_of(router) == "http://first/"


async def test_configmap_style_symlink_swap_is_seen(tmp_path: Path, router: Router, follow: Any) -> None:
    """A ConfigMap volume swaps a ``..data`` symlink; the file's path never changes but its target does."""
    for version, url in (("..v1", "http://v1/"), ("..v2", "http://v2/")):
        (tmp_path / version).mkdir()
        (tmp_path / version / "graph.json").write_bytes(graph(url))
    (tmp_path / "..data").symlink_to("..v1")
    (tmp_path / "graph.json").symlink_to("..data/graph.json")
    follow(GraphFileReloader(tmp_path / "graph.json", interval=0.02))
    assert url_of(router) == "http://v1/"
    (tmp_path / "..data_tmp").symlink_to("..v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    await eventually(lambda: url_of(router) == "http://v2/", "the swapped ConfigMap")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_reload_command_end_to_end(tmp_path: Path) -> None:
    """`graph-router serve --graph FILE --reload`: 503 until the file is valid, 200 after, clean exit on SIGTERM."""
    path = tmp_path / "graph.json"
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph", str(path), "--reload",
        "--host", "127.0.0.1", "--port", str(port), "--drain-seconds", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as session:

            async def readyz() -> int | None:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status
                except aiohttp.ClientConnectionError:
                    return None

            deadline = time.monotonic() + 15
            while (status := await readyz()) is None:
                assert proc.returncode is None, "the server exited"
                assert time.monotonic() < deadline, "the server never listened"
                await asyncio.sleep(0.05)
            assert status == 503
            write(path, b"nodes: [not, a, graph]")
            await asyncio.sleep(0.8)
            assert await readyz() == 503, "an invalid file does not make the router ready"
            write(path, graph("http://m/"))
            deadline = time.monotonic() + 5
            while await readyz() != 200:
                assert time.monotonic() < deadline, "the valid file never made the router ready"
                await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, out.decode()
        assert b"not a valid graph" in out
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 5)


def test_reload_needs_a_file() -> None:
    """--reload with --graph-json is refused, as an argument error: there is no file to follow."""
    proc = subprocess.run([sys.executable, "-m", "graph_router", "serve", "--graph-json", "{}", "--reload"],
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert b"usage: graph-router serve" in proc.stderr
    assert b"--reload needs a graph file" in proc.stderr
