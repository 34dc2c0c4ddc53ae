"""A stand-in for vLLM: OpenAI-compatible chat completions with no language model behind it.

The demo needs something that answers like an LLM server, streaming included, on a
laptop with no GPU and no network. This service speaks the same API as vLLM's
OpenAI-compatible server (``POST /v1/chat/completions`` with or without
``"stream": true``, ``GET /v1/models``) but composes its answer deterministically:
it finds the question and the retrieved passages in the last user message and quotes
the best-ranked passages, in the retriever's order. Its model id and the first sentence
of every answer say that it is a stand-in.

Streaming follows OpenAI's framing: one ``data: {chat.completion.chunk}`` server-sent
event per word, a short pause between them so a terminal shows the answer arriving,
a last chunk with ``finish_reason``, then ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from .protocol import BadRequest, json_response, new_app, read_object

MODEL_ID = "stand-in-for-vllm"
DISCLAIMER = "This answer comes from a stand-in for vLLM, not a language model: it quotes the retrieved passages."
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

_WORD = re.compile(r"[a-z0-9]+")
_PIECE = re.compile(r"\s*\S+")
_QUESTION = re.compile(r"question:\s*(.*?)(?=\n\s*passages:|\n\s*\n|\Z)", re.IGNORECASE | re.DOTALL)
_PASSAGES = re.compile(r"passages:\s*(.*)\Z", re.IGNORECASE | re.DOTALL)
# Too common to say what a question is about.
_COMMON = frozenset(
    "a an and are as at be by can do does for from how i in is it its of on or so that the this "
    "to what when where which who why with you your".split()
)


@dataclass(frozen=True, slots=True)
class StandInSettings:
    """How the stand-in behaves.

    chunk_delay: seconds between streamed chunks; 30 ms makes the stream visible in a
    terminal without making the demo slow (an answer is a few dozen words).
    max_quoted: how many passages an answer quotes at most.
    clock: the ``created`` timestamp's source.
    """

    chunk_delay: float = 0.03
    max_quoted: int = 2
    clock: Callable[[], float] = field(default=time.time)


def _text(content: Any, where: str) -> str:
    """A message's content: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return "".join(str(p) for p in parts)
    raise BadRequest(f"{where}.content must be a string or a list of text parts", where)


def _messages(doc: dict[str, Any]) -> list[tuple[str, str]]:
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise BadRequest(f"{where} must be an object with a role of {', '.join(sorted(ROLES))}", where)
        out.append((str(message["role"]), _text(message.get("content"), where)))
    if not any(role == "user" for role, _ in out):
        raise BadRequest("'messages' has no user message to answer", "messages")
    return out


def _passages(text: str) -> list[str]:
    """A JSON list of strings (what the sample graph's template interpolates), else one per line."""
    text = text.strip()
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, list):
        return [str(p) for p in doc if str(p).strip()]
    return [line.strip(" -*\t") for line in text.splitlines() if line.strip(" -*\t")]


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _COMMON}


def compose_answer(user_message: str, max_quoted: int = 2) -> str:
    """The stand-in's answer: the disclaimer, then the passages closest to the question.

    The message is read as ``Question: ...`` and ``Passages: ...`` (a JSON list or one
    passage per line); without those labels the whole message is the question.
    """
    q = _QUESTION.search(user_message)
    p = _PASSAGES.search(user_message)
    question = (q.group(1) if q else user_message).strip()
    passages = _passages(p.group(1)) if p else []
    if not passages:
        return f"{DISCLAIMER} No passages came with the question, so there is nothing to quote."
    wanted = _words(question)
    # Ranking is the retriever's job: keep its order, always quote its best passage, and
    # skip later ones that share no word with the question.
    chosen = [text for i, text in enumerate(passages) if i == 0 or wanted & _words(text)][:max_quoted]
    quoted = " ".join(c if c.endswith((".", "!", "?")) else c + "." for c in chosen)
    return f"{DISCLAIMER} From the passages: {quoted}"


def split_pieces(answer: str) -> list[str]:
    """Token-ish pieces: each word with the space before it, so they join back exactly."""
    return _PIECE.findall(answer)


def _limit(doc: dict[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = doc.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise BadRequest(f"'{key}' must be a positive integer", key)
        return value
    return None


def llm_app(settings: StandInSettings | None = None) -> web.Application:
    """The stand-in's routes: chat completions (plain and streamed) and the model list."""
    s = settings or StandInSettings()

    async def completions(request: web.Request) -> web.StreamResponse:
        doc = await read_object(request)
        messages = _messages(doc)
        stream = doc.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("'stream' must be true or false", "stream")
        limit = _limit(doc)
        last_user = next(text for role, text in reversed(messages) if role == "user")
        pieces = split_pieces(compose_answer(last_user, s.max_quoted))
        finish = "stop"
        if limit is not None and len(pieces) > limit:
            pieces, finish = pieces[:limit], "length"
        prompt_words = sum(len(text.split()) for _, text in messages)
        usage = {
            "prompt_tokens": prompt_words,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_words + len(pieces),
        }
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(s.clock())
        if not stream:
            return json_response(
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": MODEL_ID,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces)},
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage,
                }
            )
        options = doc.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = _chunks(ident, created, pieces, finish, usage if include_usage else None)
        return await _stream(request, events, s.chunk_delay)

    async def models(request: web.Request) -> web.Response:
        model = {"id": MODEL_ID, "object": "model", "created": int(s.clock()), "owned_by": "graph-router-demo"}
        return json_response({"object": "list", "data": [model]})

    app = new_app()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    return app


def _chunks(
    ident: str, created: int, pieces: list[str], finish: str, usage: dict[str, int] | None
) -> Iterator[dict[str, Any]]:
    """The chunk objects of one streamed answer, in order (OpenAI's shape)."""

    def chunk(delta: dict[str, str], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": MODEL_ID,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    yield chunk({"role": "assistant", "content": ""}, None)
    for piece in pieces:
        yield chunk({"content": piece}, None)
    yield chunk({}, finish)
    if usage is not None:
        yield {**chunk({}, None), "choices": [], "usage": usage}


async def _stream(request: web.Request, events: Iterator[dict[str, Any]], delay: float) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        for i, event in enumerate(events):
            if i and delay:
                await asyncio.sleep(delay)
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-answer: nothing left to do
    return response
