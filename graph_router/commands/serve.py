"""``graph-router serve``: the long-running router (also KServe's ``--graph-json`` entry point)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import uvloop

from ..errors import GraphError
from ..loader import load_graph_file, load_graph_json
from ..plan import GraphPlan, compile_graph
from ..settings import ServerSettings
from ..telemetry import WorkerGroup
from ..telemetry.logs import configure as configure_logs
from ..workers import WORKER_FLAG, supervise


def parse_services(pairs: list[str]) -> dict[str, str]:
    """``NAME=URL`` pairs from repeated ``--service`` flags."""
    services = {}
    for pair in pairs:
        name, sep, url = pair.partition("=")
        if not sep or not name or not url:
            raise GraphError(f"--service {pair!r}: expected NAME=URL")
        services[name] = url
    return services


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve", help="serve a graph over HTTP (the default when the first argument is an option)"
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--graph-json", help="an InferenceGraph spec as JSON (what KServe's controller passes)")
    source.add_argument("--graph", help="a YAML or JSON file: an InferenceGraph resource or a bare spec")
    p.add_argument("graph_file", nargs="?", metavar="GRAPH", help="same as --graph")
    p.add_argument("--name", help="graph name for logs and metrics (default: metadata.name, else 'graph')")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--drain-seconds", type=float, default=30.0,
                   help="after SIGTERM, keep serving with /readyz 503 this long, then close (default 30)")
    p.add_argument("--max-body-bytes", type=int, default=None, help="request body limit (default 64 MiB)")
    p.add_argument("--service", action="append", default=[], metavar="NAME=URL",
                   help="URL for a serviceName (repeatable), for graphs run outside a cluster")
    p.add_argument("--reload", action="store_true",
                   help="watch the graph file and swap in each new valid graph; until the file exists "
                        "and is valid, serve with /readyz 503 (for the controller sidecar)")
    p.add_argument("--workers", type=int, default=1,
                   help="router processes sharing the port (SO_REUSEPORT); default 1")
    p.add_argument(WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-format", choices=("json", "text"), default="json",
                   help="log lines as JSON objects (default) or text; one line per graph request at INFO")
    p.add_argument("--no-explain", dest="explain", action="store_false",
                   help="ignore X-Graph-Explain request headers (the answer would show service URLs)")
    p.set_defaults(func=run)


def load_plan(args: argparse.Namespace) -> GraphPlan:
    """The plan named by --graph-json, --graph or the positional file."""
    services = parse_services(args.service)
    if args.graph_json is not None:
        return compile_graph(load_graph_json(args.graph_json, name=args.name), services)
    path = args.graph or args.graph_file
    if path is None:
        raise GraphError("give --graph-json JSON, --graph FILE or a graph file")
    return compile_graph(load_graph_file(path, name=args.name), services)


def run(args: argparse.Namespace) -> int:
    configure_logs(args.log_format)
    if args.workers < 1:
        raise GraphError("--workers must be at least 1")
    if args.workers > 1 and not args.worker_process:
        if not args.reload:
            load_plan(args)  # a graph that cannot be served fails here, once, not in every worker
        return supervise(args.argv, args.workers)
    reloader = None
    if args.reload:
        path = args.graph or args.graph_file
        if path is None:
            raise GraphError("--reload needs a graph file (--graph FILE), not --graph-json")
        from ..reload import GraphFileReloader

        reloader = GraphFileReloader(path, name=args.name, services=parse_services(args.service))
        plan: GraphPlan | None = reloader.load_initial()
    else:
        plan = load_plan(args)
    settings = ServerSettings.from_env(
        host=args.host, port=args.port, drain_seconds=args.drain_seconds, max_body_bytes=args.max_body_bytes,
        explain_header=args.explain,
    )
    from ..server import serve

    try:
        uvloop.run(
            serve(
                settings,
                plan,
                reuse_port=args.worker_process,
                background=reloader.run if reloader is not None else None,
                workers=WorkerGroup.from_env(os.environ) if args.worker_process else None,
            )
        )
    except OSError as exc:
        # Typically the port is taken or the address is not ours: say so, no traceback.
        print(f"graph-router: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
