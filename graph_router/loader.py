"""Reading graph documents: ``--graph-json`` text and YAML/JSON files.

A file may hold a full InferenceGraph resource, a multi-document YAML stream with one
InferenceGraph in it (other kinds are skipped), or a bare spec (a mapping with
``nodes``). Shape errors name the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pydantic
import yaml

from .errors import GraphError
from .spec import API_VERSION, KIND, InferenceGraph, InferenceGraphSpec, ObjectMeta

DEFAULT_GRAPH_NAME = "graph"


def load_graph_json(text: str, name: str | None = None) -> InferenceGraph:
    """A spec exactly as KServe's controller passes it in ``--graph-json``."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise GraphError(f"--graph-json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GraphError("--graph-json must be a JSON object (an InferenceGraph spec)")
    return _from_mapping(data, origin="--graph-json", name=name, locate=None)


def load_graph_file(path: str | Path, name: str | None = None) -> InferenceGraph:
    """A graph from a YAML or JSON file (resource, multi-document stream, or bare spec)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(f"{p}: cannot read graph file: {exc}") from exc
    return load_graph_text(text, origin=str(p), name=name)


def load_graph_text(text: str, origin: str, name: str | None = None) -> InferenceGraph:
    """Parse YAML/JSON text holding a graph; ``origin`` names it in error messages."""
    try:
        nodes = [n for n in yaml.compose_all(text, Loader=yaml.SafeLoader) if n is not None]
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        problem = getattr(exc, "problem", None) or str(exc)
        raise GraphError(f"{where}: not valid YAML/JSON: {problem}") from exc
    docs = [d for d in docs if d is not None]
    if not docs:
        raise GraphError(f"{origin}: the file holds no document")
    chosen = _choose_document(docs, origin)
    index = docs.index(chosen)
    node = nodes[index] if index < len(nodes) else None
    return _from_mapping(chosen, origin=origin, name=name, locate=node)


def _choose_document(docs: Sequence[Any], origin: str) -> dict[str, Any]:
    graphs = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(graphs) > 1:
        raise GraphError(f"{origin}: holds {len(graphs)} InferenceGraph documents; keep one per file")
    if graphs:
        return graphs[0]
    if len(docs) == 1 and isinstance(docs[0], dict):
        return docs[0]
    raise GraphError(f"{origin}: no InferenceGraph document found (expected kind: {KIND}, or a bare spec)")


def _from_mapping(
    data: dict[str, Any], origin: str, name: str | None, locate: yaml.Node | None
) -> InferenceGraph:
    is_resource = "spec" in data or "kind" in data or "apiVersion" in data
    if is_resource:
        kind = data.get("kind", KIND)
        if kind != KIND:
            raise GraphError(f"{origin}: kind is {kind!r}, expected {KIND!r}")
        api = data.get("apiVersion", API_VERSION)
        if api != API_VERSION:
            raise GraphError(f"{origin}: apiVersion is {api!r}, expected {API_VERSION!r}")
        if not isinstance(data.get("spec"), dict):
            raise GraphError(f"{origin}: an InferenceGraph resource needs a 'spec' mapping")
        try:
            graph = InferenceGraph.model_validate(data)
        except pydantic.ValidationError as exc:
            raise GraphError(_describe(exc, origin, (), locate)) from exc
    else:
        try:
            spec = InferenceGraphSpec.model_validate(data)
        except pydantic.ValidationError as exc:
            raise GraphError(_describe(exc, origin, ("spec",), locate)) from exc
        graph = InferenceGraph(spec=spec, metadata=ObjectMeta(name=name or DEFAULT_GRAPH_NAME))
    if name is not None or graph.metadata.name is None:
        meta = graph.metadata.model_copy(update={"name": name or graph.metadata.name or DEFAULT_GRAPH_NAME})
        graph = graph.model_copy(update={"metadata": meta})
    return graph


def _describe(
    exc: pydantic.ValidationError,
    origin: str,
    prefix: tuple[str, ...],
    locate: yaml.Node | None,
) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        field = dotted(prefix + loc)
        line = line_of(locate, loc)
        where = f"{origin}:{line}" if line else origin
        got = err.get("input")
        got_text = f" (got {got!r})" if not isinstance(got, dict | list) and got is not None else ""
        lines.append(f"{where}: {field}: {err['msg']}{got_text}")
    return "\n".join(lines)


def dotted(loc: Sequence[int | str]) -> str:
    """``("spec", "nodes", "root", "steps", 0)`` as ``spec.nodes.root.steps[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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
