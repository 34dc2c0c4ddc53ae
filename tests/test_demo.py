"""`graph-router demo` end to end, as a user runs it: a subprocess, its exit status and what it printed."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from graph_router.demo.llm import DISCLAIMER

ROOT = Path(__file__).resolve().parents[1]


async def demo(*args: str, timeout: float = 150) -> tuple[int, str, str]:
    """Run ``python -m graph_router demo ARGS`` and return its exit status, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "demo", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def answer_of(out: str) -> str:
    return out.split("answer:", 1)[1].strip().split("\n\n", 1)[0]


@pytest.mark.timeout(180)
async def test_demo_streams_an_answer_and_exits_0() -> None:
    """The default demo, with whichever embedder is installed, streams an answer from the corpus and exits 0."""
    code, out, err = await demo()
    assert code == 0, out + err
    assert "question: How does graph_router stream an LLM's answer to the client?" in out
    assert "a stand-in for vLLM" in out
    assert ("all-MiniLM-L6-v2, a real sentence-embedding model" in out) or ("not a neural model" in out)
    answer = answer_of(out)
    assert answer.startswith(DISCLAIMER)
    assert "graph_router forwards the bytes to the client as they arrive" in answer  # passage router-07
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("HTTP 200 text/event-stream, model stand-in-for-vllm")
    assert "streamed by the router" in summary, summary
    reads = int(summary.split(" reads")[0].rsplit(" ", 1)[1])
    assert reads > 10
    # the router's own figures for the LLM step (usage it asked for, time to first token)
    pieces = int(summary.split(" pieces")[0].rsplit(" ", 1)[1])
    assert f"prompt + {pieces} completion tokens, first token after " in summary, summary


@pytest.fixture
async def real_llm() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A separate OpenAI-compatible server on loopback that lists model 'tiny' and streams a fixed answer."""
    received: list[bytes] = []

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        received.append(await request.read())
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ["Forty", " two."]:
            chunk = {"object": "chat.completion.chunk", "model": "tiny",
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/v1", received
    await runner.cleanup()


@pytest.mark.timeout(60)
async def test_llm_url_sends_the_generate_step_to_that_server(real_llm: tuple[str, list[bytes]]) -> None:
    """--llm-url points the same graph's generate step at another server, asking for the model it lists."""
    url, received = real_llm
    code, out, err = await demo("--embedder", "hashing", "--llm-url", url, "--question", "What is vLLM?")
    assert code == 0, out + err
    assert answer_of(out) == "Forty two."
    assert "your OpenAI-compatible server, model tiny" in out
    [request] = [orjson.loads(r) for r in received]
    assert request["model"] == "tiny"
    assert request["stream"] is True
    assert request["messages"][1]["content"].startswith("Question: What is vLLM?\n\nPassages: [")


@pytest.mark.timeout(60)
async def test_an_unreachable_llm_fails_the_demo_with_a_clear_message() -> None:
    """When the LLM server cannot be reached the demo exits 1 and says what the graph answered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        code, _, err = await demo("--embedder", "hashing", "--llm-url", f"http://127.0.0.1:{port}",
                                  "--llm-model", "x")
    assert code == 1
    assert "demo failed: the graph answered HTTP 500" in err
    assert f"127.0.0.1:{port}/v1/chat/completions" in err
