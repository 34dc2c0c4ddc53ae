"""``python -m graph_router.demo``: the demo's three services on loopback, until interrupted.

For trying the sample graph with a router started separately: it prints the
``graph-router serve`` line whose ``--service`` flags point at these services.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from .embedder import EmbedderChoice, EmbedderUnavailable, load_embedder
from .llm import StandInSettings
from .services import DemoServices


async def _serve_forever(choice: EmbedderChoice) -> None:
    embedder = await asyncio.to_thread(load_embedder, choice)
    async with DemoServices(embedder, StandInSettings()) as services:
        print(f"embedder: {embedder.description}")
        flags = " ".join(f"--service {name}={url}" for name, url in services.for_graph().items())
        print(f"graph-router serve config/samples/rag-pipeline.yaml {flags} --host 127.0.0.1 --drain-seconds 0",
              flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m graph_router.demo",
        description="Run the demo's embedder, retriever and vLLM stand-in on loopback until interrupted.",
    )
    parser.add_argument("--embedder", choices=("auto", "minilm", "hashing"), default="auto")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve_forever(args.embedder))
    except EmbedderUnavailable as exc:
        print(f"cannot start the embedder: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
