"""LLM steps (issue 15): token accounting, time to first token, fallbacks and tenant budgets.

Every service here is a real aiohttp server on loopback answering in the OpenAI style
(as the demo's stand-in does): plain and streamed, with and without ``usage``, one
that fails before its first byte, one that fails after it, one that answers 429.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from conftest import RunningRouter

from graph_router.extensions import ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph
from graph_router.settings import ServerSettings
from graph_router.telemetry import Telemetry
from graph_router.telemetry.logs import JSONFormatter
from graph_router.upstream import UpstreamSettings

NO_BREAKER = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                            upstream=UpstreamSettings(breaker_failures=0))
PIECES = ["Hel", "lo", ", wor", "ld"]
PROMPT_TOKENS = 11


def chunk(delta: dict[str, Any], finish: str | None = None, model: str = "big") -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def stream_bytes(doc: dict[str, Any], pieces: list[str] = PIECES, sep: bytes = b"\n\n") -> bytes:
    """What the stand-in streams for a request: usage only when the request asks (as vLLM)."""
    model = str(doc.get("model", "big"))
    events = [chunk({"role": "assistant", "content": ""}, model=model)]
    events += [chunk({"content": p}, model=model) for p in pieces]
    events.append(chunk({}, "stop", model=model))
    options = doc.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": len(pieces),
                 "total_tokens": PROMPT_TOKENS + len(pieces)}
        events.append({**chunk({}, model=model), "choices": [], "usage": usage})
    return b"".join(b"data: " + orjson.dumps(e) + sep for e in events) + b"data: [DONE]" + sep


def openai_service(log: list[dict[str, Any]], *, piece: int = 13, gap: float = 0.0, die_after: int | None = None,
                   status: int = 200, usage_in_plain: bool = True, sep: bytes = b"\n\n") -> Any:
    """An OpenAI-style chat completions service. Streams are written ``piece`` bytes at a
    time, so that events are split across reads; ``die_after`` bytes in, the connection drops."""

    async def handler(request: web.Request) -> web.StreamResponse:
        doc = await request.json()
        log.append(doc)
        if status != 200:
            return web.json_response({"error": {"message": "busy"}}, status=status)
        if not doc.get("stream"):
            answer: dict[str, Any] = {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": doc.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(PIECES)},
                             "finish_reason": "stop"}]}
            if usage_in_plain:
                answer["usage"] = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 4, "total_tokens": 15}
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        data = stream_bytes(doc, sep=sep)
        for start in range(0, len(data), piece):
            if die_after is not None and start >= die_after:
                assert request.transport is not None
                request.transport.abort()
                return resp
            await resp.write(data[start:start + piece])
            await asyncio.sleep(gap)
        await resp.write_eof()
        return resp

    return handler


async def serve(start_router: Any, url: str, extensions: dict[str, Any] | None = None, **kw: Any) -> RunningRouter:
    """The real router on a one-step graph (step ``llm``) carrying ``extensions``."""
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "llm", "serviceUrl": url}]}}}
    running: RunningRouter = await start_router(spec, **kw)
    text = yaml.safe_dump({"kind": "InferenceGraph",
                           "metadata": {"name": "g", "annotations": {ANNOTATION: yaml.safe_dump(extensions or {})}},
                           "spec": spec})
    running.router.swap(compile_graph(load_graph_text(text, "g.yaml")))
    return running


CHAT = {"model": "big", "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}


def llm_series(running: RunningRouter) -> Any:
    return running.router.telemetry.metrics.llm.steps[("g", "root", "llm")]


async def scrape(running: RunningRouter) -> str:
    async with running.session.get(running.url + "/metrics") as resp:
        return (await resp.read()).decode()


# --- token accounting and timing ---------------------------------------------------------

async def test_plain_answer_tokens_are_counted_exactly(start_service: Any, start_router: Any) -> None:
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log)})
    router = await serve(start_router, svc.url("/v1/chat/completions"))
    for _ in range(3):
        status, _, _ = await router.post(CHAT)
        assert status == 200
    text = await scrape(router)
    assert 'graph_router_llm_tokens_total{graph="g",node="root",step="llm",kind="prompt"} 33' in text
    assert 'graph_router_llm_tokens_total{graph="g",node="root",step="llm",kind="completion"} 12' in text
    assert log[0] == CHAT  # a plain request goes as it came


async def test_a_step_that_is_not_openai_is_not_tallied(start_service: Any, start_router: Any) -> None:
    log: list[dict[str, Any]] = []
    svc = await start_service({"/predict": openai_service(log)})
    router = await serve(start_router, svc.url("/predict"))
    assert router.router.plan is not None and router.router.plan.root.steps[0].llm is None
    await router.post(CHAT)
    assert router.router.telemetry.metrics.llm.steps == {}
    # declared, the same URL is an OpenAI step
    router = await serve(start_router, svc.url("/predict"), {"steps": {"root/llm": {"openai": True}}})
    await router.post(CHAT)
    assert llm_series(router).prompt == PROMPT_TOKENS


async def test_router_asks_for_usage_and_the_client_gets_the_stream_it_would_have_had(
    start_service: Any, start_router: Any
) -> None:
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log)})
    router = await serve(start_router, svc.url("/v1/chat/completions"))
    status, body, headers = await router.post(STREAM)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert log[-1]["stream_options"] == {"include_usage": True}  # the router asked
    assert body == stream_bytes(STREAM)  # byte for byte the stream without usage
    assert b'"usage"' not in body
    series = llm_series(router)
    assert (series.prompt, series.completion) == (PROMPT_TOKENS, len(PIECES))
    assert sum(series.ttft) == 1 and sum(series.itl) == 1


@pytest.mark.parametrize("sep", [b"\n\n", b"\r\n\r\n"], ids=["lf", "crlf"])
@pytest.mark.parametrize("piece", [1, 7, 64, 4096])
async def test_stream_is_byte_identical_however_it_is_split(start_service: Any, start_router: Any,
                                                            piece: int, sep: bytes) -> None:
    """Events end in a blank line, LF or CRLF (the SSE format allows both); the usage event
    the router asked for is taken out however the stream is split, even one byte at a time."""
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log, piece=piece, sep=sep)})
    router = await serve(start_router, svc.url("/v1/chat/completions"))
    _, body, _ = await router.post(STREAM)
    assert body == stream_bytes(STREAM, sep=sep)
    series = llm_series(router)
    assert (series.prompt, series.completion) == (PROMPT_TOKENS, len(PIECES))


@pytest.mark.parametrize("include", [True, False])
async def test_client_own_stream_options_are_respected(start_service: Any, start_router: Any,
                                                       include: bool) -> None:
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log)})
    router = await serve(start_router, svc.url("/v1/chat/completions"))
    request = {**STREAM, "stream_options": {"include_usage": include}}
    _, body, _ = await router.post(request)
    assert log[-1] == request  # sent as the client wrote it
    assert body == stream_bytes(request)  # the usage chunk kept when the client asked for it
    series = llm_series(router)
    assert series.prompt == (PROMPT_TOKENS if include else 0)
    assert sum(series.ttft) == 1  # time to first token either way


async def test_time_to_first_token_and_between_tokens(start_service: Any, start_router: Any) -> None:
    """Events written 50 ms apart: the mean time between content events is about 50 ms."""
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log, piece=len(stream_bytes(STREAM)) // 8,
                                                                      gap=0.05)})
    router = await serve(start_router, svc.url("/v1/chat/completions"))
    await router.post(STREAM)
    series = llm_series(router)
    assert sum(series.ttft) == 1 and 0 < series.ttft_sum < 1.0
    assert 0.03 < series.itl_sum < 0.2, series.itl_sum
    text = await scrape(router)
    assert 'graph_router_step_time_to_first_token_seconds_count{graph="g",node="root",step="llm"} 1' in text
    assert 'graph_router_step_inter_token_seconds_count{graph="g",node="root",step="llm"} 1' in text


async def test_access_log_line_carries_genai_figures(start_service: Any, start_router: Any) -> None:
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log, gap=0.001)})
    logger = logging.getLogger("graph_router.telemetry.recorder")
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JSONFormatter())
    saved = (logger.level, logger.propagate, list(logger.handlers))
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        router = await serve(start_router, svc.url("/v1/chat/completions"), telemetry=Telemetry())
        await router.post(STREAM)
        await router.post(CHAT)
        await asyncio.sleep(0.05)
        router.router.telemetry.access.flush()
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]
    lines = [orjson.loads(line) for line in sink.getvalue().splitlines()]
    streamed, plain = [line for line in lines if line.get("message") == "graph request"]
    assert streamed["gen_ai.usage.input_tokens"] == PROMPT_TOKENS
    assert streamed["gen_ai.usage.output_tokens"] == len(PIECES)
    assert streamed["gen_ai.server.time_to_first_token_ms"] > 0
    assert plain["gen_ai.usage.output_tokens"] == 4 and "gen_ai.server.time_to_first_token_ms" not in plain


# --- fallbacks ------------------------------------------------------------------------------

def with_fallback(url: str, **request: Any) -> dict[str, Any]:
    fallback: dict[str, Any] = {"serviceUrl": url}
    if request:
        fallback["request"] = request
    return {"steps": {"root/llm": {"fallback": [fallback]}}}


@pytest.mark.parametrize("failure", ["429", "503", "refused"])
async def test_fallback_answers_when_the_first_target_fails_before_its_first_byte(
    start_service: Any, start_router: Any, failure: str
) -> None:
    big: list[dict[str, Any]] = []
    small: list[dict[str, Any]] = []
    primary = (await start_service({"/v1/chat/completions": openai_service(
        big, status=int(failure) if failure.isdigit() else 200)})).url("/v1/chat/completions")
    if failure == "refused":
        primary = "http://127.0.0.1:1/v1/chat/completions"
    fallback = await start_service({"/v1/chat/completions": openai_service(small)})
    router = await serve(start_router, primary, with_fallback(fallback.url("/v1/chat/completions"), model="small"),
                         settings=NO_BREAKER)
    status, body, headers = await router.post(STREAM, headers={"X-Graph-Explain": "1"})
    assert status == 200
    assert headers["X-Graph-Fallback"] == "0"
    assert small[0]["model"] == "small" and small[0]["messages"] == CHAT["messages"]  # the template's rewrite
    assert body == stream_bytes({**STREAM, "model": "small"})
    attempts = [e for e in orjson.loads(headers["X-Graph-Explain"]) if "attempt" in e]
    assert [a["attempt"] for a in attempts] == [0, 1]
    assert ("error" in attempts[0]) == (failure == "refused")
    text = await scrape(router)
    assert (f'graph_router_fallbacks_total{{graph="g",node="root",step="llm",'
            f'to="{fallback.url("/v1/chat/completions")}"}} 1') in text


async def test_no_fallback_after_the_first_byte(start_service: Any, start_router: Any) -> None:
    big: list[dict[str, Any]] = []
    small: list[dict[str, Any]] = []
    primary = await start_service({"/v1/chat/completions": openai_service(big, piece=40, gap=0.01, die_after=200)})
    fallback = await start_service({"/v1/chat/completions": openai_service(small)})
    router = await serve(start_router, primary.url("/v1/chat/completions"),
                         with_fallback(fallback.url("/v1/chat/completions")))
    status, body, headers = await router.post(STREAM)
    assert status == 200 and "X-Graph-Fallback" not in headers
    first_event = stream_bytes(STREAM).split(b"\n\n")[0] + b"\n\n"
    assert len(first_event) < 200 and body.startswith(first_event)  # bytes had reached the client
    assert b"event: error" in body
    assert small == []


async def test_a_healthy_first_target_takes_no_fallback(start_service: Any, start_router: Any) -> None:
    big: list[dict[str, Any]] = []
    small: list[dict[str, Any]] = []
    primary = await start_service({"/v1/chat/completions": openai_service(big)})
    fallback = await start_service({"/v1/chat/completions": openai_service(small)})
    router = await serve(start_router, primary.url("/v1/chat/completions"),
                         with_fallback(fallback.url("/v1/chat/completions")))
    status, _, headers = await router.post(CHAT)
    assert status == 200 and "X-Graph-Fallback" not in headers and small == []


async def test_every_target_failing_answers_the_last_failure(start_service: Any, start_router: Any) -> None:
    a: list[dict[str, Any]] = []
    b: list[dict[str, Any]] = []
    primary = await start_service({"/v1/chat/completions": openai_service(a, status=503)})
    fallback = await start_service({"/v1/chat/completions": openai_service(b, status=429)})
    router = await serve(start_router, primary.url("/v1/chat/completions"),
                         with_fallback(fallback.url("/v1/chat/completions")), settings=NO_BREAKER)
    status, _, _ = await router.post(CHAT)
    assert status == 429 and len(a) == len(b) == 1


# --- tenant budgets ---------------------------------------------------------------------------

async def test_requests_over_a_tenant_rate_get_429_and_do_not_run(start_service: Any, start_router: Any) -> None:
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log)})
    budgets = {"budgets": {"default": {"requestsPerSecond": 1}, "tenants": {"gold": {"requestsPerSecond": 100}}}}
    router = await serve(start_router, svc.url("/v1/chat/completions"), budgets)
    assert (await router.post(CHAT))[0] == 200
    status, body, headers = await router.post(CHAT)
    assert status == 429 and headers["Retry-After"] == "1"
    doc = orjson.loads(body)
    assert doc["error"] == "Too Many Requests"
    assert "'default'" in doc["cause"] and "requestsPerSecond" in doc["cause"]
    assert len(log) == 1  # the graph did not run
    for _ in range(5):  # another tenant has its own bucket
        assert (await router.post(CHAT, headers={"X-Tenant": "gold"}))[0] == 200
    text = await scrape(router)
    assert 'graph_router_budget_rejections_total{graph="g",tenant="default",limit="requestsPerSecond"} 1' in text
    await asyncio.sleep(1.0)
    assert (await router.post(CHAT))[0] == 200  # refilled


async def test_tokens_per_minute_are_charged_from_usage(start_service: Any, start_router: Any) -> None:
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log)})
    budgets = {"budgets": {"tenantHeader": "X-Team", "default": {"tokensPerMinute": 20}}}
    router = await serve(start_router, svc.url("/v1/chat/completions"), budgets)
    headers = {"X-Team": "blue"}
    if time.time() % 60 > 55:  # keep both requests inside one minute
        await asyncio.sleep(60 - time.time() % 60 + 0.1)
    assert (await router.post(STREAM, headers=headers))[0] == 200  # 15 tokens, read from the stream's usage
    assert (await router.post(CHAT, headers=headers))[0] == 200  # 15 more: 30 > 20
    status, body, answer_headers = await router.post(CHAT, headers=headers)
    expected = math.ceil(60 - time.time() % 60)
    assert status == 429
    assert abs(int(answer_headers["Retry-After"]) - expected) <= 1
    assert "'blue'" in orjson.loads(body)["cause"] and "tokensPerMinute" in orjson.loads(body)["cause"]
    assert len(log) == 2
    assert (await router.post(CHAT, headers={"X-Team": "red"}))[0] == 200


async def test_budget_rejection_names_the_limit_in_metrics_for_unlisted_tenants_as_other(
    start_service: Any, start_router: Any
) -> None:
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log)})
    router = await serve(start_router, svc.url("/v1/chat/completions"),
                         {"budgets": {"default": {"requestsPerSecond": 1}}})
    for _ in range(2):
        await router.post(CHAT, headers={"X-Tenant": "someone-random"})
    text = await scrape(router)
    assert 'graph_router_budget_rejections_total{graph="g",tenant="other",limit="requestsPerSecond"} 1' in text


# --- a real OpenAI client --------------------------------------------------------------------

async def test_the_openai_client_streams_through_the_router(start_service: Any, start_router: Any) -> None:
    openai = pytest.importorskip("openai")
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log)})
    router = await serve(start_router, svc.url("/v1/chat/completions"))
    client = openai.AsyncOpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    try:
        stream = await client.chat.completions.create(model="big", messages=CHAT["messages"], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        plain = await client.chat.completions.create(model="big", messages=CHAT["messages"])
    finally:
        await client.close()
    assert text == "".join(PIECES)
    assert plain.usage is not None and plain.usage.prompt_tokens == PROMPT_TOKENS
    assert log[0]["stream_options"] == {"include_usage": True}
    series = llm_series(router)
    assert (series.prompt, series.completion) == (2 * PROMPT_TOKENS, len(PIECES) + 4)


def test_the_readme_example_annotation_compiles() -> None:
    """The README's LLM section example is a valid annotation: fallbacks and budgets as shown."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## LLM steps:", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    annotation = yaml.safe_load(block)["metadata"]["annotations"][ANNOTATION]
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"name": "generate", "serviceUrl": "http://big.models.svc/v1/chat/completions"},
        {"name": "rerank", "serviceUrl": "http://rerank.models.svc/score", "data": "$response"}]}}}
    text = yaml.safe_dump({"kind": "InferenceGraph", "metadata": {"name": "g", "annotations": {ANNOTATION: annotation}},
                           "spec": spec})
    plan = compile_graph(load_graph_text(text, "g.yaml"))
    generate, rerank = plan.root.steps
    assert generate.llm is not None and generate.llm.openai and len(generate.llm.fallbacks) == 2
    assert rerank.llm is not None and rerank.llm.openai and not rerank.llm.fallbacks
    assert plan.budgets is not None and plan.budgets.header == "x-tenant"


async def test_the_first_event_reaches_the_client_while_the_service_holds_the_rest(start_router: Any) -> None:
    """Head and first event arriving together from the service (then nothing until released) reach
    the client in its first read, through a plain step and through an OpenAI step (whose tally and
    usage request must not hold the event back)."""
    first = b"data: " + orjson.dumps(chunk({"content": "Hi"})) + b"\n\n"
    release = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n%b\r\n" % (len(first), first))
        await writer.drain()
        await release.wait()
        writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for path in ("/stream", "/v1/chat/completions"):  # a plain step, and an OpenAI step
            release.clear()
            router = await serve(start_router, f"http://127.0.0.1:{port}{path}")
            host, _, rport = router.url.removeprefix("http://").partition(":")
            reader, writer = await asyncio.open_connection(host, int(rport))
            body = orjson.dumps(STREAM)
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            data = await asyncio.wait_for(reader.read(65536), 5)
            head_end = data.find(b"\r\n\r\n")
            assert head_end > 0 and first in data[head_end:], data
            release.set()
            rest = await asyncio.wait_for(reader.read(65536), 5)
            assert b"[DONE]" in rest
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_the_request_span_carries_the_genai_figures(start_service: Any, start_router: Any) -> None:
    """Plain and streamed: the server span holds the usage (a stream's span ends with the stream)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from graph_router.telemetry import GraphTracer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    log: list[dict[str, Any]] = []
    svc = await start_service({"/v1/chat/completions": openai_service(log, gap=0.001)})
    router = await serve(start_router, svc.url("/v1/chat/completions"),
                         telemetry=Telemetry(tracer=GraphTracer(provider)))
    await router.post(STREAM)
    await router.post(CHAT)
    servers = [s for s in exporter.get_finished_spans() if s.name.startswith("graph ")]
    assert len(servers) == 2
    streamed, plain = servers
    assert streamed.attributes is not None and plain.attributes is not None
    assert streamed.attributes["gen_ai.usage.input_tokens"] == PROMPT_TOKENS
    assert streamed.attributes["gen_ai.usage.output_tokens"] == len(PIECES)
    assert float(streamed.attributes["gen_ai.server.time_to_first_token_ms"]) > 0  # type: ignore[arg-type]
    assert plain.attributes["gen_ai.usage.output_tokens"] == 4


async def test_answers_without_usage_count_no_tokens(start_service: Any, start_router: Any) -> None:
    """A service that never reports usage (plain, and a stream that ignores stream_options): the
    answers pass untouched, no tokens are counted, time to first token still is."""
    log: list[dict[str, Any]] = []

    async def no_usage(request: web.Request) -> web.StreamResponse:
        doc = await request.json()
        log.append(doc)
        if not doc.get("stream"):
            return await openai_service([], usage_in_plain=False)(request)  # aiohttp keeps the body read
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(stream_bytes(STREAM))  # what it would send without being asked for usage
        await resp.write_eof()
        return resp

    svc = await start_service({"/v1/chat/completions": no_usage})
    router = await serve(start_router, svc.url("/v1/chat/completions"))
    status, plain, _ = await router.post(CHAT)
    assert status == 200 and b'"usage"' not in plain
    _, streamed, _ = await router.post(STREAM)
    assert streamed == stream_bytes(STREAM)
    assert log[1]["stream_options"] == {"include_usage": True}
    series = llm_series(router)
    assert (series.prompt, series.completion) == (0, 0)
    assert sum(series.ttft) == 1


async def test_a_timeout_moves_on_to_the_fallback(start_service: Any, start_router: Any) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    small: list[dict[str, Any]] = []
    primary = await start_service({"/v1/chat/completions": slow})
    fallback = await start_service({"/v1/chat/completions": openai_service(small)})
    extensions = with_fallback(fallback.url("/v1/chat/completions"))
    extensions["steps"]["root/llm"]["policy"] = {"timeoutSeconds": 0.2}
    router = await serve(start_router, primary.url("/v1/chat/completions"), extensions, settings=NO_BREAKER)
    started = time.perf_counter()
    status, _, headers = await router.post(CHAT)
    assert status == 200 and headers["X-Graph-Fallback"] == "0" and len(small) == 1
    assert time.perf_counter() - started < 1.5


async def test_an_open_circuit_moves_on_to_the_fallback_at_once(start_service: Any, start_router: Any) -> None:
    """Past 5 failures the primary's breaker opens: the next calls go to the fallback without
    reaching the primary."""
    big: list[dict[str, Any]] = []
    small: list[dict[str, Any]] = []
    primary = await start_service({"/v1/chat/completions": openai_service(big, status=503)})
    fallback = await start_service({"/v1/chat/completions": openai_service(small)})
    router = await serve(start_router, primary.url("/v1/chat/completions"),
                         with_fallback(fallback.url("/v1/chat/completions")))
    for _ in range(8):
        status, _, headers = await router.post(CHAT, headers={"X-Graph-Explain": "1"})
        assert status == 200 and headers["X-Graph-Fallback"] == "0"
    assert len(big) == 5 and len(small) == 8
    attempts = [e for e in orjson.loads(headers["X-Graph-Explain"]) if "attempt" in e]
    assert "circuit open" in str(attempts[0]["error"])


def test_llm_series_add_up_across_workers() -> None:
    """Each --workers process keeps its own series; a scrape sums them (older snapshots lack them)."""
    from graph_router.telemetry.metrics import Metrics, merge, render

    one, two = Metrics(), Metrics()
    for m, tokens in ((one, 10), (two, 5)):
        series = m.llm.step("g", "root", "llm")
        series.prompt += tokens
        series.observe_ttft(0.2)
        m.llm.fallback("g", "root", "llm", "http://small/v1/chat/completions")
        m.llm.rejected("g", "default", "requestsPerSecond")
    old = Metrics().snapshot()
    del old["llm"]
    text = render(merge([one.snapshot(), two.snapshot(), old])).decode()
    assert 'graph_router_llm_tokens_total{graph="g",node="root",step="llm",kind="prompt"} 15' in text
    assert 'graph_router_step_time_to_first_token_seconds_count{graph="g",node="root",step="llm"} 2' in text
    assert ('graph_router_fallbacks_total{graph="g",node="root",step="llm",'
            'to="http://small/v1/chat/completions"} 2') in text
    assert 'graph_router_budget_rejections_total{graph="g",tenant="default",limit="requestsPerSecond"} 2' in text
