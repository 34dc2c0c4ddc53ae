"""Prefix affinity across an LLM's replicas: round robin vs power of two choices vs affinity.

Four replicas of an OpenAI-compatible streaming stand-in run on loopback, in a process
of their own. Each keeps an LRU of prompt prefixes (``--cache`` entries, its "KV
cache"): a request whose system prompt is cached streams its first token after 5 ms, a
miss after 50 ms (and caches it). The workload is 32 long (~2,500 characters) shared
system prompts, each with varied user turns, sent ``--requests`` times (after 256 to
warm up) at ``--concurrency`` through ``graph-router serve`` (a subprocess) with the four
replicas as one service (``--service llm=URL1,URL2,URL3,URL4``), once per policy:

- ``round-robin``: ``balance: roundRobin``;
- ``p2c``: the default, least outstanding of two random picks;
- ``affinity``: ``affinity: {key: messages.0.content, prefixChars: 256}``.

Reported per policy: time to first token through the router (p50, p99), the replicas'
cache hit rate, and the busiest replica's requests over the mean. Goals: affinity
hits >= 90%, its p50 TTFT <= 0.3x round robin's, no replica above 1.25x the mean.
A cache holds 8 of the 32 prompts by default, the issue's workload (round robin then
hits about 25%): the four caches hold every prompt once only if each replica gets its
share of 8, which the ring alone does not give (one replica gets 10 or 11 of them:
76-84% hits); affinity shares repeated keys evenly. ``--cache 12``: round robin 37%.
Ends with one JSON line; exit 0 when every goal is met.

    .venv/bin/python loadtests/affinity.py [--requests 1600] [--concurrency 32] [--cache 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web
from common import HOST, RouterProcess, finish, machine_info, percentile, print_table, run_async

HIT_MS = 5.0
MISS_MS = 50.0
PROMPTS = 32
REPLICAS = 4
WARMUP = 256  # requests per policy before counting
POLICIES: dict[str, dict[str, Any]] = {
    "round-robin": {"balance": "roundRobin"},
    "p2c": {},
    "affinity": {"affinity": {"key": "messages.0.content", "prefixChars": 256}},
}


class Replica:
    """One stand-in replica: an LRU of system prompts, counted hits and requests."""

    def __init__(self, cache: int) -> None:
        self.cache: OrderedDict[str, None] = OrderedDict()
        self.capacity = cache
        self.requests = self.hits = self.in_flight = self.peak = 0
        self.port = 0
        self.runner: web.AppRunner | None = None

    def reset(self, cache: bool = True) -> None:
        if cache:
            self.cache.clear()
        self.requests = self.hits = self.in_flight = self.peak = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        doc = orjson.loads(await request.read())
        prefix = doc["messages"][0]["content"]
        self.requests += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            hit = prefix in self.cache
            if hit:
                self.hits += 1
                self.cache.move_to_end(prefix)
            else:
                self.cache[prefix] = None
                if len(self.cache) > self.capacity:
                    self.cache.popitem(last=False)
            await asyncio.sleep((HIT_MS if hit else MISS_MS) / 1000)
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await resp.prepare(request)
            for word in ("The", " answer", "."):
                chunk = {"object": "chat.completion.chunk", "model": "stand-in",
                         "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
                await asyncio.sleep(0.001)
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        finally:
            self.in_flight -= 1

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "hits": self.hits, "peak": self.peak})

    async def reset_now(self, request: web.Request) -> web.Response:
        self.reset(cache=request.query.get("cache") != "keep")
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/reset", self.reset_now)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, HOST, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/chat/completions"


def workload(n: int, seed: int) -> list[bytes]:
    """``n`` chat requests: one of 32 long system prompts, a varied user turn."""
    rng = random.Random(seed)
    words = "alpha beta gamma delta kernel cache token prefix replica graph router model".split()
    systems = [f"You are assistant {i}. " + " ".join(rng.choice(words) for _ in range(400)) for i in range(PROMPTS)]
    return [orjson.dumps({
        "model": "stand-in", "stream": True,
        "messages": [{"role": "system", "content": rng.choice(systems)},
                     {"role": "user", "content": f"question {i}: " + " ".join(rng.choice(words) for _ in range(20))}],
    }) for i in range(n)]


def graph_file(directory: Path, extension: dict[str, Any]) -> Path:
    doc = {
        "kind": "InferenceGraph",
        "metadata": {"name": "chat", "annotations": {
            "graph-router.io/extensions": yaml.safe_dump({"steps": {"root/llm": extension}} if extension else {}),
        }},
        "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "llm", "serviceName": "llm"}]}}},
    }
    path = directory / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def drive(url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    """Send every body (``concurrency`` at a time); time to the first body byte of each, in ms."""
    ttft: list[float] = []
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            for body in queue:
                started = time.perf_counter()
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    first = await resp.content.readany()
                    ttft.append((time.perf_counter() - started) * 1000)
                    if resp.status != 200 or not first.startswith(b"data: "):
                        raise RuntimeError(f"router answered {resp.status}: {first[:200]!r}")
                    await resp.read()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttft


def serve_replicas(cache: int, ports: Any) -> None:
    """The four replicas, in a process of their own (the load generator's CPU stays out of their timing)."""
    async def run() -> None:
        replicas = [Replica(cache) for _ in range(REPLICAS)]
        for r in replicas:
            await r.start()
        ports.put([r.port for r in replicas])
        await asyncio.Event().wait()

    run_async(run())


class Replicas:
    """The replica process seen from the load generator: URLs, reset and counts over HTTP."""

    def __init__(self, cache: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        self.process = ctx.Process(target=serve_replicas, args=(cache, queue), daemon=True)
        self.process.start()
        self.ports: list[int] = queue.get(timeout=30)

    def urls(self) -> list[str]:
        return [f"http://{HOST}:{p}/v1/chat/completions" for p in self.ports]

    async def call(self, session: aiohttp.ClientSession, method: str, path: str) -> list[dict[str, Any]]:
        out = []
        for p in self.ports:
            async with session.request(method, f"http://{HOST}:{p}{path}") as resp:
                out.append(await resp.json())
        return out

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    replicas = Replicas(args.cache)
    admin = aiohttp.ClientSession()
    bodies = workload(args.requests + WARMUP, args.seed)
    warmup, bodies = bodies[:WARMUP], bodies[WARMUP:]
    service = "llm=" + ",".join(replicas.urls())
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extension in POLICIES.items():
            await replicas.call(admin, "POST", "/reset")
            router = RouterProcess(graph_file=graph_file(Path(tmp), extension), extra=["--service", service])
            router.start()
            try:
                # Warm up (connections, and each policy's caches), then count from a steady state.
                await drive(router.url("/"), warmup, args.concurrency)
                await replicas.call(admin, "POST", "/reset?cache=keep")
                ttft = await drive(router.url("/"), bodies, args.concurrency)
            finally:
                router.stop()
            counts = await replicas.call(admin, "GET", "/stats")
            served = [c["requests"] for c in counts]
            mean = sum(served) / len(served)
            results[name] = {
                "ttft_p50_ms": round(percentile(ttft, 50), 2), "ttft_p99_ms": round(percentile(ttft, 99), 2),
                "hit_rate": round(sum(c["hits"] for c in counts) / max(1, sum(served)), 4),
                "max_over_mean": round(max(served) / mean, 3), "served": served,
            }
    await admin.close()
    replicas.stop()
    rr, aff = results["round-robin"], results["affinity"]
    goals = {
        "affinity_hits_ge_90pct": aff["hit_rate"] >= 0.90,
        "affinity_p50_le_0.3x_round_robin": aff["ttft_p50_ms"] <= 0.3 * rr["ttft_p50_ms"],
        "affinity_max_load_le_1.25x_mean": aff["max_over_mean"] <= 1.25,
    }
    print_table(["policy", "p50 TTFT ms", "p99 TTFT ms", "hit rate", "max/mean", "requests per replica"],
                [[n, r["ttft_p50_ms"], r["ttft_p99_ms"], f"{r['hit_rate']:.1%}", r["max_over_mean"],
                  " ".join(map(str, r["served"]))] for n, r in results.items()],
                title=f"{args.requests} requests (after {WARMUP}), {args.concurrency} at a time, {PROMPTS} system "
                      f"prompts, {REPLICAS} replicas caching {args.cache} prefixes each "
                      f"(hit {HIT_MS:g} ms, miss {MISS_MS:g} ms)")
    for goal, met in goals.items():
        print(f"{'met' if met else 'NOT MET'}: {goal}")
    return {"test": "affinity", "ok": all(goals.values()), "goals": goals, "results": results,
            "requests": args.requests, "concurrency": args.concurrency, "cache": args.cache,
            "machine": machine_info()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1600)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cache", type=int, default=8, help="prefixes each replica keeps (its KV cache)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="400 requests")
    args = parser.parse_args()
    if args.quick:
        args.requests = 400
    result = run_async(asyncio.wait_for(main(args), timeout=900))
    finish(result)
