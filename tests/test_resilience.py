"""Faults and overload: circuit breaking, retries within a deadline, load shedding, cancellation, big answers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web
from conftest import echo

from graph_router.extensions import ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph
from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamSettings


def one_step(url: str) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "s", "serviceUrl": url}]}}}


async def serve_with_extensions(start_router: Any, url: str, extensions: dict[str, Any], **kw: Any) -> Any:
    """The real router serving a one-step graph that carries an extensions annotation."""
    text = yaml.safe_dump({"kind": "InferenceGraph",
                           "metadata": {"name": "g", "annotations": {ANNOTATION: yaml.safe_dump(extensions)}},
                           "spec": one_step(url)})
    running = await start_router(one_step(url), **kw)
    running.router.swap(compile_graph(load_graph_text(text, "g.yaml")))
    return running


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_circuit_opens_then_recovers(start_service: Any, start_router: Any) -> None:
    """After repeated failures calls fail fast with 503 naming the service; a probe after the cooldown closes it."""
    port = closed_port()
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              upstream=UpstreamSettings(breaker_failures=3, breaker_cooldown=0.5))
    router = await start_router(one_step(f"http://127.0.0.1:{port}/m"), settings=settings)
    statuses = [(await router.post({}))[0] for _ in range(3)]
    assert statuses == [500, 500, 500]
    status, body, _ = await router.post({})
    assert status == 503
    assert f"127.0.0.1:{port}" in orjson.loads(body)["cause"]
    assert "circuit open" in orjson.loads(body)["cause"]
    app = web.Application()
    app.router.add_post("/m", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.sleep(0.6)
        assert (await router.post({"back": 1}))[:2] == (200, b'{"back":1}')
        assert (await router.post({"again": 1}))[0] == 200
    finally:
        await runner.cleanup()


async def test_retries_with_backoff_until_success(start_service: Any, start_router: Any) -> None:
    """A step declared safe to retry is called again on 503, and its eventual success is the answer."""
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            return web.json_response({"busy": calls}, status=503)
        return web.json_response({"ok": calls})

    svc = await start_service({"/m": flaky})
    policy = {"steps": {"root/s": {"policy": {"retries": 2, "backoffSeconds": 0.01}}}}
    router = await serve_with_extensions(start_router, svc.url("/m"), policy)
    status, body, _ = await router.post({})
    assert (status, orjson.loads(body)) == (200, {"ok": 3})
    assert len(svc.received) == 3


async def test_without_retries_the_failure_is_passed_on(start_service: Any, start_router: Any) -> None:
    """Without a policy a 503 answer is the step's answer, called once (KServe's behaviour)."""
    svc = await start_service({"/m": (503, {"busy": 1})})
    router = await start_router(one_step(svc.url("/m")))
    assert (await router.post({}))[0] == 503
    assert len(svc.received) == 1


async def test_retries_never_outlive_the_deadline(start_service: Any, start_router: Any) -> None:
    """Retries stop at the request's deadline: the client gets 504 on time, not after every retry."""
    svc = await start_service({"/m": (503, {"busy": 1})})
    ext = {"deadlineSeconds": 0.5, "steps": {"root/s": {"policy": {"retries": 10, "backoffSeconds": 0.2,
                                                                       "maxBackoffSeconds": 0.4}}}}
    no_breaker = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                                upstream=UpstreamSettings(breaker_failures=0))  # the breaker would end it first
    router = await serve_with_extensions(start_router, svc.url("/m"), ext, settings=no_breaker)
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body, _ = await router.post({})
    assert status == 504
    assert "deadline" in orjson.loads(body)["cause"]
    assert loop.time() - started < 0.9


async def test_deadline_cuts_a_hanging_step(start_service: Any, start_router: Any) -> None:
    """A step that hangs is cut at the deadline with a 504 JSON error."""

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    svc = await start_service({"/m": hang})
    router = await serve_with_extensions(start_router, svc.url("/m"), {"deadlineSeconds": 0.3})
    status, body, _ = await router.post({})
    assert status == 504
    assert orjson.loads(body)["error"] == "Failed to process request"


async def test_overload_sheds_with_retry_after(start_service: Any, start_router: Any) -> None:
    """Past max_in_flight, requests get 503 with Retry-After at once while the others finish."""

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)
        return web.json_response({"slow": True})

    svc = await start_service({"/m": slow})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, max_in_flight=2)
    router = await start_router(one_step(svc.url("/m")), settings=settings)
    first = [asyncio.create_task(router.post({})) for _ in range(2)]
    await asyncio.sleep(0.1)
    status, body, headers = await router.post({})
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert "in flight" in orjson.loads(body)["cause"]
    assert [(await t)[0] for t in first] == [200, 200]


def slow_recorder(seen: dict[str, bool], key: str) -> Any:
    """A 1 s handler that records whether its client had closed the connection when it ended."""

    async def slow(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(1.0)
        finally:
            transport = request.transport
            seen[key] = transport is None or transport.is_closing()
        return web.json_response({})

    return slow


async def leave_after(url: str, seconds: float) -> None:
    """POST and hang up after ``seconds`` without waiting for the answer."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session:
        try:
            await session.post(url, data=b"{}")
        except TimeoutError:
            pass


async def wait_for_keys(seen: dict[str, bool], *keys: str) -> None:
    """Until the handlers have recorded ``keys`` (at most 2 s)."""
    for _ in range(40):
        if all(k in seen for k in keys):
            return
        await asyncio.sleep(0.05)


async def test_client_disconnect_cancels_step_call(start_service: Any, start_router: Any) -> None:
    """A client that leaves cancels the step call it started: the service sees its connection close."""
    seen: dict[str, bool] = {}
    svc = await start_service({"/m": slow_recorder(seen, "closed")})
    router = await start_router(one_step(svc.url("/m")))
    await leave_after(router.url, 0.2)
    await wait_for_keys(seen, "closed")
    assert seen.get("closed") is True


async def test_ensemble_member_failure_cancels_the_others(start_service: Any, start_router: Any) -> None:
    """One member fails at once: the node fails at once, and the slow member's call is cut off."""
    seen: dict[str, bool] = {}
    svc = await start_service({"/bad": (200, b"[1]"), "/slow": slow_recorder(seen, "slow")})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "bad", "serviceUrl": svc.url("/bad")}, {"name": "slow", "serviceUrl": svc.url("/slow")},
    ]}}})
    started = asyncio.get_running_loop().time()
    status, body, _ = await router.post({})
    elapsed = asyncio.get_running_loop().time() - started
    assert status == 500 and "bad" in orjson.loads(body)["cause"]
    assert elapsed < 0.8, "the node waited for the slow member"
    await wait_for_keys(seen, "slow")
    assert seen.get("slow") is True


async def test_client_disconnect_cancels_every_ensemble_member(start_service: Any, start_router: Any) -> None:
    """A client that leaves an Ensemble cancels all of its members' calls, not only the first."""
    seen: dict[str, bool] = {}
    svc = await start_service({"/a": slow_recorder(seen, "a"), "/b": slow_recorder(seen, "b")})
    router = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "a", "serviceUrl": svc.url("/a")}, {"name": "b", "serviceUrl": svc.url("/b")},
    ]}}})
    await leave_after(router.url, 0.2)
    await wait_for_keys(seen, "a", "b")
    assert seen == {"a": True, "b": True}


async def test_ten_mib_answer_and_over_limit(start_service: Any, start_router: Any) -> None:
    """A 10 MiB answer passes through whole; an answer over max_response_bytes is a 502 JSON error."""
    big = orjson.dumps({"blob": "x" * (10 * 1024 * 1024)})
    svc = await start_service({"/m": (200, big)})
    router = await start_router(one_step(svc.url("/m")))
    status, body, _ = await router.post({})
    assert status == 200 and body == big
    small = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                           upstream=UpstreamSettings(max_response_bytes=1024 * 1024))
    limited = await start_router(one_step(svc.url("/m")), settings=small)
    status, body, _ = await limited.post({})
    assert status == 502
    assert "limit" in orjson.loads(body)["cause"]


async def test_garbage_and_non_json_answers(start_service: Any, start_router: Any) -> None:
    """A service answering garbage bytes fails the step cleanly; non-JSON where JSON is needed is a 500."""

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        router = await start_router(one_step(f"http://127.0.0.1:{port}/m"))
        status, body, _ = await router.post({})
        assert status == 500
        assert "not valid HTTP" in orjson.loads(body)["cause"]
    text = await start_service({"/t": (200, b"plain words")})
    ens = await start_router({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"serviceUrl": text.url("/t")}]}}})
    status, body, _ = await ens.post({})
    assert status == 500
    assert "JSON object" in orjson.loads(body)["cause"]
