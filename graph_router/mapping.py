"""Building a step's request from earlier data: templates and the V2 outputs mapping.

A template is any JSON value. Inside its strings, ``{{ SOURCE.PATH }}`` selects data
with a GJSON path from a SOURCE:

- ``$request``: the graph's original request body,
- ``$response``: the previous step's answer (Sequence only),
- ``$steps.NAME``: the answer of an earlier named step of the same Sequence.

A string that is exactly one reference takes the selected JSON value, with its type;
references inside a longer string are interpolated as text (strings unquoted, other
values as compact JSON). Templates compile once at load; rendering does no parsing of
the template and never executes code. A reference that selects nothing fails the
request, naming the step and the reference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import gjson
from .errors import RequestError

_REF = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_SOURCE = re.compile(r"^(\$request|\$response|\$steps\.([A-Za-z0-9_.\-]+?))(?:\.(.+)|\|(.+))?$")


class MappingError(RequestError):
    """A reference selected nothing: 400 when from the client's request, else 502."""


@dataclass(frozen=True, slots=True)
class Ref:
    """One ``{{ ... }}``: where to look and what to select."""

    text: str
    source: str  # "$request", "$response" or a step name
    path: gjson.Path | None  # None: the whole source

    def select(self, sources: Sources, step: str) -> Any:
        doc = sources.get(self.source)
        if doc is None:
            raise MappingError(f"step {step}: {{{{ {self.text} }}}} has no {self.source} to read", 500)
        if self.path is None:
            try:
                return orjson.loads(doc)
            except orjson.JSONDecodeError:
                return doc.decode("utf-8", "replace")
        result = self.path.get(doc)
        if not result.exists:
            status = 400 if self.source == "$request" else 502
            raise MappingError(f"step {step}: {{{{ {self.text} }}}} selected nothing", status)
        try:
            return orjson.loads(result.raw)
        except orjson.JSONDecodeError:
            return result.value()


Sources = Mapping[str, bytes]


@dataclass(frozen=True, slots=True)
class _Text:
    """A string with references inside: literal pieces and refs, alternating."""

    parts: tuple[str | Ref, ...]


def _compile_node(value: Any, refs: list[Ref]) -> Any:
    if isinstance(value, str):
        matches = list(_REF.finditer(value))
        if not matches:
            return value
        if len(matches) == 1 and matches[0].span() == (0, len(value)):
            ref = _compile_ref(matches[0].group(1))
            refs.append(ref)
            return ref
        parts: list[str | Ref] = []
        pos = 0
        for m in matches:
            if m.start() > pos:
                parts.append(value[pos : m.start()])
            ref = _compile_ref(m.group(1))
            refs.append(ref)
            parts.append(ref)
            pos = m.end()
        if pos < len(value):
            parts.append(value[pos:])
        return _Text(tuple(parts))
    if isinstance(value, dict):
        return {str(k): _compile_node(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_node(v, refs) for v in value]
    return value


def _compile_ref(text: str) -> Ref:
    m = _SOURCE.match(text)
    if m is None:
        raise ValueError(
            f"reference {{{{ {text} }}}} must start with $request, $response or $steps.NAME"
        )
    head, step_name, dotted, piped = m.groups()
    source = step_name if step_name is not None else head
    path_text = dotted if dotted is not None else (f"@this|{piped}" if piped is not None else None)
    try:
        path = gjson.compile_path(path_text) if path_text else None
    except gjson.GJSONSyntaxError as exc:
        raise ValueError(f"reference {{{{ {text} }}}}: {exc}") from exc
    return Ref(text=text, source=source, path=path)


class Template:
    """A compiled request template."""

    def __init__(self, template: Any) -> None:
        refs: list[Ref] = []
        self._root = _compile_node(template, refs)
        self.refs: tuple[Ref, ...] = tuple(refs)

    @property
    def step_names(self) -> set[str]:
        """Named steps the template reads (``$steps.NAME``)."""
        return {r.source for r in self.refs if not r.source.startswith("$")}

    @property
    def uses_response(self) -> bool:
        return any(r.source == "$response" for r in self.refs)

    def render(self, sources: Sources, step: str) -> bytes:
        """The request body, as JSON bytes."""
        return orjson.dumps(self._render(self._root, sources, step))

    def _render(self, node: Any, sources: Sources, step: str) -> Any:
        if isinstance(node, Ref):
            return node.select(sources, step)
        if isinstance(node, _Text):
            out = []
            for part in node.parts:
                if isinstance(part, str):
                    out.append(part)
                else:
                    value = part.select(sources, step)
                    out.append(value if isinstance(value, str) else orjson.dumps(value).decode())
            return "".join(out)
        if isinstance(node, dict):
            return {k: self._render(v, sources, step) for k, v in node.items()}
        if isinstance(node, list):
            return [self._render(v, sources, step) for v in node]
        return node


def v2_outputs_to_inputs(body: bytes, rename: Mapping[str, str], only: list[str] | None, step: str) -> bytes:
    """``{"outputs": [...]}`` (an Open Inference Protocol answer) as ``{"inputs": [...]}``.

    Each output keeps name (renamed if asked), shape, datatype, data and parameters.
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MappingError(f"step {step}: v2OutputsToInputs needs a JSON answer with outputs", 502) from exc
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise MappingError(f"step {step}: v2OutputsToInputs: the previous answer has no outputs list", 502)
    inputs = []
    for out in outputs:
        name = out.get("name")
        if only is not None and name not in only:
            continue
        item = {k: out[k] for k in ("name", "shape", "datatype", "parameters", "data") if k in out}
        if isinstance(name, str) and name in rename:
            item["name"] = rename[name]
        inputs.append(item)
    request: dict[str, Any] = {"inputs": inputs}
    if isinstance(doc, dict) and "id" in doc:
        request["id"] = doc["id"]
    return orjson.dumps(request)
