"""``graph-router serve``: the long-running router (also KServe's ``--graph-json`` entry point)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import uvloop

from ..errors import GraphError
from ..loader import load_graph_file, load_graph_json
from ..plan import GraphPlan, compile_graph
from ..settings import ServerSettings
from ..spec import InferenceGraph
from ..telemetry import WorkerGroup
from ..telemetry.logs import configure as configure_logs
from ..validation import urlsplit_safe, warnings
from ..workers import READY_FD_ENV, WORKER_FLAG, supervise
from . import UsageError

if TYPE_CHECKING:
    from ..localtest.suite import StubSpec
    from ..server import Router

logger = logging.getLogger("graph_router.serve")


def check_url(url: str, what: str) -> str:
    """``url`` when it is an http(s) URL with a host; else a one-line GraphError naming ``what``."""
    if urlsplit_safe(url) is None:
        hint = f" (did you mean http://{url}?)" if "://" not in url else ""
        raise GraphError(f"{what}: {url!r} is not an http:// or https:// URL{hint}")
    return url


def parse_services(pairs: list[str]) -> dict[str, str]:
    """``NAME=URL`` (a serviceName) or ``URL=URL`` (a step's serviceUrl) pairs from ``--service`` flags."""
    services = {}
    for pair in pairs:
        if pair.startswith(("http://", "https://")):
            # URL=URL: split at the '=' that starts the second URL (the first may hold '=' in its query).
            cut = min((i for i in (pair.find("=http://", 1), pair.find("=https://", 1)) if i > 0), default=-1)
            name, url = (pair[:cut], pair[cut + 1 :]) if cut > 0 else (pair, "")
            if not url:
                raise GraphError(f"--service {pair!r}: expected NAME=URL or URL=URL")
            check_url(name, f"--service {pair}")
        else:
            name, sep, url = pair.partition("=")
            if not sep or not name or not url:
                raise GraphError(f"--service {pair!r}: expected NAME=URL or URL=URL")
        for one in url.split(","):  # URL1,URL2,...: the replicas of one service (graph_router/endpoints.py)
            if not one.startswith(("grpc://", "grpcs://")):
                check_url(one, f"--service {pair}")
        services[name] = url
    return services


def port_number(text: str) -> int:
    """``--port``: 1-65535 (0, any free port, is for tests and is refused here too)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "serve",
        help="serve a graph over HTTP (the default when the first argument is an option)",
        description="Serve a graph over HTTP until SIGTERM or Ctrl-C: every path but /readyz and GET /metrics "
        "runs the graph from its root node. On a signal /readyz answers 503 for --drain-seconds, then the "
        "router stops; a second signal stops it at once. For local use: --host 127.0.0.1 --drain-seconds 0.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--graph-json", metavar="JSON",
                        help="an InferenceGraph spec as JSON (what KServe's controller passes); read as KServe "
                        "reads it: unknown fields are warned about, not refused")
    source.add_argument("--graph", metavar="FILE",
                        help="a YAML or JSON file: an InferenceGraph resource or a bare spec")
    p.add_argument("graph_file", nargs="?", metavar="GRAPH", help="same as --graph")
    p.add_argument("--name", help="graph name for logs and metrics (default: metadata.name, else 'graph')")
    p.add_argument("--host", default="0.0.0.0",
                   help="address to listen on (default 0.0.0.0, every interface; 127.0.0.1 for local use)")
    p.add_argument("--port", type=port_number, default=8080, help="port to listen on, 1-65535 (default 8080)")
    p.add_argument("--drain-seconds", type=non_negative_float, default=30.0,
                   help="after SIGTERM, keep serving with /readyz 503 this long, then close (default 30, as "
                   "KServe; 0 for local use)")
    p.add_argument("--max-body-bytes", type=positive_int, default=None, metavar="BYTES",
                   help="request body limit (default 64 MiB)")
    p.add_argument("--max-buffered-bytes", type=positive_int, default=None, metavar="BYTES",
                   help="request bodies buffered at once across all connections; past it a new body gets 503 "
                   "with Retry-After (default 512 MiB)")
    p.add_argument("--service", action="append", default=[], metavar="NAME=URL",
                   help="URL for a serviceName, or URL=URL to send a step's serviceUrl elsewhere "
                   "(repeatable; wins over --services), for graphs run outside a cluster")
    p.add_argument("--services", metavar="FILE",
                   help="YAML file mapping each serviceName (or serviceUrl) to a URL or to a stub, as in a test "
                   "suite: stubs are served on 127.0.0.1, so the graph answers with no model running")
    p.add_argument("--reload", action="store_true",
                   help="watch the graph file and swap in each new valid graph; until the file exists "
                        "and is valid, serve with /readyz 503 (for the controller sidecar, whose resolved "
                        "file is read as --graph-json is)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="router processes sharing the port (SO_REUSEPORT); default 1")
    p.add_argument(WORKER_FLAG, action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--log-format", choices=("json", "text"), default="json",
                   help="log lines as JSON objects (default) or text; one line per graph request at INFO")
    p.add_argument("--no-explain", dest="explain", action="store_false",
                   help="ignore X-Graph-Explain request headers (the answer would show service URLs)")
    p.add_argument("--grpc-port", type=port_number, default=None, metavar="N",
                   help="also serve the Open Inference Protocol v2 over gRPC on this port (8081 by convention; "
                   "off by default): ModelInfer with the graph's name runs it")
    from ..security.cli import add_security_flags

    add_security_flags(p)
    p.set_defaults(func=run)


def _graph(args: argparse.Namespace) -> InferenceGraph:
    if args.graph_json is not None:
        return load_graph_json(args.graph_json, name=args.name)
    path = args.graph or args.graph_file
    if path is None:
        raise UsageError("give --graph-json JSON, --graph FILE or a graph file")
    return load_graph_file(path, name=args.name)


def stub_specs(args: argparse.Namespace) -> dict[str, StubSpec]:
    """--services FILE, then --service flags over it; empty when neither is given."""
    from ..localtest.suite import StubSpec, SuiteError, load_services

    try:
        specs = load_services(args.services) if args.services else {}
    except SuiteError as exc:
        raise GraphError(str(exc)) from exc
    for name, url in parse_services(args.service).items():
        specs[name] = StubSpec(url=url)
    return specs


def load_plan(args: argparse.Namespace, urls: Mapping[str, str] | None = None) -> GraphPlan:
    """The plan named by --graph-json, --graph or the positional file; ``urls`` default to --service."""
    graph = _graph(args)
    plan = compile_graph(graph, parse_services(args.service) if urls is None else urls)
    if not args.worker_process and (args.graph_json is None):
        for warning in warnings(graph):  # --graph-json's are logged by the loader
            logger.warning("%s", warning)
    return plan


def run(args: argparse.Namespace) -> int:
    configure_logs(args.log_format)
    if args.graph_file is not None and (args.graph is not None or args.graph_json is not None):
        raise UsageError("give the graph once: GRAPH, --graph FILE or --graph-json JSON")
    specs = stub_specs(args)
    stubbed = any(s.is_stub for s in specs.values())
    if args.reload and stubbed:
        raise GraphError("--services with stubs cannot be combined with --reload (give URLs, or drop --reload)")
    if args.workers > 1 and not args.worker_process:
        if not args.reload:
            # A graph that cannot be served fails here, once, not in every worker.
            load_plan(args, {n: s.url or "http://127.0.0.1/" for n, s in specs.items()})
        return supervise(args.argv, args.workers, drain_seconds=args.drain_seconds)
    reloader = None
    if args.reload:
        path = args.graph or args.graph_file
        if path is None:
            raise UsageError("--reload needs a graph file (--graph FILE), not --graph-json")
        from ..reload import GraphFileReloader

        reloader = GraphFileReloader(path, name=args.name, services={n: s.url or "" for n, s in specs.items()})
    from ..security.cli import security_settings, upstream_settings

    settings = ServerSettings.from_env(
        host=args.host, port=args.port, drain_seconds=args.drain_seconds, max_body_bytes=args.max_body_bytes,
        max_buffered_bytes=args.max_buffered_bytes,
        explain_header=args.explain, security=security_settings(args), upstream=upstream_settings(args),
    )
    try:
        uvloop.run(_main(args, settings, specs, reloader))
    except OSError as exc:
        # Typically the port is taken or the address is not ours: say so, no traceback.
        print(f"graph-router: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


async def _main(args: argparse.Namespace, settings: ServerSettings, specs: dict[str, StubSpec],
                reloader: Any) -> None:
    """Serve until stopped; with stubs in ``specs``, a stub server runs beside the router."""
    from ..localtest.stubs import StubServer
    from ..server import serve

    stubs = StubServer() if any(s.is_stub for s in specs.values()) else None
    if stubs is not None:
        await stubs.start()
    try:
        urls = stubs.configure(specs) if stubs is not None else {n: s.url or "" for n, s in specs.items()}
        if stubs is not None and not args.worker_process:
            for name, url in urls.items():
                if specs[name].is_stub:
                    logger.info("stub %s answers at %s", name, url)
        plan = reloader.load_initial() if reloader is not None else load_plan(args, urls)
        main = asyncio.current_task()
        assert main is not None
        with suppress(asyncio.CancelledError):
            await serve(
                settings,
                plan,
                reuse_port=args.worker_process,
                background=_with_grpc(args, settings, _beside(reloader, main, settings, tell=not args.worker_process)),
                workers=WorkerGroup.from_env(os.environ) if args.worker_process else None,
            )
    finally:
        if stubs is not None:
            await stubs.close()


def _beside(reloader: Any, main: asyncio.Task[Any], settings: ServerSettings, *,
            tell: bool) -> Callable[[Router], Coroutine[Any, Any, None]]:
    """What runs beside the server once it listens: readiness, signals, the reloader."""

    async def background(router: Router) -> None:
        _report_ready()
        _take_signals(router, main, settings.drain_seconds, tell)
        if reloader is not None:
            await reloader.run(router)

    return background


def _with_grpc(
    args: argparse.Namespace, settings: ServerSettings, background: Callable[[Router], Coroutine[Any, Any, None]]
) -> Callable[[Router], Coroutine[Any, Any, None]]:
    """``background``, with the gRPC front (graph_router.grpc) beside it when --grpc-port is given."""
    if args.grpc_port is None:
        return background
    from ..grpc.front import with_grpc

    return with_grpc(background, settings.host, args.grpc_port)


def _report_ready() -> None:
    """Tell the ``--workers`` supervisor that this worker listens (it gives up on one that never does)."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    with suppress(OSError, ValueError):
        os.write(int(fd), b"1")
        os.close(int(fd))


def draining_hint(seconds: float) -> str:
    """What a person at a terminal is told, once, when a drain starts."""
    return (f"graph-router: draining for {seconds:g}s so load balancers stop sending (/readyz answers 503); "
            "press Ctrl-C again to stop now, or start with --drain-seconds 0 to skip the drain")


def _take_signals(router: Router, main: asyncio.Task[Any], drain_seconds: float, tell: bool) -> None:
    """SIGTERM/SIGINT: drain, then stop; a second one during the drain stops at once.

    These handlers replace the server's own, which only ever start the drain: the first
    signal does what the server would (readyz 503, then stop after ``drain_seconds``);
    a second cancels the wait, and the server's shutdown runs right away.
    """
    loop = asyncio.get_running_loop()
    count = 0

    def on_signal() -> None:
        nonlocal count
        count += 1
        if count == 1:
            router.shutting_down = True
            if router.http_server is not None:
                router.http_server.start_draining()
            logger.info("stopping: /readyz answers 503; draining for %gs", drain_seconds)
            if tell and drain_seconds > 0 and sys.stderr.isatty():
                print(draining_hint(drain_seconds), file=sys.stderr, flush=True)
            loop.call_later(drain_seconds, main.cancel)
        elif count == 2:
            logger.info("second signal: stopping now")
            main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

