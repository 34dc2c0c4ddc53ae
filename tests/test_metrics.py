"""/metrics: every family's labels and counts after known requests, promtool, and --workers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from conftest import echo
from metrics_scrape import scrape

from graph_router import compiled_modules
from graph_router.reload import GraphFileReloader
from graph_router.telemetry import Telemetry, WorkerGroup


def seq(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": list(steps)}}}


def slow(seconds: float) -> Any:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(seconds)
        return web.json_response({"slept": seconds})

    return handler


def server_timing(headers: Any) -> dict[str, float]:
    """``Server-Timing: total;dur=1.2, router;dur=0.3`` as {"total": 1.2, "router": 0.3}."""
    out = {}
    for part in headers["Server-Timing"].split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


async def test_request_and_step_series_after_known_requests(start_service: Any, start_router: Any) -> None:
    """Three good requests: each graph and step series counts exactly three, labelled by name or index."""
    svc = await start_service({"/a": echo, "/b": echo})
    router = await start_router(seq({"serviceUrl": svc.url("/a")},
                                    {"name": "second", "serviceUrl": svc.url("/b"), "data": "$response"}))
    for _ in range(3):
        assert (await router.post({"x": 1}))[0] == 200
    m = await scrape(router.url)
    assert m.value("graph_router_requests_total", graph="test", code="200") == 3
    assert m.labelsets("graph_router_requests_total") == [{"graph": "test", "code": "200"}]
    assert m.value("graph_router_request_duration_seconds_count", graph="test") == 3
    assert m.value("graph_router_request_duration_seconds_bucket", graph="test", le="+Inf") == 3
    assert m.value("graph_router_overhead_seconds_count", graph="test") == 3
    assert m.value("graph_router_in_flight_requests", graph="test") == 0
    for step, path in (("0", "/a"), ("second", "/b")):
        assert m.value("graph_router_step_requests_total", graph="test", node="root", step=step,
                       service=svc.url(path), code="200") == 3
        assert m.value("graph_router_step_duration_seconds_count", graph="test", node="root", step=step) == 3
    assert len(m.labelsets("graph_router_step_requests_total")) == 2
    compiled = "true" if compiled_modules() else "false"
    assert m.value("graph_router_build_info", version="0.1.0", python=sys.version.split()[0], compiled=compiled) == 1
    assert m.value("graph_router_scrape_workers") == 1


async def test_step_outcomes_are_labelled_by_status_or_error(start_service: Any, start_router: Any) -> None:
    """A 503 answer is code 503; a refused connection is code error; the graph request is code 500."""
    svc = await start_service({"/down": (503, {"error": "overloaded"})})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/m"
    router = await start_router({"nodes": {
        "root": {"routerType": "Switch", "steps": [
            {"name": "busy", "condition": "busy", "serviceUrl": svc.url("/down")},
            {"name": "gone", "condition": "gone", "serviceUrl": dead}]}}})
    assert (await router.post({"busy": 1}))[0] == 503
    assert (await router.post({"gone": 1}))[0] == 500
    assert (await router.post({"none": 1}))[0] == 404
    m = await scrape(router.url)
    assert m.value("graph_router_step_requests_total", graph="test", node="root", step="busy",
                   service=svc.url("/down"), code="503") == 1
    assert m.value("graph_router_step_requests_total", graph="test", node="root", step="gone",
                   service=dead, code="error") == 1
    for code in ("503", "500", "404"):
        assert m.value("graph_router_requests_total", graph="test", code=code) == 1


async def test_node_steps_are_series_too(start_service: Any, start_router: Any) -> None:
    """A step that runs a node is counted with service ``node:<name>`` and the node's status."""
    svc = await start_service({"/m": echo})
    router = await start_router({"nodes": {
        "root": {"routerType": "Sequence", "steps": [{"name": "inner", "nodeName": "child"}]},
        "child": {"routerType": "Sequence", "steps": [{"serviceUrl": svc.url("/m")}]}}})
    assert (await router.post({"x": 1}))[0] == 200
    m = await scrape(router.url)
    assert m.value("graph_router_step_requests_total", graph="test", node="root", step="inner",
                   service="node:child", code="200") == 1
    assert m.value("graph_router_step_requests_total", graph="test", node="child", step="0",
                   service=svc.url("/m"), code="200") == 1


async def test_in_flight_counts_requests_being_answered(start_service: Any, start_router: Any) -> None:
    """While a slow request runs, in-flight is 1; after its answer, 0."""
    svc = await start_service({"/slow": slow(0.5)})
    router = await start_router(seq({"serviceUrl": svc.url("/slow")}))
    pending = asyncio.create_task(router.post({"x": 1}))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if svc.received:
            break
    assert (await scrape(router.url)).value("graph_router_in_flight_requests", graph="test") == 1
    assert (await pending)[0] == 200
    assert (await scrape(router.url)).value("graph_router_in_flight_requests", graph="test") == 0


async def test_overhead_excludes_time_waiting_on_steps(start_service: Any, start_router: Any) -> None:
    """A 0.3 s step: the request takes at least 0.3 s, the router's own share stays far below it."""
    svc = await start_service({"/slow": slow(0.3)})
    router = await start_router(seq({"serviceUrl": svc.url("/slow")}))
    status, _, headers = await router.post({"x": 1})
    assert status == 200
    timing = server_timing(headers)
    assert timing["total"] >= 300
    assert 0 <= timing["router"] < 50
    m = await scrape(router.url)
    assert (m.value("graph_router_request_duration_seconds_sum", graph="test") or 0) >= 0.3
    assert (m.value("graph_router_overhead_seconds_sum", graph="test") or 1) < 0.05
    assert m.value("graph_router_step_duration_seconds_bucket", graph="test", node="root", step="0",
                   le="0.25") == 0
    assert m.value("graph_router_step_duration_seconds_bucket", graph="test", node="root", step="0",
                   le="0.5") == 1


async def test_overlapping_ensemble_waits_count_once(start_service: Any, start_router: Any) -> None:
    """Two concurrent 0.3 s members: the waiting time is their union, so the router's own time is not negative."""
    svc = await start_service({"/a": slow(0.3), "/b": slow(0.3)})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "a", "serviceUrl": svc.url("/a")}, {"name": "b", "serviceUrl": svc.url("/b")}]}}})
    status, _, headers = await router.post({"x": 1})
    assert status == 200
    timing = server_timing(headers)
    assert 300 <= timing["total"] < 550
    assert 0 <= timing["router"] < 50


async def test_server_timing_on_error_answers(start_router: Any) -> None:
    """Failed graph requests also carry Server-Timing."""
    router = await start_router({"nodes": {"root": {"routerType": "Switch", "steps": [
        {"condition": "never", "serviceUrl": "http://127.0.0.1:9/m"}]}}})
    status, _, headers = await router.post({"x": 1})
    assert status == 404
    assert set(server_timing(headers)) == {"total", "router"}


async def test_reloads_and_rejected_files_are_counted(start_service: Any, start_router: Any, tmp_path: Path) -> None:
    """A new valid graph file counts one reload; an invalid one counts one failure and keeps serving."""
    svc = await start_service({"/m": echo})
    router = await start_router(seq({"serviceUrl": svc.url("/m")}))
    path = tmp_path / "graph.json"
    path.write_bytes(orjson.dumps(seq({"serviceUrl": svc.url("/m")})))
    reloader = GraphFileReloader(path, name="test", interval=0.05)
    reloader.load_initial()
    task = asyncio.create_task(reloader.run(router.router))
    try:
        path.write_bytes(orjson.dumps(seq({"name": "renamed", "serviceUrl": svc.url("/m")})))
        await eventually(lambda: reloader.swaps == 1)
        path.write_bytes(b"{not a graph")
        # rejected is counted in the polling thread, the metric once the coroutine resumes: wait
        # for both, or the task may be cancelled between the two.
        await eventually(lambda: reloader.rejected == 1 and router.router.telemetry.metrics.reload_failures == 1)
    finally:
        task.cancel()
    assert (await router.post({"x": 1}))[0] == 200
    m = await scrape(router.url)
    assert m.value("graph_router_graph_reloads_total") == 1
    assert m.value("graph_router_graph_reload_failures_total") == 1
    # The reloaded plan's step is counted under its new name; the graph's counters continued.
    assert m.value("graph_router_step_requests_total", graph="test", node="root", step="renamed",
                   service=svc.url("/m"), code="200") == 1


async def test_post_to_metrics_path_runs_the_graph(start_service: Any, start_router: Any) -> None:
    """Only GET (and HEAD) /metrics is the scrape: a POST there runs the graph, as KServe would."""
    svc = await start_service({"/m": echo})
    router = await start_router(seq({"serviceUrl": svc.url("/m")}))
    status, body, _ = await router.post({"x": 1}, path="/metrics")
    assert (status, orjson.loads(body)) == (200, {"x": 1})
    assert len(svc.received) == 1


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool from Debian's prometheus package, installed here when missing."""
    found = shutil.which("promtool")
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "prometheus"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            result = subprocess.run(install, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"promtool is missing and `apt-get install prometheus` failed: {result.stderr[-300:]}")
        found = shutil.which("promtool")
        if found is None:
            pytest.skip("the prometheus package installed no promtool")
    return found


async def test_promtool_accepts_the_exposition(start_service: Any, start_router: Any, promtool: str) -> None:
    """``promtool check metrics`` finds no problem, with odd step names escaped and every outcome present."""
    svc = await start_service({"/m": echo, "/down": (500, {"error": "x"})})
    router = await start_router({"nodes": {"root": {"routerType": "Switch", "steps": [
        {"name": 'we"ird\\name\nline', "condition": "a", "serviceUrl": svc.url("/m")},
        {"name": "down", "condition": "b", "serviceUrl": svc.url("/down")},
        {"name": "gone", "condition": "c", "serviceUrl": "http://127.0.0.1:9/m"}]}}})
    for body in ({"a": 1}, {"b": 1}, {"c": 1}, {"d": 1}):
        await router.post(body)
    m = await scrape(router.url)
    assert m.value("graph_router_step_requests_total", graph="test", node="root", step='we"ird\\name\nline',
                   service=svc.url("/m"), code="200") == 1
    proc = await asyncio.create_subprocess_exec(promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate(m.text.encode())
    assert proc.returncode == 0, (out + err).decode()
    assert out.strip() == b"" and err.strip() == b"", f"promtool reported lint problems: {(out + err).decode()}"
    for family in ("requests", "request_duration_seconds", "overhead_seconds", "in_flight_requests",
                   "step_requests", "step_duration_seconds", "graph_reloads", "graph_reload_failures",
                   "build_info", "scrape_workers"):
        assert "graph_router_" + family in m.families, family


async def test_sibling_workers_are_added_up(start_service: Any, start_router: Any) -> None:
    """Two routers in one worker group: a scrape of either reports both workers' requests together."""
    svc = await start_service({"/m": echo})
    group = WorkerGroup.new(2)
    spec = seq({"serviceUrl": svc.url("/m")})
    first = await start_router(spec, telemetry=Telemetry(workers=group.worker(0)))
    second = await start_router(spec, telemetry=Telemetry(workers=group.worker(1)))
    for _ in range(2):
        await first.post({"x": 1})
    for _ in range(3):
        await second.post({"x": 1})
    for router in (first, second):
        m = await scrape(router.url)
        assert m.value("graph_router_scrape_workers") == 2
        assert m.value("graph_router_requests_total", graph="test", code="200") == 5
        assert m.value("graph_router_step_duration_seconds_count", graph="test", node="root", step="0") == 5
        assert m.value("graph_router_request_duration_seconds_bucket", graph="test", le="+Inf") == 5


async def test_a_silent_sibling_is_left_out(start_service: Any, start_router: Any) -> None:
    """A worker whose sibling is not there still answers the scrape, with its own series only."""
    svc = await start_service({"/m": echo})
    group = WorkerGroup.new(2)
    router = await start_router(seq({"serviceUrl": svc.url("/m")}), telemetry=Telemetry(workers=group.worker(0)))
    await router.post({"x": 1})
    m = await scrape(router.url)
    assert m.value("graph_router_scrape_workers") == 1
    assert m.value("graph_router_requests_total", graph="test", code="200") == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cli_workers_scrape_reports_all_workers(start_service: Any, tmp_path: Path) -> None:
    """``serve --workers 2``: whichever worker answers /metrics counts every request the pod served."""
    svc = await start_service({"/m": echo})
    graph = tmp_path / "g.json"
    graph.write_bytes(orjson.dumps(seq({"serviceUrl": svc.url("/m")})))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph", str(graph), "--name", "pod", "--host",
        "127.0.0.1", "--port", str(port), "--workers", "2", "--drain-seconds", "0", "--log-level", "WARNING",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        # Until both workers are up, a scrape reports fewer than two.
        workers = 0.0
        for _ in range(300):
            try:
                workers = (await scrape(url)).value("graph_router_scrape_workers") or 0
            except aiohttp.ClientConnectionError:
                pass
            if workers == 2:
                break
            await asyncio.sleep(0.05)
        assert workers == 2, "the two workers never both answered"
        # Each request on its own connection, so SO_REUSEPORT spreads them over the workers.
        for _ in range(40):
            async with aiohttp.ClientSession() as session, session.post(url, json={"x": 1}) as resp:
                assert resp.status == 200
        seen_workers = set()
        for _ in range(6):
            m = await scrape(url)
            assert m.value("graph_router_requests_total", graph="pod", code="200") == 40
            seen_workers.add(m.value("graph_router_scrape_workers"))
        assert seen_workers == {2}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def eventually(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.02)

