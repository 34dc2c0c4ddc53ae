"""A graph drawn as Mermaid or Graphviz dot, to read in a pull request or a README.

Both drawings come from one layout: a box per node (its name and kind), a box per step
(its name, what it calls, Hard when it is), and edges that say how the node reaches its
steps: in order with the data each gets (Sequence), first matching condition (Switch),
weight (Splitter), or all at once (Ensemble). A step that runs another node points at
that node's box with a dashed edge.

graph_router's extensions (the ``graph-router.io/extensions`` annotation) show too: a
step whose request is a template gets the edge label ``template``, a policy its timeout
and retries, a V2 outputs-to-inputs mapping its own label, a request deadline the start
box, and a step that asks its service to stream (``stream: true``) says whether its
answer streams to the client or is read whole because later steps need it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import GraphError
from ..extensions import GraphExtensions, StepExtension, StepPolicy, read_extensions
from ..spec import ROOT_NODE, InferenceGraph, InferenceStep, RouterType

FORMATS = ("mermaid", "dot")


@dataclass(frozen=True, slots=True)
class _Box:
    id: str
    lines: tuple[str, ...]
    shape: str  # "start", "node" or "step"
    hard: bool = False


@dataclass(frozen=True, slots=True)
class _Edge:
    src: str
    dst: str
    label: str = ""
    dashed: bool = False


@dataclass(slots=True)
class _Layout:
    title: str
    boxes: list[_Box] = field(default_factory=list)
    edges: list[_Edge] = field(default_factory=list)


def render(graph: InferenceGraph, fmt: str) -> str:
    """The graph in ``fmt`` ("mermaid" or "dot"), as text ending in a newline."""
    writers: dict[str, Callable[[_Layout], str]] = {"mermaid": _mermaid, "dot": _dot}
    if fmt not in writers:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return writers[fmt](_layout(graph))


def _step_extensions(graph: InferenceGraph) -> tuple[GraphExtensions, dict[tuple[str, int], StepExtension]]:
    """The annotation's step entries keyed by (node, step index); nothing when it does not parse."""
    try:
        extensions = read_extensions(graph)
    except GraphError:
        return GraphExtensions(), {}
    found: dict[tuple[str, int], StepExtension] = {}
    for key, ext in extensions.steps.items():
        node_name, _, step_key = key.partition("/")
        node = graph.spec.nodes.get(node_name)
        if node is None:
            continue
        index = next((i for i, s in enumerate(node.steps) if s.name == step_key), None)
        if index is None and step_key.isdigit() and int(step_key) < len(node.steps):
            index = int(step_key)
        if index is not None:
            found[(node_name, index)] = ext
    return extensions, found


def _answer_steps(graph: InferenceGraph) -> set[tuple[str, int]]:
    """Steps whose answer can be the graph's answer (those are streamed to the client)."""
    found: set[tuple[str, int]] = set()
    seen: set[str] = set()

    def visit(name: str) -> None:
        node = graph.spec.nodes.get(name)
        if node is None or name in seen or not node.steps:
            return
        seen.add(name)
        if node.router_type is RouterType.ENSEMBLE:
            return
        indexes = [len(node.steps) - 1] if node.router_type is RouterType.SEQUENCE else range(len(node.steps))
        for i in indexes:
            step = node.steps[i]
            if step.node_name:
                visit(step.node_name)
            else:
                found.add((name, i))

    visit(ROOT_NODE)
    return found


def _policy_text(policy: StepPolicy) -> str:
    parts = []
    if policy.timeout_seconds is not None:
        parts.append(f"timeout {policy.timeout_seconds:g}s")
    if policy.retries:
        codes = "/".join(str(c) for c in policy.retry_on)
        parts.append(f"{policy.retries} retries on errors{', ' + codes if codes else ''}")
    return "policy: " + (", ".join(parts) or "defaults")


def _asks_to_stream(request: Any) -> bool:
    return isinstance(request, dict) and request.get("stream") is True


def _layout(graph: InferenceGraph) -> _Layout:
    layout = _Layout(title=graph.metadata.name or "graph")
    names = list(graph.spec.nodes)
    node_id = {name: f"n{i}" for i, name in enumerate(names)}
    extensions, step_ext = _step_extensions(graph)
    answers = _answer_steps(graph)
    start = ["request"]
    if extensions.deadline_seconds is not None:
        start.append(f"deadline {extensions.deadline_seconds:g}s")
    layout.boxes.append(_Box("request", tuple(start), "start"))
    if ROOT_NODE in node_id:
        layout.edges.append(_Edge("request", node_id[ROOT_NODE]))
    for name in names:
        node = graph.spec.nodes[name]
        nid = node_id[name]
        kind = node.router_type
        layout.boxes.append(_Box(nid, (name, kind.value), "node"))
        previous = nid
        for i, step in enumerate(node.steps):
            sid = f"{nid}s{i}"
            ext = step_ext.get((name, i))
            lines = list(_step_lines(i, step))
            if ext is not None and ext.policy is not None:
                lines.append(_policy_text(ext.policy))
            if ext is not None and _asks_to_stream(ext.request):
                lines.append("streams to the client" if (name, i) in answers else "stream: true (read whole)")
            layout.boxes.append(_Box(sid, tuple(lines), "step", hard=step.is_hard))
            templated = ext is not None and ext.request is not None
            extra = ["template"] if templated else []
            if ext is not None and ext.v2_outputs_to_inputs:
                extra.append("v2 outputs as inputs")
            if kind is RouterType.SEQUENCE:
                # A template replaces the data the step would get ($request / $response).
                base = [] if templated else [_sequence_label(i, step)]
                layout.edges.append(_Edge(previous, sid, ", ".join([*base, *extra])))
                previous = sid
            elif kind is RouterType.SWITCH:
                layout.edges.append(_Edge(nid, sid, ", ".join(
                    [f"{i + 1}. if {step.condition or '(no condition)'}", *extra])))
            elif kind is RouterType.SPLITTER:
                layout.edges.append(_Edge(nid, sid, ", ".join([f"{step.weight or 0}%", *extra])))
            else:
                layout.edges.append(_Edge(nid, sid, ", ".join(["in parallel", *extra])))
            if step.node_name and step.node_name in node_id:
                layout.edges.append(_Edge(sid, node_id[step.node_name], "runs", dashed=True))
    return layout


def _step_lines(index: int, step: InferenceStep) -> tuple[str, ...]:
    lines = [step.name or f"step {index}"]
    if step.node_name:
        lines.append(f"node: {step.node_name}")
    elif step.service_name:
        lines.append(f"service: {step.service_name}")
    elif step.service_url:
        lines.append(f"url: {step.service_url}")
    if step.is_hard:
        lines.append("Hard")
    return tuple(lines)


def _sequence_label(index: int, step: InferenceStep) -> str:
    parts = ["$response" if step.data == "$response" and index > 0 else "$request"]
    if step.map_predictions_to_instances:
        parts.append("predictions as instances")
    if step.condition:
        parts.append(f"if {step.condition}")
    return ", ".join(parts)


# ----------------------------------------------------------------------- mermaid


def _mermaid_text(text: str) -> str:
    """Mermaid's entity escapes, so GJSON conditions (quotes, #, |) draw as written."""
    out = text.replace("#", "#35;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    return out.replace("|", "#124;")


def _mermaid(layout: _Layout) -> str:
    shapes = {"start": ('(["', '"])'), "node": ('{{"', '"}}'), "step": ('["', '"]')}
    lines = ["---", f"title: {_mermaid_text(layout.title)}", "---", "flowchart TD"]
    for box in layout.boxes:
        left, right = shapes[box.shape]
        label = "<br/>".join(_mermaid_text(line) for line in box.lines)
        lines.append(f"  {box.id}{left}{label}{right}")
    for edge in layout.edges:
        arrow = "-.->" if edge.dashed else "-->"
        label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
        lines.append(f"  {edge.src} {arrow}{label} {edge.dst}")
    hard = [b.id for b in layout.boxes if b.hard]
    lines.append("  classDef graphnode fill:#eef,stroke:#447")
    lines.append("  classDef hard stroke-width:3px,stroke:#a33")
    nodes = [b.id for b in layout.boxes if b.shape == "node"]
    if nodes:
        lines.append(f"  class {','.join(nodes)} graphnode")
    if hard:
        lines.append(f"  class {','.join(hard)} hard")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- dot


def _dot_text(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot(layout: _Layout) -> str:
    attrs = {
        "start": "shape=oval",
        "node": 'shape=hexagon, style=filled, fillcolor="#eeeeff"',
        "step": "shape=box, style=rounded",
    }
    lines = [
        f"digraph {_dot_text(layout.title)} {{",
        f"  label={_dot_text(layout.title)};",
        "  labelloc=t;",
        '  fontname="Helvetica";',
        '  node [fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for box in layout.boxes:
        extra = ', penwidth=3, color="#aa3333"' if box.hard else ""
        lines.append(f"  {box.id} [{attrs[box.shape]}, label={_dot_text(chr(10).join(box.lines))}{extra}];")
    for edge in layout.edges:
        parts = []
        if edge.label:
            parts.append(f"label={_dot_text(edge.label)}")
        if edge.dashed:
            parts.append("style=dashed")
        suffix = f" [{', '.join(parts)}]" if parts else ""
        lines.append(f"  {edge.src} -> {edge.dst}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"
