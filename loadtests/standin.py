"""A stand-in model service for the load tests: sleeps a random while, then answers JSON.

``python loadtests/standin.py --port P [--min-ms 50 --max-ms 200] [--tag NAME]``
listens on 127.0.0.1:P. Every POST gets ``{"predictions": [...], "served_by": TAG}``
after a delay drawn uniformly from [min-ms, max-ms]; ``GET /healthz`` answers at once.
Started and killed by the tests through ``common.StandIn``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random

from aiohttp import web


def build_app(min_ms: float, max_ms: float, tag: str) -> web.Application:
    """The aiohttp application: one catch-all handler."""
    body = json.dumps({"predictions": [[0.1, 0.2, 0.3]], "served_by": tag}, separators=(",", ":")).encode()

    async def handle(request: web.Request) -> web.Response:
        if request.method == "GET" and request.path == "/healthz":
            return web.Response(text="ok")
        await request.read()
        if max_ms > 0:
            await asyncio.sleep(random.uniform(min_ms, max_ms) / 1000.0)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--min-ms", type=float, default=0.0)
    parser.add_argument("--max-ms", type=float, default=0.0)
    parser.add_argument("--tag", default="standin")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(build_app(args.min_ms, args.max_ms, args.tag), host="127.0.0.1", port=args.port,
                print=None, access_log=None, backlog=4096, reuse_address=True)


if __name__ == "__main__":
    main()
