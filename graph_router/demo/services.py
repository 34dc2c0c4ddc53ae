"""The demo's three model services, each a real HTTP server on 127.0.0.1, started together.

``DemoServices`` embeds the corpus, starts the embedder, the retriever and (unless a
real LLM server is used instead) the vLLM stand-in on free ports, and stops them on
exit. :meth:`DemoServices.for_graph` maps the sample graph's serviceNames to their
URLs, which is all the router needs to run ``config/samples/rag-pipeline.yaml``.

``python -m graph_router.demo`` runs them until interrupted and prints the
``--service`` flags that point ``graph-router serve`` or ``run`` at them.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from aiohttp import web

from .embedder import Embedder, embeddings_app
from .llm import StandInSettings, llm_app
from .retriever import CORPUS, Index, load_corpus, retriever_app

# The sample graph's serviceNames.
EMBEDDER_SERVICE = "bge-embedder"
RETRIEVER_SERVICE = "vector-search"
LLM_SERVICE = "qwen-llm"


async def _listen(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on a free loopback port; its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


class DemoServices:
    """The running services; use as ``async with DemoServices(embedder) as services``.

    ``llm=None`` starts no stand-in: the caller points the LLM step elsewhere.
    """

    def __init__(
        self, embedder: Embedder, llm: StandInSettings | None = None, corpus: Path = CORPUS
    ) -> None:
        self.embedder = embedder
        self._llm = llm
        self._corpus = corpus
        self._runners: list[web.AppRunner] = []
        self.index: Index | None = None
        self.embeddings_url = ""
        self.retrieve_url = ""
        self.chat_url: str | None = None

    async def __aenter__(self) -> DemoServices:
        try:
            self.index = await Index.build(load_corpus(self._corpus), self.embedder)
            self.embeddings_url = await self._start(embeddings_app(self.embedder)) + "/v1/embeddings"
            self.retrieve_url = await self._start(retriever_app(self.index)) + "/v1/retrieve"
            if self._llm is not None:
                self.chat_url = await self._start(llm_app(self._llm)) + "/v1/chat/completions"
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start(self, app: web.Application) -> str:
        runner, url = await _listen(app)
        self._runners.append(runner)
        return url

    async def close(self) -> None:
        while self._runners:
            await self._runners.pop().cleanup()

    def for_graph(self) -> dict[str, str]:
        """serviceName -> URL for the sample graph (the LLM only when the stand-in runs)."""
        services = {EMBEDDER_SERVICE: self.embeddings_url, RETRIEVER_SERVICE: self.retrieve_url}
        if self.chat_url is not None:
            services[LLM_SERVICE] = self.chat_url
        return services

