"""A graph compiled once into an immutable plan; the request path only executes it.

Compilation validates the graph, resolves every step's target (URL or child node),
compiles conditions and precomputes Splitter weights, so serving a request does no
configuration lookups. A new graph is a new plan, swapped in as one reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from . import gjson
from .errors import GraphValidationError
from .spec import ROOT_NODE, InferenceGraph, InferenceRouter, RouterType
from .validation import step_label, validate

# KServe's defaults for spec.routerTimeouts, in seconds.
DEFAULT_SERVER_READ = 60.0
DEFAULT_SERVER_WRITE = 60.0
DEFAULT_SERVER_IDLE = 180.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """spec.routerTimeouts resolved to seconds (service_client None: no limit)."""

    server_read: float = DEFAULT_SERVER_READ
    server_write: float = DEFAULT_SERVER_WRITE
    server_idle: float = DEFAULT_SERVER_IDLE
    service_client: float | None = None


@dataclass(frozen=True, slots=True, eq=False)
class StepPlan:
    """One step, ready to run: exactly one of ``url`` and ``node`` is set."""

    index: int
    label: str
    name: str | None
    hard: bool
    use_response: bool
    map_predictions: bool
    condition: gjson.Path | None
    weight: int
    url: str | None
    service_name: str | None
    node: NodePlan | None

    @property
    def target(self) -> str:
        """What the step calls, for messages and telemetry."""
        if self.node is not None:
            return f"node:{self.node.name}"
        return self.service_name or self.url or ""


@dataclass(frozen=True, slots=True, eq=False)
class NodePlan:
    """One node: its kind and steps; ``weight_bounds`` are the Splitter's running sums."""

    name: str
    kind: RouterType
    steps: tuple[StepPlan, ...]
    weight_bounds: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class GraphPlan:
    """A whole graph, compiled; ``root`` is where every request starts."""

    name: str
    root: NodePlan
    nodes: Mapping[str, NodePlan]
    timeouts: Timeouts
    graph: InferenceGraph = field(repr=False)


def compile_graph(
    graph: InferenceGraph, services: Mapping[str, str] | None = None, *, require_urls: bool = True
) -> GraphPlan:
    """Validate and compile; ``services`` maps serviceName to URL for local runs.

    ``require_urls=False`` accepts steps that name a service without a URL (a resource
    checked before the controller resolves it); such a plan is for inspection, not serving.

    Raises GraphValidationError listing every problem: a graph that fails is never served.
    """
    name = graph.metadata.name or "graph"
    problems = validate(graph)
    if not problems and require_urls:
        problems = _unresolved(graph, services)
    if problems:
        raise GraphValidationError(name, problems)
    built: dict[str, NodePlan] = {}
    for node_name in graph.spec.nodes:
        _build_node(node_name, graph, services or {}, built)
    rt = graph.spec.router_timeouts
    timeouts = Timeouts()
    if rt is not None:
        timeouts = Timeouts(
            server_read=float(rt.server_read) if rt.server_read else DEFAULT_SERVER_READ,
            server_write=float(rt.server_write) if rt.server_write else DEFAULT_SERVER_WRITE,
            server_idle=float(rt.server_idle) if rt.server_idle else DEFAULT_SERVER_IDLE,
            service_client=float(rt.service_client) if rt.service_client else None,
        )
    return GraphPlan(
        name=name,
        root=built[ROOT_NODE],
        nodes=MappingProxyType(built),
        timeouts=timeouts,
        graph=graph,
    )


def _unresolved(graph: InferenceGraph, services: Mapping[str, str] | None) -> list[str]:
    """Steps that name a service but have no URL to call."""
    problems = []
    for node_name, node in graph.spec.nodes.items():
        for i, step in enumerate(node.steps):
            if step.service_name and not step.service_url and step.service_name not in (services or {}):
                problems.append(
                    f"node {node_name!r} {step_label(i, step)}: serviceName {step.service_name!r} has no "
                    f"URL: run the controller, or map it with --service {step.service_name}=URL"
                )
    return problems


def _build_node(
    name: str, graph: InferenceGraph, services: Mapping[str, str], built: dict[str, NodePlan]
) -> NodePlan:
    if name in built:
        return built[name]
    node: InferenceRouter = graph.spec.nodes[name]
    steps = []
    for i, step in enumerate(node.steps):
        child = _build_node(step.node_name, graph, services, built) if step.node_name else None
        url = None
        if child is None:
            url = services.get(step.service_name or "") or step.service_url
        steps.append(
            StepPlan(
                index=i,
                label=step.name or str(i),
                name=step.name,
                hard=step.is_hard,
                use_response=step.data == "$response",
                map_predictions=bool(step.map_predictions_to_instances),
                condition=gjson.compile_path(step.condition) if step.condition else None,
                weight=step.weight or 0,
                url=url,
                service_name=step.service_name,
                node=child,
            )
        )
    bounds: list[int] = []
    total = 0
    for s in steps:
        total += s.weight
        bounds.append(total)
    plan = NodePlan(name=name, kind=node.router_type, steps=tuple(steps), weight_bounds=tuple(bounds))
    built[name] = plan
    return plan
