"""Reading graph documents: ``--graph-json`` text and YAML/JSON files.

A file may hold a full InferenceGraph resource, a multi-document YAML stream with one
InferenceGraph in it (other kinds are skipped), or a bare spec (a mapping with
``nodes``). Shape errors name the file, the line and the field.

A graph file a person wrote (:func:`load_graph_file`) is read strictly: an unknown or
misspelt field is an error (with "did you mean"), and so are the other authoring rules
of :mod:`graph_router.validation`. What a controller hands over (``--graph-json``, the
resolved file ``serve --reload`` follows) is read as KServe reads it: unknown fields are
ignored with a warning, since a newer KServe may add some.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pydantic
import yaml

from .errors import GraphError
from .spec import (
    API_VERSION,
    KIND,
    InferenceGraph,
    InferenceGraphSpec,
    InferenceRouter,
    InferenceStep,
    ObjectMeta,
    RouterTimeouts,
)
from .validation import Finding, Source, attach_source, did_you_mean, line_of, warnings

__all__ = ["DEFAULT_GRAPH_NAME", "dotted", "line_of", "load_graph_file", "load_graph_json", "load_graph_text"]

logger = logging.getLogger(__name__)

DEFAULT_GRAPH_NAME = "graph"


def load_graph_json(text: str, name: str | None = None) -> InferenceGraph:
    """A spec exactly as KServe's controller passes it in ``--graph-json``."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise GraphError(f"--graph-json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GraphError("--graph-json must be a JSON object (an InferenceGraph spec)")
    return _from_mapping(data, origin="--graph-json", name=name, locate=None, strict=False)


def load_graph_file(path: str | Path, name: str | None = None, *, strict: bool = True) -> InferenceGraph:
    """A graph from a YAML or JSON file (resource, multi-document stream, or bare spec).

    ``strict`` (the default): the authoring rules apply, as to any file a person wrote.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise GraphError(f"{p}: cannot read graph file: {reason}") from exc
    return load_graph_text(text, origin=str(p), name=name, strict=strict)


def load_graph_text(text: str, origin: str, name: str | None = None, *, strict: bool = False) -> InferenceGraph:
    """Parse YAML/JSON text holding a graph; ``origin`` names it in error messages.

    Lenient by default: text comes from a controller (``serve --reload``, the sidecar's
    own check); ``strict=True`` for files a person wrote.
    """
    if origin.endswith(".json") or (strict and text.lstrip().startswith("{")):
        # YAML accepts what JSON does not (trailing commas, comments, single quotes):
        # a JSON file must be JSON.
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise GraphError(f"{origin}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from exc
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
    return _from_mapping(chosen, origin=origin, name=name, locate=node, strict=strict)


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
    data: dict[str, Any], origin: str, name: str | None, locate: yaml.Node | None, strict: bool
) -> InferenceGraph:
    is_resource = "spec" in data or "kind" in data or "apiVersion" in data
    fields = unknown_fields(data, is_resource)
    field_lines = [_located(f, origin, locate) for f in fields] if strict else []
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
            raise GraphError("\n".join([*field_lines, _describe(exc, origin, (), locate)])) from exc
    else:
        try:
            spec = InferenceGraphSpec.model_validate(data)
        except pydantic.ValidationError as exc:
            raise GraphError("\n".join([*field_lines, _describe(exc, origin, ("spec",), locate)])) from exc
        graph = InferenceGraph(spec=spec, metadata=ObjectMeta(name=name or DEFAULT_GRAPH_NAME))
    if name is not None or graph.metadata.name is None:
        meta = graph.metadata.model_copy(update={"name": name or graph.metadata.name or DEFAULT_GRAPH_NAME})
        graph = graph.model_copy(update={"metadata": meta})
    source = Source(origin, locate, ("spec",) if is_resource else (), strict, fields)
    attach_source(graph, source)
    if not strict:
        for warning in warnings(graph):
            logger.warning("%s (ignored)", warning)
    return graph


def _located(finding: Finding, origin: str, locate: yaml.Node | None) -> str:
    line = line_of(locate, finding.loc)
    return f"{origin}:{line}: {finding.text}" if line else f"{origin}: {finding.text}"


def _aliases(model: type[pydantic.BaseModel]) -> tuple[str, ...]:
    return tuple(f.alias or n for n, f in model.model_fields.items())


# Kubernetes' ObjectMeta: a resource read back from a cluster carries all of these.
_METADATA = (
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
)
_RESOURCE = ("apiVersion", "kind", "metadata", "spec", "status")


def unknown_fields(data: dict[str, Any], is_resource: bool) -> list[Finding]:
    """Every key the InferenceGraph schema does not define, located from the document's root.

    ``status`` is not checked: a person does not write it, and a cluster's may be newer.
    """
    found: list[Finding] = []

    def check(obj: Any, known: Sequence[str], loc: tuple[int | str, ...]) -> None:
        if not isinstance(obj, dict):
            return
        for key in obj:
            if str(key) not in known:
                field = dotted((*loc, str(key)))
                found.append(Finding(
                    (*loc, str(key)),
                    f"{field}: unknown field (expected one of: {', '.join(known)}){did_you_mean(str(key), known)}",
                    from_root=True,
                ))

    spec_loc: tuple[int | str, ...] = ()
    spec: Any = data
    if is_resource:
        check(data, _RESOURCE, ())
        check(data.get("metadata"), _METADATA, ("metadata",))
        spec_loc, spec = ("spec",), data.get("spec")
    check(spec, _aliases(InferenceGraphSpec), spec_loc)
    if not isinstance(spec, dict):
        return found
    check(spec.get("routerTimeouts"), _aliases(RouterTimeouts), (*spec_loc, "routerTimeouts"))
    nodes = spec.get("nodes")
    if isinstance(nodes, dict):
        for node_name, node in nodes.items():
            node_loc = (*spec_loc, "nodes", str(node_name))
            check(node, _aliases(InferenceRouter), node_loc)
            steps = node.get("steps") if isinstance(node, dict) else None
            if isinstance(steps, list):
                for i, step in enumerate(steps):
                    check(step, _aliases(InferenceStep), (*node_loc, "steps", i))
    return found


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
