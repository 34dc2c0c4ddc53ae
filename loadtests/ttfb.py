"""Time to first token through the router, with nginx (``proxy_buffering off``) as the reference.

One local SSE service (a subprocess of this script: a bare asyncio protocol on uvloop
that answers every POST with a chunked ``text/event-stream``, its first event in the
same write as its head, the rest ``--pause-ms`` later, 1 ms by default; 0 sends the
whole stream in one write) is called several ways,
``--requests`` times each, every way on its own kept-alive connection (``--block N``:
N requests in a row on one way before the next; the default 1 alternates every request,
so that each process wakes with caches the others have used since). Every round takes
the ways in a new random order (seeded: every run takes the same orders): how long a request takes depends
on which process ran just before it (the direct call is twice as slow right after a
router, whose larger footprint the service and the client then wake into, as right after
nginx), and a fixed order would measure the reference, the direct call, always after the
same way, which biases every difference taken from it. ``--fixed-order`` keeps the old
order (direct, nginx, the routers) for comparison:

- directly;
- through nginx as a streaming reverse proxy (``proxy_buffering off``, HTTP/1.1 and
  kept-alive connections upstream);
- through a one-step graph (``graph-router serve`` as a subprocess), whose step is an
  OpenAI step (its URL ends in ``/v1/chat/completions``: the router asks for usage,
  tallies the stream and removes the usage chunk), and again through a step that is
  not one (the stream relayed as bytes).

The client is a blocking socket with TCP_NODELAY: the time from sending the request to
holding the first complete event. Reported: p50/p99 each way, what nginx and the router
add to the direct p50, and their ratio (target: the router adds at most 2x what nginx
adds); ``--by-predecessor`` adds each way's p50 by the way that ran just before it.
Every routed stream is checked to be byte-identical to the direct one.

    .venv/bin/python loadtests/ttfb.py [--requests 2000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from common import (
    HOST,
    NGINX_BIN,
    RouterProcess,
    emit_json,
    free_port,
    machine_info,
    percentile,
    print_table,
    temp_dir,
    wait_port,
)

REQUEST = orjson.dumps({
    "model": "stand-in", "stream": True,
    "messages": [{"role": "user", "content": "Question: what does the router stream?"}],
})
EVENTS = 8


def _event(i: int, content: str) -> bytes:
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "stand-in",
             "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class _SSE(asyncio.Protocol):
    """The SSE service: one request at a time per connection, answered as a chunked event stream."""

    HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's TCPTransport is not an asyncio.Transport subclass
        self.buf = b""
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self._answer(body)

    pause = 0.001  # seconds between the first event and the rest (0: all in one write)

    def _answer(self, body: bytes) -> None:
        usage = b'"include_usage":true' in body
        if not self.pause:
            self.transport.write(self.HEAD + _chunk(_event(0, "Hello")))
            self._rest(usage)
            return
        self.transport.write(self.HEAD + _chunk(_event(0, "Hello")))
        asyncio.get_running_loop().call_later(self.pause, self._rest, usage)

    def _rest(self, usage: bool) -> None:
        parts = [_chunk(_event(i, f" w{i}")) for i in range(1, EVENTS)]
        if usage:
            doc = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "stand-in",
                   "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": EVENTS, "total_tokens": 17}}
            parts.append(_chunk(b"data: " + orjson.dumps(doc) + b"\n\n"))
        parts.append(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        self.transport.write(b"".join(parts))


def serve_sse(port: int, pause_ms: float) -> None:
    import uvloop

    _SSE.pause = pause_ms / 1000

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_SSE, HOST, port)
        await server.serve_forever()

    uvloop.run(main())


def nginx_config(directory: Path, port: int, upstream: int) -> str:
    return "\n".join([
        "daemon off;", "worker_processes 1;", f"pid {directory}/nginx.pid;",
        f"error_log {directory}/error.log warn;", "events { worker_connections 1024; }", "http {",
        "  access_log off;", f"  client_body_temp_path {directory}/body;", f"  proxy_temp_path {directory}/proxy;",
        f"  fastcgi_temp_path {directory}/fastcgi;", f"  uwsgi_temp_path {directory}/uwsgi;",
        f"  scgi_temp_path {directory}/scgi;", "  keepalive_requests 1000000;", "  tcp_nodelay on;",
        f"  upstream sse {{ server {HOST}:{upstream}; keepalive 8; }}",
        f"  server {{ listen {HOST}:{port};",
        "    location / { proxy_pass http://sse; proxy_http_version 1.1; proxy_set_header Connection \"\";",
        "                 proxy_buffering off; proxy_request_buffering off; }",
        "  }", "}",
    ]) + "\n"


class Client:
    """One kept-alive connection; ``one()`` is (ms to the first complete event, the body's events)."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.request = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
                        f"Content-Length: {len(REQUEST)}\r\n\r\n").encode() + REQUEST

    def one(self) -> tuple[float, bytes]:
        sock = self.sock
        started = time.perf_counter()
        sock.sendall(self.request)
        buf = b""
        first = 0.0
        head = -1
        while True:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("the connection closed")
            buf += data
            if head < 0:
                head = buf.find(b"\r\n\r\n")
            if not first and head >= 0 and buf.find(b"\n\n", head + 4) >= 0:
                first = (time.perf_counter() - started) * 1000
            if buf.endswith(b"\r\n0\r\n\r\n"):
                break
        return first, dechunk(buf[head + 4:])

    def close(self) -> None:
        self.sock.close()


def dechunk(body: bytes) -> bytes:
    out: list[bytes] = []
    while True:
        line, _, rest = body.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(rest[:size])
        body = rest[size + 2:]


def main(requests: int, pause_ms: float, block: int = 1, shuffle: bool = True, seed: int = 1,
         by_predecessor: bool = False) -> dict[str, Any]:
    sse_port = free_port()
    service = subprocess.Popen([sys.executable, __file__, "--serve-sse", str(sse_port), "--pause-ms", str(pause_ms)])
    ways: dict[str, list[float]] = {}
    after: dict[tuple[str, str], list[float]] = {}  # (way, the way just before it): times
    mismatches = 0
    with temp_dir("gr-ttfb-") as directory:
        nginx_port = free_port()
        conf = directory / "nginx.conf"
        conf.write_text(nginx_config(directory, nginx_port, sse_port))
        nginx = subprocess.Popen([NGINX_BIN, "-p", str(directory), "-c", str(conf)],
                                 stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        base = f"http://{HOST}:{sse_port}"
        openai_graph = {"nodes": {"root": {"routerType": "Sequence",
                                           "steps": [{"serviceUrl": base + "/v1/chat/completions"}]}}}
        plain_graph = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": base + "/stream"}]}}}
        routers = [RouterProcess(openai_graph).start(), RouterProcess(plain_graph).start()]
        try:
            if not wait_port(sse_port) or not wait_port(nginx_port):
                raise RuntimeError("the SSE service or nginx did not start")
            clients = {
                "direct": Client(sse_port, "/v1/chat/completions"),
                "nginx (proxy_buffering off)": Client(nginx_port, "/v1/chat/completions"),
                "router, OpenAI step": Client(routers[0].port, "/"),
                "router, plain step": Client(routers[1].port, "/"),
            }
            ways = {name: [] for name in clients}
            for _ in range(50):  # warm every path's connections
                for client in clients.values():
                    client.one()
            reference = clients["direct"].one()[1]
            rng = random.Random(seed)
            order = list(clients.items())
            previous = "none"
            for _ in range(requests // block):
                if shuffle:
                    rng.shuffle(order)
                for name, client in order:
                    for _ in range(block):
                        first, body = client.one()
                        ways[name].append(first)
                        after.setdefault((name, previous), []).append(first)
                        previous = name
                        if body != reference:
                            mismatches += 1
            for client in clients.values():
                client.close()
        finally:
            for router in routers:
                router.stop()
            nginx.terminate()
            nginx.wait(5)
            service.terminate()
            service.wait(5)
    direct = percentile(ways["direct"], 50)
    nginx_added = percentile(ways["nginx (proxy_buffering off)"], 50) - direct
    rows = [[name, round(percentile(v, 50), 3), round(percentile(v, 99), 3),
             round(percentile(v, 50) - direct, 3) if name != "direct" else ""] for name, v in ways.items()]
    print_table(["time to first event (ms)", "p50", "p99", "added at p50"], rows,
                title=f"{requests} streamed completions each way, one kept-alive connection each")
    result: dict[str, Any] = {"test": "ttfb", "requests": requests, "pause_ms": pause_ms, "block": block,
                              "order": "shuffled" if shuffle else "fixed",
                              "machine": machine_info(),
                              "direct_p50_ms": direct, "nginx_added_p50_ms": nginx_added,
                              "mismatched_streams": mismatches}
    for name, key in (("router, OpenAI step", "router_openai"), ("router, plain step", "router_plain")):
        added = percentile(ways[name], 50) - direct
        result[f"{key}_added_p50_ms"] = added
        result[f"{key}_vs_nginx"] = added / nginx_added if nginx_added > 0 else None
        print(f"{name}: adds {added:.3f} ms at p50, nginx adds {nginx_added:.3f} ms: "
              f"{added / nginx_added if nginx_added > 0 else float('nan'):.2f}x (target <= 2x)")
    if by_predecessor:
        print_table(["way", "right after", "requests", "p50 (ms)"],
                    [[way, before, len(v), f"{percentile(v, 50):.3f}"]
                     for (way, before), v in sorted(after.items()) if before != "none"],
                    title="time to first event by the way that ran just before")
    print(f"streams that differed from the direct one: {mismatches} of {4 * requests}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="200 requests")
    parser.add_argument("--pause-ms", type=float, default=1.0,
                        help="the service's pause after the first event (0: the whole stream in one write)")
    parser.add_argument("--block", type=int, default=1,
                        help="requests in a row on one way before the next (1: every request alternates)")
    parser.add_argument("--fixed-order", action="store_true",
                        help="every round in the same order (direct, nginx, the routers), not a shuffled one")
    parser.add_argument("--by-predecessor", action="store_true",
                        help="also each way's p50 by the way that ran just before it")
    parser.add_argument("--serve-sse", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sse:
        serve_sse(args.serve_sse, args.pause_ms)
    else:
        emit_json(main(200 if args.quick else args.requests, args.pause_ms, args.block, not args.fixed_order,
                       by_predecessor=args.by_predecessor))
