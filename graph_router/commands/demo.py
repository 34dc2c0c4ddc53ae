"""``graph-router demo``: the embedded RAG pipeline, end to end on loopback, its answer streamed."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    from ..demo import DEFAULT_QUESTION, SAMPLE_GRAPH

    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="run the embedded RAG demo pipeline on loopback and stream its answer",
        description="Start an embedder, a retriever over a bundled corpus and a stand-in for vLLM on "
        "127.0.0.1, serve config/samples/rag-pipeline.yaml with them, ask one question and print the "
        "answer as it streams. Exit 0 when a complete answer arrived.",
    )
    p.add_argument("--question", "-q", default=DEFAULT_QUESTION, help="the question to ask (default: %(default)s)")
    p.add_argument(
        "--llm-url",
        metavar="URL",
        help="a real OpenAI-compatible server (vLLM, ...) for the generate step instead of the stand-in: "
        "http://host:8000, http://host:8000/v1 or the full /v1/chat/completions URL",
    )
    p.add_argument(
        "--llm-model",
        metavar="NAME",
        help="the model to ask for (default with --llm-url: the first one the server lists at /v1/models)",
    )
    p.add_argument(
        "--embedder",
        choices=("auto", "minilm", "hashing"),
        default="auto",
        help="auto: all-MiniLM-L6-v2 when its package is installed, else the hashing embedder (default: auto)",
    )
    p.add_argument("--graph", type=Path, default=SAMPLE_GRAPH, help="the graph to serve (default: the sample)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoOptions, run_demo
    from .serve import check_url

    if args.llm_url:
        check_url(args.llm_url, "--llm-url")

    # The answer is this command's output: at the default level the router's per-request
    # log lines would land in the middle of it. An explicit other --log-level is kept.
    root = logging.getLogger()
    if root.level == logging.INFO:
        root.setLevel(logging.WARNING)

    options = DemoOptions(
        question=args.question,
        llm_url=args.llm_url,
        llm_model=args.llm_model,
        embedder=args.embedder,
        graph=args.graph,
    )
    return asyncio.run(run_demo(options))
