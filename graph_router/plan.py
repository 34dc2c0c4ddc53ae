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
from .conditions import Test, compile_fast
from .endpoints import StepRoute, split_endpoints
from .endpoints import annotated as annotated_endpoints
from .errors import GraphError, GraphValidationError
from .extensions import ANNOTATION, GraphExtensions, StepExtension, StepPolicy, read_extensions
from .llm.budget import Budgets
from .llm.step import LLMStep, fallback_problems
from .llm.step import build as build_llm
from .mapping import Template
from .payload_logger import StepTap
from .payload_logger import attach as attach_payload_logger
from .spec import ROOT_NODE, InferenceGraph, InferenceRouter, RouterType
from .validation import source_of, step_label, step_url_problem, validate

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
    template: Template | None = None
    fast_condition: Test | None = None  # the condition on a parsed document, when its shape allows
    v2_rename: Mapping[str, str] | None = None  # set: map the previous answer's outputs to inputs
    v2_only: list[str] | None = None
    policy: StepPolicy | None = None
    tap: StepTap | None = None  # payload logging (graph_router/payload_logger.py), set at load
    llm: LLMStep | None = None  # an OpenAI step or fallbacks (graph_router/llm); None: a plain call
    route: StepRoute | None = None  # several endpoints or a mirror (graph_router/endpoints.py); None: call url

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
    keep_answers: frozenset[str] = frozenset()  # step names later templates read ($steps.NAME)
    # A Sequence of one service call that runs as that call (no condition, template or
    # mapping; a service's failure needs no parent mapping): the executor calls it directly.
    only: StepPlan | None = None


@dataclass(frozen=True, slots=True, eq=False)
class GraphPlan:
    """A whole graph, compiled; ``root`` is where every request starts."""

    name: str
    root: NodePlan
    nodes: Mapping[str, NodePlan]
    timeouts: Timeouts
    graph: InferenceGraph = field(repr=False)
    deadline: float | None = None  # extensions' deadlineSeconds: one bound for the whole request
    budgets: Budgets | None = None  # extensions' tenant budgets, checked before the graph runs
    extensions: GraphExtensions = field(default_factory=GraphExtensions, repr=False)  # the annotation, parsed


def compile_graph(
    graph: InferenceGraph, services: Mapping[str, str] | None = None, *, require_urls: bool = True
) -> GraphPlan:
    """Validate and compile; ``services`` maps a serviceName, or a step's serviceUrl, to the URL to call
    (local runs point a graph at local services this way).

    ``require_urls=False`` accepts steps that name a service without a URL (a resource
    checked before the controller resolves it); such a plan is for inspection, not serving.

    Raises GraphValidationError listing every problem: a graph that fails is never served.
    """
    name = graph.metadata.name or "graph"
    problems = validate(graph)
    source = source_of(graph)
    # Extension problems are located at the annotation (its own lines are inside a string).
    at = source.where(("metadata", "annotations", ANNOTATION), in_spec=False) if source is not None else ""
    try:
        extensions = read_extensions(graph)
    except GraphError as exc:
        problems.extend(at + line for line in str(exc).splitlines())
        extensions = GraphExtensions()
    step_ext: dict[tuple[str, int], StepExtension] = {}
    templates: dict[tuple[str, int], Template] = {}
    replicas, replica_problems = annotated_endpoints(graph.metadata.annotations)  # the controller's EndpointSlices
    problems.extend(at + p for p in replica_problems)
    if replicas:
        services = {**replicas, **(services or {})}  # --service flags win
    for key, urls in (services or {}).items():
        for url in split_endpoints(urls):  # URL1,URL2,...: one step, several endpoints
            if step_url_problem(url) is not None:
                problems.append(f"service {key!r}: {url!r} is not an http:// or https:// (or grpc(s)://) step URL")
    if not problems:
        problems.extend(at + p for p in _attach_extensions(graph, extensions, step_ext, templates))
    if not problems and require_urls:
        problems = _unresolved(graph, services)
    if problems:
        raise GraphValidationError(name, problems)
    built: dict[str, NodePlan] = {}
    for node_name in graph.spec.nodes:
        _build_node(node_name, graph, services or {}, built, step_ext, templates)
    attach_payload_logger(built, extensions.logger, name)
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
        deadline=extensions.deadline_seconds,
        budgets=Budgets(extensions.budgets) if extensions.budgets is not None else None,
        extensions=extensions,
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


def _attach_extensions(
    graph: InferenceGraph,
    extensions: GraphExtensions,
    step_ext: dict[tuple[str, int], StepExtension],
    templates: dict[tuple[str, int], Template],
) -> list[str]:
    """Match each ``<node>/<step>`` key to a step and compile its template."""
    problems = []
    nodes = graph.spec.nodes
    for key, ext in extensions.steps.items():
        where = f"annotation {ANNOTATION}: steps.{key}"
        node_name, sep, step_key = key.partition("/")
        node = nodes.get(node_name)
        if not sep or node is None:
            problems.append(f"{where}: expected '<node>/<step name or index>' naming a node of this graph")
            continue
        index = next((i for i, s in enumerate(node.steps) if s.name == step_key), None)
        if index is None and step_key.isdigit() and int(step_key) < len(node.steps):
            index = int(step_key)
        if index is None:
            problems.append(f"{where}: node {node_name!r} has no step named {step_key!r}")
            continue
        step_ext[(node_name, index)] = ext
        problems.extend(f"{where}: {p}" for p in fallback_problems(ext.fallback))
        sequence = node.router_type is RouterType.SEQUENCE
        if ext.v2_outputs_to_inputs and not sequence:
            problems.append(f"{where}: v2OutputsToInputs needs a previous step (a Sequence node)")
        if ext.request is None:
            continue
        try:
            template = Template(ext.request)
        except ValueError as exc:
            problems.append(f"{where}: request: {exc}")
            continue
        templates[(node_name, index)] = template
        if template.uses_response and (not sequence or index == 0):
            problems.append(f"{where}: request: $response needs a previous step in a Sequence")
        earlier = {s.name for s in node.steps[:index] if s.name} if sequence else set()
        for missing in sorted(template.step_names - earlier):
            problems.append(
                f"{where}: request: $steps.{missing} is not an earlier named step of Sequence {node_name!r}"
            )
    return problems


def _build_node(
    name: str,
    graph: InferenceGraph,
    services: Mapping[str, str],
    built: dict[str, NodePlan],
    step_ext: Mapping[tuple[str, int], StepExtension],
    templates: Mapping[tuple[str, int], Template],
) -> NodePlan:
    if name in built:
        return built[name]
    node: InferenceRouter = graph.spec.nodes[name]
    steps = []
    keep: set[str] = set()
    for i, step in enumerate(node.steps):
        child = (
            _build_node(step.node_name, graph, services, built, step_ext, templates) if step.node_name else None
        )
        ext = step_ext.get((name, i))
        template = templates.get((name, i))
        if template is not None:
            keep |= template.step_names
        v2 = ext.v2_outputs_to_inputs if ext is not None else False
        url = None
        if child is None:
            url = services.get(step.service_name or "") or services.get(step.service_url or "") or step.service_url
        route = _route(name, step.name or str(i), url, ext) if url is not None else None
        if route is not None:
            url = route.url
        steps.append(
            StepPlan(
                index=i,
                label=step.name or str(i),
                name=step.name,
                hard=step.is_hard,
                use_response=step.data == "$response",
                map_predictions=bool(step.map_predictions_to_instances),
                condition=gjson.compile_path(step.condition) if step.condition else None,
                fast_condition=compile_fast(step.condition) if step.condition else None,
                weight=step.weight or 0,
                url=url,
                service_name=step.service_name,
                node=child,
                template=template,
                v2_rename=(v2.rename if not isinstance(v2, bool) else {}) if v2 else None,
                v2_only=v2.only if not isinstance(v2, bool) else None,
                policy=ext.policy if ext is not None else None,
                llm=build_llm(name, step.name or str(i), url, ext, services),
                route=route,
            )
        )
    bounds: list[int] = []
    total = 0
    for s in steps:
        total += s.weight
        bounds.append(total)
    only = steps[0] if len(steps) == 1 and node.router_type == RouterType.SEQUENCE else None
    if only is not None and (only.url is None or only.condition is not None or only.template is not None
                             or only.map_predictions or only.v2_rename is not None):
        only = None
    plan = NodePlan(
        name=name,
        kind=node.router_type,
        steps=tuple(steps),
        weight_bounds=tuple(bounds),
        keep_answers=frozenset(keep),
        only=only,
    )
    built[name] = plan
    return plan


def _route(node: str, step: str, url: str, ext: StepExtension | None) -> StepRoute | None:
    """A StepRoute for several endpoints or a mirror; None (the plain call) for one URL."""
    urls = split_endpoints(url) or [url]
    mirror = ext.mirror if ext is not None else None
    if len(set(urls)) == 1 and mirror is None:
        return None
    return StepRoute(node, step, urls, ext.affinity if ext is not None else None,
                     ext.balance if ext is not None else "leastRequest", mirror)
