"""The rules a graph must pass before it is served.

KServe's admission webhook rules, plus the ones whose absence crashes or hangs KServe's
router: ``nodeName`` cycles and dangling references, nodes with no steps, Switch steps
without a condition, conditions that are not GJSON, step URLs that are not http(s).
Every problem is collected (not just the first) and names its node and step.
"""

from __future__ import annotations

import re
from collections.abc import KeysView
from urllib.parse import urlsplit

from . import gjson
from .spec import ROOT_NODE, InferenceGraph, InferenceStep, RouterType

GRAPH_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def step_label(index: int, step: InferenceStep) -> str:
    """How messages and metrics name a step: its name, else its index."""
    return f"step {index} ({step.name!r})" if step.name else f"step {index}"


def validate(graph: InferenceGraph) -> list[str]:
    """Every rule the graph breaks, as readable messages; empty when it is well-formed."""
    problems: list[str] = []
    name = graph.metadata.name
    if name is not None and not GRAPH_NAME.match(name):
        problems.append(
            f"graph name {name!r} must be lower-case letters, digits and '-', start with a letter "
            "and end with a letter or digit"
        )
    nodes = graph.spec.nodes
    if ROOT_NODE not in nodes:
        problems.append(f"no node named {ROOT_NODE!r}: the graph runs from 'root'")
    for node_name, node in nodes.items():
        where = f"node {node_name!r}"
        if not node.steps:
            problems.append(f"{where}: a {node.router_type.value} node needs at least one step")
        seen: dict[str, int] = {}
        for i, step in enumerate(node.steps):
            at = f"{where} {step_label(i, step)}"
            if step.name:
                if step.name in seen:
                    problems.append(f"{at}: step name {step.name!r} is already used by step {seen[step.name]}")
                seen.setdefault(step.name, i)
            problems.extend(_check_target(at, step, nodes.keys()))
            if step.condition:
                try:
                    gjson.compile_path(step.condition)
                except gjson.GJSONSyntaxError as exc:
                    problems.append(f"{at}: condition {step.condition!r} is not valid GJSON: {exc}")
            if node.router_type is RouterType.SWITCH and not step.condition:
                problems.append(f"{at}: a Switch step needs a condition")
            if step.weight is not None and step.weight < 0:
                problems.append(f"{at}: weight must not be negative")
        if node.router_type is RouterType.SPLITTER and node.steps:
            missing = [i for i, s in enumerate(node.steps) if s.weight is None]
            if missing:
                problems.append(f"{where}: every Splitter step needs a weight (missing on step(s) {missing})")
            else:
                total = sum(s.weight or 0 for s in node.steps)
                if total != 100:
                    problems.append(f"{where}: Splitter weights sum to {total}, they must sum to 100")
    problems.extend(_cycles(graph))
    return problems


def _check_target(at: str, step: InferenceStep, node_names: KeysView[str]) -> list[str]:
    targets = [t for t in ("nodeName", "serviceName", "serviceUrl") if _target(step, t)]
    # KServe's controller adds serviceUrl beside serviceName when it resolves a graph, so
    # that pair is the resolved form of one target, not two targets.
    one = len(targets) == 1 or set(targets) == {"serviceName", "serviceUrl"}
    if not targets:
        return [f"{at}: needs one of nodeName, serviceName or serviceUrl"]
    if not one:
        return [f"{at}: names {', '.join(targets)}; a step names exactly one target"]
    problems = []
    if step.node_name is not None and step.node_name not in node_names:
        problems.append(f"{at}: nodeName {step.node_name!r} is not a node of this graph")
    if step.service_url:
        parts = urlsplit(step.service_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"{at}: serviceUrl {step.service_url!r} is not an http(s) URL")
    return problems


def _target(step: InferenceStep, which: str) -> bool:
    value = {"nodeName": step.node_name, "serviceName": step.service_name, "serviceUrl": step.service_url}[which]
    return bool(value)


def _cycles(graph: InferenceGraph) -> list[str]:
    """Each nodeName cycle once, as ``a -> b -> a``."""
    nodes = graph.spec.nodes
    edges = {
        name: [s.node_name for s in node.steps if s.node_name and s.node_name in nodes]
        for name, node in nodes.items()
    }
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    found: list[str] = []
    seen_cycles: set[frozenset[str]] = set()

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for nxt in edges[name]:
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    found.append("nodeName cycle: " + " -> ".join(repr(c) for c in cycle))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[name] = 2

    for name in nodes:
        if name not in state:
            visit(name, [])
    return found
