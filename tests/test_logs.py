"""Logs: one structured line per graph request, step failures at WARNING, never a body."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from conftest import echo, wait_ready

SECRET = "do-not-log-this-payload"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_router(tmp_path: Path, spec: dict[str, Any], requests: list[dict[str, Any]],
                     *args: str) -> list[str]:
    """Serve ``spec`` from the CLI, send ``requests`` (kwargs for session.post), stop it; return its log lines."""
    graph = tmp_path / "graph.json"
    graph.write_bytes(orjson.dumps(spec))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph", str(graph), "--name", "logged", "--host",
        "127.0.0.1", "--port", str(port), "--drain-seconds", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, url)
            for kwargs in requests:
                async with session.post(url, **kwargs) as resp:
                    await resp.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
    return err.decode().splitlines()


def json_lines(lines: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


def spec_for(url: str) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "model", "serviceUrl": url}]}}}


async def test_one_json_line_per_graph_request(start_service: Any, tmp_path: Path) -> None:
    """Each graph request logs exactly one INFO JSON line with graph, status, duration, request and trace ids."""
    svc = await start_service({"/m": echo})
    lines = await run_router(tmp_path, spec_for(svc.url("/m")), [
        {"json": {"x": SECRET}, "headers": {"X-Request-Id": "req-1", "traceparent": TRACEPARENT}},
        {"json": {"x": SECRET}},
        {"json": {"x": SECRET}},
    ])
    records = json_lines(lines)  # every line is one JSON object
    requests = [r for r in records if r["message"] == "graph request"]
    assert len(requests) == 3
    first = requests[0]
    assert first["level"] == "INFO" and first["graph"] == "logged" and first["status"] == 200
    assert first["request_id"] == "req-1"
    assert first["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert first["duration_ms"] >= first["router_ms"] >= 0
    assert first["time"].endswith("Z")
    assert requests[1]["request_id"] is None
    assert all(SECRET not in line for line in lines)


async def test_step_failure_is_one_warning_with_its_cause(start_service: Any, tmp_path: Path) -> None:
    """A refused step call logs a WARNING naming graph, node, step, service and cause; the request line too."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/m"
    records = json_lines(await run_router(tmp_path, spec_for(dead), [{"json": {"x": SECRET}}]))
    [step] = [r for r in records if r["message"] == "step failed"]
    assert step["level"] == "WARNING"
    assert (step["graph"], step["node"], step["step"], step["service"]) == ("logged", "root", "model", dead)
    assert "cannot connect" in step["cause"] or "refused" in step["cause"].lower()
    [request] = [r for r in records if r["message"] == "graph request"]
    assert request["level"] == "WARNING" and request["status"] == 500 and request["cause"]


async def test_non_2xx_step_answer_is_a_warning(start_service: Any, tmp_path: Path) -> None:
    """A service answering 503 logs a WARNING with status 503; its body is not logged."""
    svc = await start_service({"/m": (503, {"error": SECRET})})
    lines = await run_router(tmp_path, spec_for(svc.url("/m")), [{"json": {"x": 1}}])
    [step] = [r for r in json_lines(lines) if r["message"] == "step failed"]
    assert step["status"] == 503
    assert all(SECRET not in line for line in lines)


async def test_warning_level_skips_request_lines(start_service: Any, tmp_path: Path) -> None:
    """At --log-level WARNING good requests log nothing."""
    svc = await start_service({"/m": echo})
    lines = await run_router(tmp_path, spec_for(svc.url("/m")), [{"json": {"x": 1}}] * 3, "--log-level", "WARNING")
    assert not [line for line in lines if "graph request" in line]


async def test_text_format(start_service: Any, tmp_path: Path) -> None:
    """--log-format text writes the same fields as key=value after the message."""
    svc = await start_service({"/m": echo})
    lines = await run_router(tmp_path, spec_for(svc.url("/m")), [{"json": {"x": 1},
                                                                  "headers": {"X-Request-Id": "abc"}}],
                             "--log-format", "text")
    [line] = [line for line in lines if "graph request" in line]
    assert " INFO graph_router." in line
    assert "graph=logged status=200 duration_ms=" in line and "request_id=abc" in line
    assert not line.startswith("{")

