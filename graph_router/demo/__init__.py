"""The embedded demo: a small graph over local stand-in services, one request, one answer.

Everything runs on loopback in this process: two stand-in model services (real HTTP
servers), the router, and a client. Nothing is fetched from the network.
"""

from __future__ import annotations

import sys

import aiohttp
import orjson
from aiohttp import web

from ..loader import load_graph_json
from ..plan import compile_graph
from ..server import Router, start_server
from ..settings import ServerSettings
from ..upstream import UpstreamClient


async def _sentiment(request: web.Request) -> web.Response:
    """Stand-in classifier: counts positive words."""
    doc = await request.json()
    preds = []
    for text in doc.get("instances", []):
        words = str(text).lower().split()
        positive = sum(w.strip(".,!") in {"good", "great", "love", "fast"} for w in words)
        preds.append({"label": "positive" if positive else "neutral", "score": positive / max(len(words), 1)})
    return web.json_response({"predictions": preds})


async def _length(request: web.Request) -> web.Response:
    """Stand-in second model: token counts."""
    doc = await request.json()
    return web.json_response({"predictions": [len(str(t).split()) for t in doc.get("instances", [])]})


async def _serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


async def run_demo() -> int:
    """Start the stand-ins and the router, send one request, print the answer."""
    services = web.Application()
    services.router.add_post("/v1/models/sentiment:predict", _sentiment)
    services.router.add_post("/v1/models/length:predict", _length)
    svc_runner, svc_port = await _serve_app(services)
    base = f"http://127.0.0.1:{svc_port}/v1/models"
    spec = {
        "nodes": {
            "root": {"routerType": "Ensemble", "steps": [
                {"name": "sentiment", "serviceUrl": f"{base}/sentiment:predict"},
                {"name": "length", "serviceUrl": f"{base}/length:predict"},
            ]},
        }
    }
    plan = compile_graph(load_graph_json(orjson.dumps(spec).decode(), name="demo"))
    client = UpstreamClient()
    await client.start()
    router = Router(ServerSettings(), plan, client)
    server = await start_server(router, "127.0.0.1", 0)
    port = server.port
    request = {"instances": ["graph_router is fast and I love it", "hello world"]}
    try:
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{port}/", json=request
        ) as resp:
            body = await resp.read()
            print(f"POST / {orjson.dumps(request).decode()}")
            print(f"HTTP {resp.status}")
            print(orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode())
            return 0 if resp.status == 200 else 1
    except aiohttp.ClientError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await server.shutdown(1)
        await client.close()
        await svc_runner.cleanup()
