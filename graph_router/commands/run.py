"""``graph-router run GRAPH --data JSON|@FILE``: one request through a graph, in process.

Each serviceName is resolved from ``--service NAME=URL`` flags or a ``--services`` file
(NAME to a URL, or to a stub served on loopback), so a graph can be tried against
real local models, stubs, or a mix, without a cluster or a long-running router.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from multidict import CIMultiDict

from ..errors import GraphError, RequestError
from ..executor import Executor
from ..headers import HeaderPropagator
from ..httpserver import error_body
from ..loader import load_graph_file
from ..plan import compile_graph
from ..server import GRAPH_FAILED
from ..spec import InferenceGraph
from ..upstream import StepStream, UpstreamClient
from ..validation import warnings
from .serve import stub_specs


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "run",
        help="run one request through a graph and print the answer (exit 1 unless it is 2xx)",
        description="Run one request through GRAPH in this process and print the answer body to stdout. "
        "The exit status is 0 when the graph answered 2xx, 1 otherwise.",
    )
    p.add_argument("graph", metavar="GRAPH", help="a YAML or JSON file: an InferenceGraph resource or a bare spec")
    p.add_argument("--data", "-d", default="", metavar="JSON|@FILE",
                   help="the request body: JSON text (anything else is sent as given, with a warning), or "
                   "@FILE to send a file's bytes unchanged (@- for stdin); default: empty")
    p.add_argument("--service", action="append", default=[], metavar="NAME=URL",
                   help="URL for a serviceName, or URL=URL to send a step's serviceUrl elsewhere "
                   "(repeatable; wins over --services)")
    p.add_argument("--services", metavar="FILE",
                   help="YAML file mapping each serviceName (or serviceUrl) to a URL or to a stub (as in a "
                   "test suite)")
    p.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'",
                   help="a request header (repeatable); steps get it when PROPAGATE_HEADERS selects it")
    p.add_argument("--explain", action="store_true",
                   help="print the path taken (nodes, conditions, steps, timings) to stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    graph = load_graph_file(args.graph)
    specs = stub_specs(args)
    body = _read_data(args.data)
    if body and not args.data.startswith("@"):
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            print(f"graph-router: warning: --data is not valid JSON ({exc.msg} at character {exc.pos}); "
                  "sending it as given", file=sys.stderr)
    for warning in warnings(graph):
        print(f"graph-router: warning: {warning}", file=sys.stderr)
    headers = _parse_headers(args.header)
    return asyncio.run(_run(graph, specs, body, headers, args.explain))


async def _run(
    graph: InferenceGraph, specs: dict[str, Any], body: bytes, headers: list[tuple[str, str]], explain: bool
) -> int:
    from ..localtest.report import call_lines, explain_lines
    from ..localtest.stubs import StubServer

    steps = [s for n in graph.spec.nodes.values() for s in n.steps if not s.node_name]
    known = {s.service_name for s in steps if s.service_name} | {s.service_url for s in steps if s.service_url}
    for name in specs:
        if name not in known:
            print(f"graph-router: note: {name!r} is not a serviceName or serviceUrl of the graph; ignored",
                  file=sys.stderr)
    async with StubServer() as stubs:
        urls = stubs.configure(specs)
        plan = compile_graph(graph, urls)
        client = UpstreamClient()
        await client.start()
        try:
            record: list[dict[str, object]] | None = [] if explain else None
            selected: CIMultiDict[str] = HeaderPropagator(os.environ.get("PROPAGATE_HEADERS")).select(headers)
            started = time.perf_counter()
            try:
                answer = await Executor(client).run(plan, body, selected, record)
                status, out = answer.status, answer.body
                if answer.content_encoding is not None:
                    out = await answer.whole()  # a terminal wants the content, not gzip bytes
                elif answer.stream is not None:
                    out = await _print_stream(answer.stream)
            except RequestError as exc:
                status, out = exc.status, error_body(GRAPH_FAILED, exc.cause)
            took = (time.perf_counter() - started) * 1000
        finally:
            await client.close()
        if record is not None:
            print("path taken:", file=sys.stderr)
            for line in explain_lines(record):
                print(f"  {line}", file=sys.stderr)
            if stubs.calls:
                print("calls received by stubs:", file=sys.stderr)
                for line in call_lines(stubs.calls):
                    print(f"  {line}", file=sys.stderr)
            print(f"answer: {status} in {took:.1f} ms", file=sys.stderr)
    sys.stdout.flush()
    if out:
        sys.stdout.buffer.write(out if out.endswith(b"\n") else out + b"\n")
    sys.stdout.flush()
    return 0 if 200 <= status <= 299 else 1


def _read_data(data: str) -> bytes:
    """``--data``: the text itself, or ``@FILE`` (``@-``: stdin)."""
    if not data.startswith("@"):
        return data.encode()
    source = data[1:]
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise GraphError(f"--data {data}: cannot read: {exc.strerror or exc}") from exc


def _parse_headers(pairs: list[str]) -> list[tuple[str, str]]:
    headers = []
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise GraphError(f"--header {pair!r}: expected 'NAME: VALUE'")
        headers.append((name.strip(), value.strip()))
    return headers


async def _print_stream(stream: StepStream) -> bytes:
    """Write a streamed answer to stdout as it arrives; nothing is left to print after it."""
    try:
        async for chunk in stream:
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
    finally:
        await stream.aclose()
    return b""
