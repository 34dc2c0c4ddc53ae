"""A vector retriever over the demo's bundled corpus, as a small HTTP service.

``corpus.jsonl`` (beside this file, written for the demo) holds short passages about
KServe, InferenceGraphs, graph_router and LLM serving. They are embedded once, at
start-up, by the same embedder the pipeline's embed step uses, so the question's
vector and the passages' vectors are comparable. ``POST /v1/retrieve`` takes
``{"vector": [...], "top_k": 3}`` and answers the closest passages by cosine
similarity, best first.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from .embedder import Embedder
from .protocol import BadRequest, json_response, new_app, read_object

CORPUS = Path(__file__).with_name("corpus.jsonl")
DEFAULT_TOP_K = 3
MAX_TOP_K = 50


@dataclass(frozen=True, slots=True)
class Passage:
    id: str
    text: str


def load_corpus(path: Path = CORPUS) -> tuple[Passage, ...]:
    """One passage per line: ``{"id": ..., "text": ...}``."""
    passages = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        doc = orjson.loads(line)
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("text"), str):
            raise ValueError(f"{path}:{number}: expected {{\"id\": str, \"text\": str}}")
        passages.append(Passage(doc["id"], doc["text"]))
    return tuple(passages)


@dataclass(frozen=True, slots=True)
class Hit:
    passage: Passage
    score: float


class Index:
    """Passages and their unit vectors; a search is an exhaustive dot product (tens of passages)."""

    def __init__(self, passages: Sequence[Passage], vectors: Sequence[Sequence[float]], embedder_id: str) -> None:
        if len(passages) != len(vectors) or not passages:
            raise ValueError("an index needs one vector per passage, and at least one passage")
        self.passages = tuple(passages)
        self.dimensions = len(vectors[0])
        self.embedder_id = embedder_id
        self._vectors = tuple(tuple(_unit(v)) for v in vectors)

    @classmethod
    async def build(cls, passages: Sequence[Passage], embedder: Embedder) -> Index:
        """Embed every passage (in a worker thread: a real model takes a moment)."""
        vectors = await asyncio.to_thread(embedder.embed, [p.text for p in passages])
        return cls(passages, vectors, embedder.model_id)

    def search(self, vector: Sequence[float], top_k: int) -> list[Hit]:
        """The ``top_k`` closest passages, best first; ties keep corpus order."""
        query = _unit(vector)
        scored = [
            (sum(q * p for q, p in zip(query, pv, strict=True)), i) for i, pv in enumerate(self._vectors)
        ]
        scored.sort(key=lambda s: (-s[0], s[1]))
        return [Hit(self.passages[i], score) for score, i in scored[:top_k]]


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else list(vector)


def _query(doc: dict[str, Any], dimensions: int) -> tuple[list[float], int]:
    vector = doc.get("vector")
    if not isinstance(vector, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in vector
    ):
        raise BadRequest("'vector' must be a list of numbers", "vector")
    if len(vector) != dimensions:
        raise BadRequest(f"'vector' has {len(vector)} dimensions; the index has {dimensions}", "vector")
    if not any(vector):
        raise BadRequest("'vector' is all zeros: it has no direction to compare", "vector")
    top_k = doc.get("top_k", DEFAULT_TOP_K)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise BadRequest(f"'top_k' must be an integer from 1 to {MAX_TOP_K}", "top_k")
    return [float(v) for v in vector], top_k


def retriever_app(index: Index) -> web.Application:
    """``POST /v1/retrieve``: the closest passages to a vector."""

    async def retrieve(request: web.Request) -> web.Response:
        vector, top_k = _query(await read_object(request), index.dimensions)
        hits = index.search(vector, top_k)
        return json_response(
            {
                "passages": [{"id": h.passage.id, "text": h.passage.text, "score": round(h.score, 4)} for h in hits],
                "embedder": index.embedder_id,
            }
        )

    app = new_app()
    app.router.add_post("/v1/retrieve", retrieve)
    return app
