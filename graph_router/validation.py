"""The rules a graph must pass before it is served.

KServe's admission webhook rules, plus the ones whose absence crashes or hangs KServe's
router: ``nodeName`` cycles and dangling references, nodes with no steps, Switch steps
without a condition, conditions that are not GJSON, step URLs that are not http(s).
Every problem is collected (not just the first) and names its node and step; a graph
read from a file also names the file and line (see :class:`Source`).

Files a person writes are held to the authoring rules too (``Source.strict``): unknown
fields, a ``data`` other than ``$request``/``$response``, and a step naming more than
one target are errors. What a controller resolved (``--graph-json``, ``serve --reload``,
a cluster object) only gets warnings for them: a newer KServe may add fields, and its
controller writes ``serviceUrl`` beside ``serviceName``.
"""

from __future__ import annotations

import difflib
import re
import weakref
from collections.abc import Iterable, KeysView, Sequence
from dataclasses import dataclass, field

import yaml

from . import gjson
from .spec import ROOT_NODE, InferenceGraph, InferenceStep, RouterType

GRAPH_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DATA_VALUES = ("$request", "$response")

Loc = tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem or warning, with where in the spec it is (``loc`` is relative to ``spec``)."""

    loc: Loc
    text: str
    from_root: bool = False  # loc starts at the document's root, not at its spec


@dataclass(slots=True)
class Source:
    """Where a graph was read from, so messages can name the file and line.

    root: the YAML node of the document (None for ``--graph-json``); spec_path: the keys
    from that node to the spec (``("spec",)`` for a resource, ``()`` for a bare spec).
    fields: unknown fields the loader found, located from the document's root.
    """

    origin: str
    root: yaml.Node | None = None
    spec_path: Loc = ()
    strict: bool = False
    fields: list[Finding] = field(default_factory=list)

    def line(self, loc: Loc) -> int | None:
        """1-based line of ``loc`` (from the document's root), or of its nearest parent."""
        return line_of(self.root, loc)

    def where(self, loc: Loc, *, in_spec: bool = True) -> str:
        """``file:line: `` for a finding at ``loc``; ``file: `` when the line is unknown."""
        full = (*self.spec_path, *loc) if in_spec else loc
        line = self.line(full)
        return f"{self.origin}:{line}: " if line else f"{self.origin}: "


# Graphs are frozen pydantic models whose equality compares private attributes too, so
# their sources are kept beside them, keyed by identity, for as long as they live.
_SOURCES: dict[int, Source] = {}


def attach_source(graph: InferenceGraph, source: Source) -> InferenceGraph:
    """Remember where ``graph`` came from (messages about it then name the file and line)."""
    key = id(graph)
    if key not in _SOURCES:
        weakref.finalize(graph, _SOURCES.pop, key, None)
    _SOURCES[key] = source
    return graph


def source_of(graph: InferenceGraph) -> Source | None:
    """The graph's :class:`Source`, or None for a graph built in code or from a cluster."""
    return _SOURCES.get(id(graph))


def step_label(index: int, step: InferenceStep) -> str:
    """How messages and metrics name a step: its name, else its index."""
    return f"step {index} ({step.name!r})" if step.name else f"step {index}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` when one of ``choices`` is close to ``word``, else empty."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.lower() == word.lower()]
    return f"; did you mean {close[0]!r}?" if close else ""


def validate(graph: InferenceGraph) -> list[str]:
    """Every rule the graph breaks, as readable messages; empty when it is well-formed."""
    source = source_of(graph)
    strict = source is not None and source.strict
    found = list(source.fields) if strict and source is not None else []
    rules, authoring, pairs = _check(graph)
    found.extend(rules)
    if strict:
        found.extend(authoring)
        found.extend(pairs)
    return _format(found, source)


def warnings(graph: InferenceGraph) -> list[str]:
    """What is allowed but probably wrong: conditions that never match a JSON object and,
    for graphs held to KServe's leniency (not strict), what a strict file would reject."""
    source = source_of(graph)
    found: list[Finding] = []
    if source is not None and not source.strict:
        found.extend(source.fields)
        found.extend(_check(graph)[1])
    for node_name, node in graph.spec.nodes.items():
        for i, step in enumerate(node.steps):
            hint = never_matches(step.condition) if step.condition else None
            if hint is not None:
                found.append(Finding(("nodes", node_name, "steps", i, "condition"),
                                     f"node {node_name!r} {step_label(i, step)}: {hint}"))
    return _format(found, source)


def _format(found: Sequence[Finding], source: Source | None) -> list[str]:
    if source is None:
        return [f.text for f in found]
    located = []
    for f in found:
        full = f.loc if f.from_root else (*source.spec_path, *f.loc)
        located.append((source.line(full) or 0, source.where(f.loc, in_spec=not f.from_root) + f.text))
    return [text for _, text in sorted(located, key=lambda pair: pair[0])]  # in file order


def _check(graph: InferenceGraph) -> tuple[list[Finding], list[Finding], list[Finding]]:
    """(the rules every graph must pass, the authoring rules only files are held to, and
    steps naming serviceName and serviceUrl: KServe's resolved form, an error only in a file)."""
    problems: list[Finding] = []
    authoring: list[Finding] = []
    pairs: list[Finding] = []
    name = graph.metadata.name
    if name is not None and not GRAPH_NAME.match(name):
        problems.append(Finding(("metadata", "name"), from_root=True, text=
            f"graph name {name!r} must be lower-case letters, digits and '-', start with a letter "
            "and end with a letter or digit"
        ))
    nodes = graph.spec.nodes
    if ROOT_NODE not in nodes:
        problems.append(Finding(("nodes",), f"no node named {ROOT_NODE!r}: the graph runs from 'root'"
                                f"{did_you_mean(ROOT_NODE, nodes)}"))
    for node_name, node in nodes.items():
        where = f"node {node_name!r}"
        node_loc: Loc = ("nodes", node_name)
        if not node.steps:
            problems.append(Finding(node_loc, f"{where}: a {node.router_type.value} node needs at least one step"))
        seen: dict[str, int] = {}
        for i, step in enumerate(node.steps):
            at = f"{where} {step_label(i, step)}"
            loc: Loc = (*node_loc, "steps", i)
            if step.name:
                if step.name in seen:
                    problems.append(Finding((*loc, "name"),
                                            f"{at}: step name {step.name!r} is already used by step {seen[step.name]}"))
                seen.setdefault(step.name, i)
            target_problems, pair = _check_target(at, loc, step, nodes.keys())
            problems.extend(target_problems)
            pairs.extend(pair)
            if step.data is not None and step.data not in DATA_VALUES:
                authoring.append(Finding((*loc, "data"),
                    f"{at}: data {step.data!r} is neither $request nor $response (KServe sends the "
                    f"node's input for any other value){did_you_mean(step.data, DATA_VALUES)}"))
            if step.condition:
                try:
                    gjson.compile_path(step.condition)
                except gjson.GJSONSyntaxError as exc:
                    problems.append(Finding((*loc, "condition"),
                                            f"{at}: condition {step.condition!r} is not valid GJSON: {exc}"))
            if node.router_type is RouterType.SWITCH and not step.condition:
                problems.append(Finding(loc, f"{at}: a Switch step needs a condition"))
            if step.weight is not None and step.weight < 0:
                problems.append(Finding((*loc, "weight"), f"{at}: weight must not be negative"))
        if node.router_type is RouterType.SPLITTER and node.steps:
            missing = [i for i, s in enumerate(node.steps) if s.weight is None]
            if missing:
                problems.append(Finding(node_loc,
                    f"{where}: every Splitter step needs a weight (missing on step(s) {missing})"))
            else:
                total = sum(s.weight or 0 for s in node.steps)
                if total != 100:
                    problems.append(Finding(node_loc,
                                            f"{where}: Splitter weights sum to {total}, they must sum to 100"))
    problems.extend(_cycles(graph))
    return problems, authoring, pairs


def _check_target(
    at: str, loc: Loc, step: InferenceStep, node_names: KeysView[str]
) -> tuple[list[Finding], list[Finding]]:
    targets = [t for t in ("nodeName", "serviceName", "serviceUrl") if _target(step, t)]
    if not targets:
        return [Finding(loc, f"{at}: needs one of nodeName, serviceName or serviceUrl")], []
    # KServe's controller adds serviceUrl beside serviceName when it resolves a graph, so
    # that pair is the resolved form of one target: accepted, except in a file a person wrote.
    resolved_pair = set(targets) == {"serviceName", "serviceUrl"}
    if len(targets) > 1 and not resolved_pair:
        return [Finding(loc, f"{at}: names {', '.join(targets)}; a step names exactly one target")], []
    authoring = []
    if resolved_pair:
        authoring.append(Finding((*loc, "serviceUrl"),
            f"{at}: names serviceName and serviceUrl; a step names exactly one of nodeName, serviceName "
            "and serviceUrl (KServe's admission rule; only a controller-resolved graph has both)"))
    problems = []
    if step.node_name is not None and step.node_name not in node_names:
        problems.append(Finding((*loc, "nodeName"),
            f"{at}: nodeName {step.node_name!r} is not a node of this graph"
            f"{did_you_mean(step.node_name, node_names)}"))
    if step.service_url:
        wrong = step_url_problem(step.service_url)
        if wrong is not None:
            problems.append(Finding((*loc, "serviceUrl"), f"{at}: serviceUrl {wrong}"))
    return problems, authoring


def step_url_problem(url: str) -> str | None:
    """None for a URL a step can call (http, https, grpc, grpcs), else what is wrong, quoting it."""
    if url.startswith(("grpc://", "grpcs://")):
        from .grpc.urls import problem

        return problem(url)
    if urlsplit_safe(url) is None:
        return f"{url!r} is not an http(s) URL (nor a grpc:// or grpcs:// one)"
    return None


def urlsplit_safe(url: str) -> tuple[str, str] | None:
    """(scheme, host) of an http(s) URL with a host; None for anything else."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return parts.scheme, host


def _target(step: InferenceStep, which: str) -> bool:
    value = {"nodeName": step.node_name, "serviceName": step.service_name, "serviceUrl": step.service_url}[which]
    return bool(value)


def _cycles(graph: InferenceGraph) -> list[Finding]:
    """Each nodeName cycle once, as ``a -> b -> a``, located at the step that closes it."""
    nodes = graph.spec.nodes
    edges = {
        name: [(i, s.node_name) for i, s in enumerate(node.steps) if s.node_name and s.node_name in nodes]
        for name, node in nodes.items()
    }
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    found: list[Finding] = []
    seen_cycles: set[frozenset[str]] = set()

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        stack.append(name)
        for i, nxt in edges[name]:
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                key = frozenset(cycle)
                if key not in seen_cycles:
                    seen_cycles.add(key)
                    found.append(Finding(("nodes", name, "steps", i, "nodeName"),
                                         "nodeName cycle: " + " -> ".join(repr(c) for c in cycle)))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[name] = 2

    for name in nodes:
        if name not in state:
            visit(name, [])
    return found


# ------------------------------------------------------------ conditions that never match

_OPERATOR = re.compile(r"==|!=|<=|>=|!%|[<>%]")


def _components(path: str) -> list[str]:
    """The path's top-level components (split on ``.`` and ``|`` outside brackets and quotes)."""
    parts: list[str] = []
    depth = 0
    quote = False
    start = 0
    i = 0
    while i < len(path):
        c = path[i]
        if c == "\\":
            i += 2
            continue
        if quote:
            quote = c != '"'
        elif c == '"':
            quote = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c in ".|" and depth == 0:
            parts.append(path[start:i])
            start = i + 1
        i += 1
    parts.append(path[start:])
    return parts


def never_matches(condition: str) -> str | None:
    """Why a condition can never match, with the form that works; None when it looks fine.

    GJSON compares only inside a query, ``#(...)``. Outside one, ``lang=="fr"`` is a key
    lookup for a key literally named ``lang=="fr"``, which no JSON object has.
    """
    parts = _components(condition)
    for i, part in enumerate(parts):
        if not part or part[0] in "#@[{!" or not _OPERATOR.search(part):
            continue
        before = ".".join(parts[:i])
        after = "".join(f".{p}" for p in parts[i + 1 :])
        if not before:
            fix = f"'[@this].#({part}){after}'"
        else:
            fix = (f"'{before}.#({part}){after}' when {before} is an array, "
                   f"'[{before}].#({part}){after}' when it is an object")
        return (f"condition {condition!r} never matches a JSON object: outside a query, "
                f"{part!r} is a key lookup for a key with that literal name. To test the field, write {fix}")
    return None


def line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the YAML node at ``loc``, or of its nearest existing parent."""
    if node is None:
        return None
    best = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    best = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            best = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return best
