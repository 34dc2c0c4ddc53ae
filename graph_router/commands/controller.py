"""``graph-router controller``: the sidecar that keeps the router's graph file resolved and current."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GraphError
from . import UsageError

if TYPE_CHECKING:
    from ..controller import ControllerSettings
    from ..controller.kube import KubeClient

URL_ENV = "GRAPH_URL"
NAMESPACE_ENV = "POD_NAMESPACE"


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "controller",
        help="watch an InferenceGraph and its InferenceServices; write the resolved graph to a file",
        description="The sidecar: list and watch the InferenceGraph NS/GRAPH and the InferenceServices of NS, "
        "write the resolved graph to --output whenever it changes (for `serve --graph FILE --reload`), and "
        "report the graph's status. Required: --name, --output, and --namespace unless "
        f"${NAMESPACE_ENV} is set.",
    )
    p.add_argument("--namespace", metavar="NS", default=os.environ.get(NAMESPACE_ENV),
                   help=f"namespace of the graph and its InferenceServices; required unless ${NAMESPACE_ENV} "
                   "is set (the Deployment sets it from the pod's namespace)")
    p.add_argument("--name", metavar="GRAPH", required=True, help="the InferenceGraph's name (required)")
    p.add_argument("--output", metavar="FILE", required=True, type=Path,
                   help="file to write the resolved graph to (what `serve --graph FILE --reload` reads; required)")
    p.add_argument("--url", metavar="URL", default=os.environ.get(URL_ENV),
                   help=f"reported as status.url (default: ${URL_ENV}; unset leaves status.url alone)")
    p.add_argument("--resync-seconds", metavar="S", type=float, default=300.0,
                   help="full relist this often, to catch anything a watch missed (default 300)")
    p.add_argument("--kubeconfig", metavar="FILE", default=None,
                   help="kubeconfig file (default: $KUBECONFIG, else the in-cluster service account)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not args.namespace:
        raise UsageError(f"give --namespace or set ${NAMESPACE_ENV}")
    if not args.resync_seconds > 0:
        raise UsageError("--resync-seconds must be positive")
    # Imported here so that `serve` never loads the kubernetes client.
    from ..controller import ControllerSettings, WatchSettings
    from ..controller.kube import KubeClient, KubeError

    settings = ControllerSettings(
        namespace=args.namespace, name=args.name, output=args.output, url=args.url or None,
        watch=WatchSettings(resync_seconds=args.resync_seconds),
    )
    try:
        kube = KubeClient.from_environment(args.kubeconfig, request_timeout=settings.watch.request_timeout,
                                           connect_timeout=settings.watch.connect_timeout)
    except KubeError as exc:
        raise GraphError(str(exc)) from exc
    try:
        asyncio.run(_run_until_signal(settings, kube))
    finally:
        kube.close()
    return 0


async def _run_until_signal(settings: ControllerSettings, kube: KubeClient) -> None:
    """Run the controller until SIGTERM/SIGINT; nothing needs draining, so stop at once."""
    from ..controller import run_controller

    task = asyncio.create_task(run_controller(settings, kube))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with suppress(asyncio.CancelledError):
        await task
