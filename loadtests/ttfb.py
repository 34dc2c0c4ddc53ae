"""Streaming through the router: time to first byte and event integrity, against calling the LLM directly.

The demo's OpenAI-compatible stand-in (a real HTTP server on loopback) streams a chat
completion; the same request goes to it directly and through a one-step graph
(``graph-router serve`` as a subprocess), alternately, ``--requests`` times. Reported:
time to first body byte (p50/p99) both ways and the difference (target: at most 2 ms
more through the router), and whether every event arrived intact and in order.

    .venv/bin/python loadtests/ttfb.py [--requests 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from common import HOST, RouterProcess, emit_json, machine_info, percentile, print_table

from graph_router.demo.llm import StandInSettings, llm_app

REQUEST = orjson.dumps({
    "model": "stand-in-for-vllm", "stream": True,
    "messages": [{"role": "user", "content": "Question: what does the router stream?\n\nPassages: tokens"}],
})


async def one(session: aiohttp.ClientSession, url: str) -> tuple[float, list[bytes]]:
    """Time to the first body byte (ms) and the SSE events received."""
    started = time.perf_counter()
    first = 0.0
    buffer = b""
    async with session.post(url, data=REQUEST, headers={"Content-Type": "application/json"}) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url} answered {resp.status}")
        async for chunk in resp.content.iter_any():
            if not first:
                first = (time.perf_counter() - started) * 1000
            buffer += chunk
    events = [e for e in buffer.split(b"\n\n") if e.strip()]
    return first, events


def normalise(event: bytes) -> bytes:
    """An event without its per-response fields (id, created), to compare two streams."""
    if not event.startswith(b"data: {"):
        return event
    doc = orjson.loads(event[6:])
    doc.pop("id", None)
    doc.pop("created", None)
    return orjson.dumps(doc)


async def main(requests: int) -> dict[str, Any]:
    app = llm_app(StandInSettings(chunk_delay=0.002))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    direct_url = f"http://{HOST}:{port}/v1/chat/completions"
    graph = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": direct_url}]}}}
    router = RouterProcess(graph).start()
    direct: list[float] = []
    routed: list[float] = []
    mismatches = 0
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):  # warm both paths' connection pools
                await one(session, direct_url)
                await one(session, router.url())
            for _ in range(requests):
                d_first, d_events = await one(session, direct_url)
                r_first, r_events = await one(session, router.url())
                direct.append(d_first)
                routed.append(r_first)
                if [normalise(e) for e in d_events] != [normalise(e) for e in r_events]:
                    mismatches += 1
    finally:
        router.stop()
        await runner.cleanup()
    rows = [
        ["direct", round(percentile(direct, 50), 3), round(percentile(direct, 99), 3)],
        ["through router", round(percentile(routed, 50), 3), round(percentile(routed, 99), 3)],
        ["added", round(percentile(routed, 50) - percentile(direct, 50), 3),
         round(percentile(routed, 99) - percentile(direct, 99), 3)],
    ]
    print_table(["time to first byte (ms)", "p50", "p99"], rows, title=f"{requests} streamed completions each way")
    print(f"streams that differed (events, order or bytes): {mismatches} of {requests}")
    return {
        "test": "ttfb", "requests": requests, "machine": machine_info(),
        "direct_p50_ms": percentile(direct, 50), "router_p50_ms": percentile(routed, 50),
        "added_p50_ms": percentile(routed, 50) - percentile(direct, 50),
        "added_p99_ms": percentile(routed, 99) - percentile(direct, 99),
        "mismatched_streams": mismatches,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 requests")
    args = parser.parse_args()
    emit_json(asyncio.run(main(20 if args.quick else args.requests)))
