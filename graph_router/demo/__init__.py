"""The embedded demo: a RAG pipeline on loopback, one question, the answer streamed to the terminal.

Everything runs in this process and on 127.0.0.1: an embedder (the real
all-MiniLM-L6-v2 model when the ``demo`` extra is installed, else a deterministic
hashing embedder that says so), a retriever over the bundled corpus, a stand-in for
vLLM, and the router serving ``config/samples/rag-pipeline.yaml`` with each
serviceName mapped to a local URL. ``--llm-url`` sends the generate step to a real
OpenAI-compatible server instead; the graph is the same. Nothing is fetched from the
network unless that URL points there.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from ..errors import GraphError
from ..extensions import ANNOTATION
from ..loader import load_graph_file
from ..plan import compile_graph
from ..server import Router, start_server
from ..settings import ServerSettings
from ..spec import InferenceGraph
from ..upstream import UpstreamClient
from .embedder import EmbedderChoice, EmbedderUnavailable, load_embedder
from .llm import StandInSettings
from .services import LLM_SERVICE, DemoServices
from .stream import ChatStream, StreamError

# The sample in a checkout; an installed wheel carries a copy beside this file (setup.py).
_IN_CHECKOUT = Path(__file__).resolve().parents[2] / "config" / "samples" / "rag-pipeline.yaml"
SAMPLE_GRAPH = _IN_CHECKOUT if _IN_CHECKOUT.exists() else Path(__file__).resolve().parent / "rag-pipeline.yaml"
DEFAULT_QUESTION = "How does graph_router stream an LLM's answer to the client?"
GENERATE_STEP = "root/generate"
# A real LLM may take a while before its first token; the graph's own serviceClient
# timeout (120 s in the sample) is the bound that matters, this only stops a hang.
ANSWER_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``graph-router demo`` was asked to do."""

    question: str = DEFAULT_QUESTION
    llm_url: str | None = None
    llm_model: str | None = None
    embedder: EmbedderChoice = "auto"
    graph: Path = field(default=SAMPLE_GRAPH)


class DemoFailed(Exception):
    """The demo could not produce an answer; the message says why, for the terminal."""


def chat_completions_url(llm_url: str) -> str:
    """``http://host:8000``, ``.../v1`` or the full endpoint, as the chat completions URL."""
    url = llm_url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


def with_llm_model(graph: InferenceGraph, model: str) -> InferenceGraph:
    """The graph with the generate step's template asking for ``model``."""
    text = graph.metadata.annotations.get(ANNOTATION)
    doc = yaml.safe_load(text) if text else None
    request = doc.get("steps", {}).get(GENERATE_STEP, {}).get("request") if isinstance(doc, dict) else None
    if not isinstance(request, dict):
        raise DemoFailed(f"the graph has no request template for {GENERATE_STEP} to set the model in")
    request["model"] = model
    annotations = {**graph.metadata.annotations, ANNOTATION: orjson.dumps(doc).decode()}
    meta = graph.metadata.model_copy(update={"annotations": annotations})
    return graph.model_copy(update={"metadata": meta})


async def _first_model(session: aiohttp.ClientSession, chat_url: str) -> str | None:
    """The first model a real server lists at ``/v1/models``, if it answers."""
    models_url = chat_url.removesuffix("/chat/completions") + "/models"
    try:
        async with session.get(models_url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            doc = await resp.json(content_type=None) if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    if isinstance(data, list) and data and isinstance(data[0], dict) and isinstance(data[0].get("id"), str):
        return str(data[0]["id"])
    return None


def _say(text: str = "", end: str = "\n") -> None:
    print(text, end=end, flush=True)


@dataclass(slots=True)
class _Answer:
    """What arrived, and when (seconds after the request was sent)."""

    status: int = 0
    content_type: str = ""
    text: str = ""
    pieces: int = 0
    reads_with_text: int = 0
    first_at: float | None = None
    done_at: float | None = None
    model: str | None = None
    complete: bool = False


async def _ask(session: aiohttp.ClientSession, url: str, question: str) -> _Answer:
    """POST the question and print the answer as it arrives; raise DemoFailed on failure."""
    answer = _Answer()
    started = time.perf_counter()
    async with session.post(
        url, json={"question": question}, timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_SECONDS)
    ) as resp:
        answer.status = resp.status
        answer.content_type = resp.headers.get("Content-Type", "")
        if resp.status >= 300:
            body = await resp.read()
            raise DemoFailed(f"the graph answered HTTP {resp.status}: {body.decode('utf-8', 'replace')}")
        if answer.content_type.startswith("text/event-stream"):
            stream = ChatStream()
            async for data in resp.content.iter_any():
                _show(answer, stream.feed(data), started)
            _show(answer, stream.close(), started)
            _finish(answer, stream, started)
            return answer
        body = await resp.read()
    # Not streamed by the router: an event stream it buffered, or a plain JSON completion.
    if body.lstrip().startswith(b"data:"):
        stream = ChatStream()
        _show(answer, stream.feed(body) + stream.close(), started)
        _finish(answer, stream, started)
        return answer
    try:
        doc: Any = orjson.loads(body)
        content = doc["choices"][0]["message"]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        text = body[:500].decode("utf-8", "replace")
        raise DemoFailed(f"the graph's answer is not a chat completion: {text}") from exc
    answer.model = doc.get("model")
    _show(answer, [str(content)], started)
    answer.complete = True
    answer.done_at = time.perf_counter() - started
    return answer


def _show(answer: _Answer, pieces: list[str], started: float) -> None:
    if not pieces:
        return
    if answer.first_at is None:
        answer.first_at = time.perf_counter() - started
    answer.reads_with_text += 1
    answer.pieces += len(pieces)
    for piece in pieces:
        answer.text += piece
        _say(piece, end="")


def _finish(answer: _Answer, stream: ChatStream, started: float) -> None:
    answer.done_at = time.perf_counter() - started
    answer.model = stream.model
    answer.complete = stream.done or stream.finish_reason is not None
    if not answer.complete:
        raise DemoFailed(f"the answer stream ended early, after {stream.events} event(s) and no [DONE]")


def _summary(answer: _Answer) -> str:
    first = f"{(answer.first_at or 0) * 1000:.0f} ms"
    total = f"{answer.done_at or 0:.2f} s"
    head = f"HTTP {answer.status} {answer.content_type or '(no content type)'}, model {answer.model or '?'}"
    if answer.content_type.startswith("text/event-stream") and answer.reads_with_text > 1:
        return (
            f"{head}: streamed by the router, {answer.pieces} pieces in {answer.reads_with_text} reads, "
            f"first after {first}, complete after {total}"
        )
    return (
        f"{head}: the router answered in one piece after {total} "
        f"(no streaming pass-through in this router build, or the LLM did not stream)"
    )


async def run_demo(options: DemoOptions | None = None) -> int:
    """Start the services and the router, ask one question, print the answer; 0 on success."""
    o = options or DemoOptions()
    try:
        return await _run(o)
    except (DemoFailed, StreamError, EmbedderUnavailable, GraphError) as exc:
        _say()
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        _say()
        print(f"demo failed: no answer from the router: {exc!r}", file=sys.stderr)
        return 1


async def _run(o: DemoOptions) -> int:
    graph = load_graph_file(o.graph)
    chat_url = chat_completions_url(o.llm_url) if o.llm_url else None
    _say(f"graph_router demo: a RAG pipeline on loopback ({o.graph.name}: embed -> retrieve -> generate)")
    async with aiohttp.ClientSession() as session:
        model = o.llm_model
        if chat_url is not None and model is None:
            model = await _first_model(session, chat_url)
        if model is not None:
            graph = with_llm_model(graph, model)
        loading = time.perf_counter()
        embedder = await asyncio.to_thread(load_embedder, o.embedder)
        loaded = time.perf_counter() - loading
        llm = None if chat_url is not None else StandInSettings()
        async with DemoServices(embedder, llm) as services:
            urls = services.for_graph()
            if chat_url is not None:
                urls[LLM_SERVICE] = chat_url
            plan = compile_graph(graph, services=urls)
            assert services.index is not None
            _say(f"  embedder   {embedder.description}; loaded in {loaded:.1f} s")
            _say(f"             {services.embeddings_url}")
            _say(f"  retriever  {len(services.index.passages)} bundled passages, embedded at start-up")
            _say(f"             {services.retrieve_url}")
            if chat_url is None:
                _say("  llm        a stand-in for vLLM (OpenAI-compatible, no model: it quotes the passages)")
            else:
                _say(f"  llm        your OpenAI-compatible server{f', model {model}' if model else ''}")
            _say(f"             {urls[LLM_SERVICE]}")
            client = UpstreamClient()
            await client.start()
            router = Router(ServerSettings(), plan, client)
            server = await start_server(router, "127.0.0.1", 0)
            try:
                router_url = f"http://127.0.0.1:{server.port}/"
                _say(f"  router     {router_url}")
                _say()
                _say(f"question: {o.question}")
                _say("answer:   ", end="")
                answer = await _ask(session, router_url, o.question)
            finally:
                await server.shutdown(1)
                await client.close()
    _say()
    _say()
    if not answer.text.strip():
        raise DemoFailed("the answer was empty")
    _say(_summary(answer) + _llm_figures(router))
    return 0


def _llm_figures(router: Router) -> str:
    """What the router itself counted on the LLM step: tokens from usage, time to first token."""
    steps = router.telemetry.metrics.llm.steps.values()
    prompt = sum(s.prompt for s in steps)
    completion = sum(s.completion for s in steps)
    firsts = sum(sum(s.ttft) for s in steps)
    if not prompt and not completion and not firsts:
        return ""
    text = f"; the router counted {prompt} prompt + {completion} completion tokens"
    if firsts:
        text += f", first token after {sum(s.ttft_sum for s in steps) / firsts * 1000:.0f} ms"
    return text
