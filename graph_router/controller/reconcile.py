"""The sidecar's reconciler: graph + InferenceServices in, resolved graph file and status out.

Level-triggered: any change to the graph, or to an InferenceService the graph names,
marks the state dirty; the reconciler then works from the watch caches, not from the
event, so a missed or repeated event cannot leave it wrong. One reconcile:

1. reads the graph and checks it with the router's own rules (``validation``, ``plan``);
2. resolves every serviceName as KServe's controller does (``resolve``);
3. when the graph is valid and every service resolves, writes the resolved graph to the
   output file (only if it changed); otherwise the file keeps the last good graph;
4. patches the graph's status subresource with only what changed (``status``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import pydantic

from ..endpoints import ENDPOINTS_ANNOTATION
from ..errors import GraphError, GraphValidationError
from ..extensions import ANNOTATION as EXTENSIONS_ANNOTATION
from ..loader import load_graph_text
from ..plan import compile_graph
from ..spec import API_VERSION, KIND, InferenceGraph
from ..validation import validate
from .endpoints import endpoint_urls
from .kube import (
    CLUSTER_SERVING_RUNTIMES,
    ENDPOINT_SLICES,
    INFERENCE_GRAPHS,
    INFERENCE_SERVICES,
    SERVING_RUNTIMES,
    ApiError,
    KubeClient,
    KubeError,
)
from .output import GraphFileWriter
from .resolve import RuntimeResult, Unresolved, resolve_service, runtime_name
from .settings import ControllerSettings
from .status import Outcome, status_patch
from .watch import Watcher, backoff_delay

logger = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def parse_graph(obj: dict[str, Any]) -> tuple[InferenceGraph | None, list[str]]:
    """The graph and every rule it breaks; the status is left out (it is not ours to judge)."""
    body = {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in obj}
    try:
        graph = InferenceGraph.model_validate(body)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            problems.append(f"{where}: {err['msg']}")
        return None, problems
    return graph, validate(graph)


def service_names(graph: InferenceGraph) -> list[str]:
    """Each serviceName once, in node and step order."""
    seen: dict[str, None] = {}
    for node in graph.spec.nodes.values():
        for step in node.steps:
            if step.service_name:
                seen.setdefault(step.service_name, None)
    return list(seen)


def render(obj: dict[str, Any], namespace: str, name: str, urls: dict[str, str],
           endpoints: dict[str, list[str]] | None = None) -> bytes:
    """The resolved resource as KServe would hand it to its router: serviceUrl beside serviceName.

    A step that already has a serviceUrl keeps it, as in KServe. The extensions annotation
    is carried over (KServe's controller passes only the spec; ours passes the
    extensions too). Keys are sorted so the same graph always renders to the same bytes.
    """
    spec = copy.deepcopy(obj.get("spec") or {})
    for node in (spec.get("nodes") or {}).values():
        for step in node.get("steps") or []:
            service = step.get("serviceName")
            if service and not step.get("serviceUrl"):
                step["serviceUrl"] = urls[service]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    extensions = ((obj.get("metadata") or {}).get("annotations") or {}).get(EXTENSIONS_ANNOTATION)
    if extensions is not None:
        # graph_router's extensions live in this annotation: the router must see it too.
        metadata["annotations"] = {EXTENSIONS_ANNOTATION: extensions}
    if endpoints:  # serviceUrl -> its replicas (controller/endpoints.py), read by the router's plan
        metadata.setdefault("annotations", {})[ENDPOINTS_ANNOTATION] = orjson.dumps(
            endpoints, option=orjson.OPT_SORT_KEYS).decode()
    doc = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def check_servable(content: bytes, origin: str) -> list[str]:
    """What the router itself would reject in ``content``: the last gate before writing."""
    try:
        compile_graph(load_graph_text(content.decode("utf-8"), origin=origin))
    except GraphValidationError as exc:
        return exc.problems
    except GraphError as exc:
        return [str(exc)]
    return []


class Controller:
    """Watches one InferenceGraph and the InferenceServices of its namespace; see the module doc."""

    def __init__(self, settings: ControllerSettings, kube: KubeClient, *, rng: random.Random | None = None,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self.settings = settings
        self._kube = kube
        self._rng = rng or random.Random()
        self._clock = clock
        self._dirty = asyncio.Event()
        self.graphs = Watcher(kube, INFERENCE_GRAPHS, settings.namespace, settings.watch, self._graph_changed,
                              field_selector=f"metadata.name={settings.name}", rng=self._rng)
        self.services = Watcher(kube, INFERENCE_SERVICES, settings.namespace, settings.watch,
                                self._service_changed, rng=self._rng)
        # The replicas of each resolved URL (EndpointSlices); used once listed, never waited for.
        self.slices = Watcher(kube, ENDPOINT_SLICES, settings.namespace, settings.watch, self._slices_changed,
                              rng=self._rng)
        self.writer = GraphFileWriter(settings.output)
        self.reconciles = 0
        self.patches = 0
        # serviceNames of the graph last seen; None: not known yet, any change matters.
        self._referenced: set[str] | None = None
        self._sent: tuple[str | None, bytes] | None = None
        self._reported: object = None

    def _graph_changed(self, _name: str | None) -> None:
        self._dirty.set()

    def _slices_changed(self, _name: str | None) -> None:
        if self._referenced:
            self._dirty.set()

    def _service_changed(self, name: str | None) -> None:
        if name is None or self._referenced is None or name in self._referenced:
            self._dirty.set()

    async def run(self) -> None:
        """Watch and reconcile until cancelled."""
        logger.info("controller: watching InferenceGraph %s/%s, writing %s",
                    self.settings.namespace, self.settings.name, self.settings.output)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.graphs.run(), name="watch-inferencegraphs")
            tg.create_task(self.services.run(), name="watch-inferenceservices")
            tg.create_task(self.slices.run(), name="watch-endpointslices")
            tg.create_task(self._reconcile_loop(), name="reconcile")

    async def _reconcile_loop(self) -> None:
        failures = 0
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.settings.debounce_seconds)
            self._dirty.clear()
            if not (self.graphs.synced and self.services.synced):
                continue
            try:
                await self.reconcile()
                failures = 0
                continue
            except (KubeError, OSError) as exc:
                delay = backoff_delay(failures, self.settings.watch, self._rng)
                logger.warning("reconcile of %s/%s failed: %s; retrying in %.2fs",
                               self.settings.namespace, self.settings.name, exc, delay)
            except Exception:
                # A bug must not stop the sidecar: the router keeps its graph, we retry.
                delay = backoff_delay(failures, self.settings.watch, self._rng)
                logger.exception("reconcile of %s/%s failed unexpectedly; retrying in %.2fs",
                                 self.settings.namespace, self.settings.name, delay)
            failures += 1
            await asyncio.sleep(delay)
            self._dirty.set()

    async def reconcile(self) -> None:
        """One pass from the caches to the file and the status."""
        self.reconciles += 1
        ns, name = self.settings.namespace, self.settings.name
        obj = self.graphs.objects.get(name)
        if obj is None:
            self._referenced = set()
            self._sent = None
            self._report(("absent",), logging.WARNING,
                         "InferenceGraph %s/%s does not exist; the router keeps the graph it has", ns, name)
            return
        meta = obj.get("metadata") or {}
        generation = meta.get("generation") if isinstance(meta.get("generation"), int) else None
        graph, problems = parse_graph(obj)
        unresolved: list[Unresolved] | None = None
        urls: dict[str, str] = {}
        if graph is not None:
            unresolved = []
            names = service_names(graph)
            self._referenced = set(names)
            runtimes = await self._runtimes(names)
            for service in names:
                found = resolve_service(service, ns, self.services.objects, runtimes)
                if isinstance(found, Unresolved):
                    unresolved.append(found)
                else:
                    urls[service] = found
        if not problems and unresolved == []:
            called = {*urls.values(), *(s.service_url for n in graph.spec.nodes.values() for s in n.steps
                                        if s.service_url and not s.service_name)} if graph is not None else set()
            replicas = {url: pods for url in sorted(called) if (pods := endpoint_urls(url, ns, self.slices.objects))}
            content = render(obj, ns, name, urls, replicas)
            problems = check_servable(content, origin=f"InferenceGraph {ns}/{name}")
            if not problems:
                if await asyncio.to_thread(self.writer.write, content):
                    logger.info("wrote InferenceGraph %s/%s (generation %s) to %s",
                                ns, name, generation, self.settings.output)
        outcome = Outcome(generation, problems, unresolved, self.settings.url)
        self._report_outcome(outcome)
        await self._patch_status(obj, outcome)

    async def _runtimes(self, names: list[str]) -> dict[str, RuntimeResult]:
        """The ServingRuntimes that decide a path, read fresh each reconcile (they are not watched)."""
        wanted: list[str] = []
        for service in names:
            isvc = self.services.objects.get(service)
            if isvc is None or not ((isvc.get("status") or {}).get("address") or {}).get("url"):
                continue
            runtime = runtime_name(isvc)
            if runtime and runtime not in wanted:
                wanted.append(runtime)
        return {runtime: await asyncio.to_thread(self._read_runtime, runtime) for runtime in wanted}

    def _read_runtime(self, runtime: str) -> RuntimeResult:
        """A ServingRuntime in the namespace, else a ClusterServingRuntime, as KServe looks them up."""
        try:
            obj = self._kube.get(SERVING_RUNTIMES, self.settings.namespace, runtime)
            if obj is None:
                obj = self._kube.get(CLUSTER_SERVING_RUNTIMES, None, runtime)
        except ApiError as exc:
            return f"cannot read runtime {runtime!r}: {exc}"
        if obj is None:
            return f"No ServingRuntimes or ClusterServingRuntimes with the name: {runtime}"
        spec = obj.get("spec")
        return spec if isinstance(spec, dict) else {}

    async def _patch_status(self, obj: dict[str, Any], outcome: Outcome) -> None:
        now = self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = status_patch(obj.get("status"), outcome, now)
        if patch is None:
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        # The same change, asked again before our own patch came back through the watch,
        # is not sent twice.
        key = (rv, _fingerprint(patch))
        if key == self._sent:
            return
        await asyncio.to_thread(self._kube.patch_status, INFERENCE_GRAPHS, self.settings.namespace,
                                self.settings.name, patch)
        self._sent = key
        self.patches += 1

    def _report_outcome(self, outcome: Outcome) -> None:
        ns, name = self.settings.namespace, self.settings.name
        if outcome.problems:
            self._report(("invalid", outcome.generation, tuple(outcome.problems)), logging.ERROR,
                         "InferenceGraph %s/%s generation %s is invalid; keeping the last good graph: %s",
                         ns, name, outcome.generation, "; ".join(outcome.problems))
        elif outcome.unresolved:
            self._report(("unresolved", tuple(u.message for u in outcome.unresolved)), logging.WARNING,
                         "InferenceGraph %s/%s: not every serviceName resolves: %s",
                         ns, name, "; ".join(u.message for u in outcome.unresolved))
        else:
            self._report(("ready", outcome.generation), logging.INFO,
                         "InferenceGraph %s/%s generation %s is ready", ns, name, outcome.generation)

    def _report(self, key: object, level: int, msg: str, *args: object) -> None:
        """Log a state once, when it is entered, not on every reconcile."""
        if key != self._reported:
            self._reported = key
            logger.log(level, msg, *args)


def _fingerprint(patch: dict[str, Any]) -> bytes:
    """The patch without transition times, which differ between otherwise equal patches."""
    status = dict(patch["status"])
    if "conditions" in status:
        status["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                                for c in status["conditions"]]
    return orjson.dumps(status, option=orjson.OPT_SORT_KEYS)


async def run_controller(settings: ControllerSettings, kube: KubeClient) -> None:
    """Run the sidecar until cancelled."""
    await Controller(settings, kube).run()
