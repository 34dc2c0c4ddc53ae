"""Test-suite and services files: their models, and loading them with errors for people.

A suite names a graph, the stub services that stand in for its models and the cases to
run. Everything a human can get wrong is caught here, before any case runs, and each
mistake is reported as ``FILE:LINE: field: what is wrong (what was expected)``:
shape errors from the models, GJSON paths that do not parse, stubs or expected calls
naming a service the graph does not have.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .. import gjson
from ..errors import GraphError, GraphRouterError
from ..loader import dotted, load_graph_file
from ..loader import line_of as loader_line_of
from ..plan import compile_graph
from ..spec import InferenceGraph
from ..validation import urlsplit_safe

Loc = tuple[int | str, ...]


class SuiteError(GraphRouterError):
    """A suite or services file that cannot be used; the message names file, line and field."""


class _Strict(BaseModel):
    """Suite files are ours: unknown keys are typos, so they are refused (unlike graph specs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def given(self, name: str) -> bool:
        """Whether the file set this field (``body: null`` is set; an absent key is not)."""
        return name in self.model_fields_set


class Answer(_Strict):
    """One answer of a stub: a fixed body, an echo, or a failure, optionally late."""

    status: int = Field(default=200, ge=100, le=599)
    body: Any = None
    text: str | None = None
    echo: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    delay: float = Field(default=0.0, ge=0, le=600)
    fail: Literal["reset", "refuse"] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Answer:
        kinds = [
            k for k in ("body", "text", "echo", "fail")
            if self.given(k) and getattr(self, k) is not False
        ]
        if len(kinds) > 1:
            raise ValueError(f"give only one of body, text, echo, fail (got {', '.join(kinds)})")
        return self


class StubSpec(Answer):
    """A stand-in service: one answer for every call, a sequence of answers, or a real URL.

    A plain string in the file is a URL: the service is called for real, not recorded.
    """

    sequence: list[Answer] | None = None
    url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _url_shorthand(cls, data: Any) -> Any:
        return {"url": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _sequence_or_url_alone(self) -> StubSpec:
        answer_fields = [k for k in Answer.model_fields if self.given(k)]
        for alone in ("sequence", "url"):
            if self.given(alone) and answer_fields:
                raise ValueError(f"{alone} stands alone: move {', '.join(answer_fields)} into it or drop it")
        if self.given("sequence") and self.given("url"):
            raise ValueError("give sequence or url, not both")
        if self.sequence is not None and not self.sequence:
            raise ValueError("sequence needs at least one answer")
        if any(a.fail == "refuse" for a in self.sequence or ()):
            raise ValueError("fail: refuse is for a whole stub (its URL refuses connections); in a sequence use reset")
        for url in self.url.split(",") if self.url is not None else ():  # URL1,URL2: a service's replicas
            if urlsplit_safe(url) is None:
                raise ValueError(f"url {url!r} is not an http(s) URL")
        return self

    @property
    def is_stub(self) -> bool:
        """False for a real service given by URL."""
        return self.url is None


class RequestSpec(_Strict):
    """The request a case sends: a JSON body, or raw text, and headers."""

    body: Any = None
    text: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _body_or_text(self) -> RequestSpec:
        if self.given("body") and self.given("text"):
            raise ValueError("give body or text, not both")
        return self


class BodyChecks(_Strict):
    """Checks on a body: whole-body equality (JSON or text) and GJSON paths."""

    body: Any = None
    text: str | None = None
    paths: dict[str, Any] = Field(default_factory=dict)
    exists: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _body_or_text(self) -> BodyChecks:
        if self.given("body") and self.given("text"):
            raise ValueError("give body or text, not both")
        for path in [*self.paths, *self.exists, *self.absent]:
            try:
                gjson.compile_path(path)
            except gjson.GJSONSyntaxError as exc:
                raise ValueError(f"{path!r} is not a GJSON path: {exc}") from exc
        return self


class CallExpect(BodyChecks):
    """One call a stub should have received; a plain string names the service only."""

    service: str
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_shorthand(cls, data: Any) -> Any:
        return {"service": data} if isinstance(data, str) else data


class Expect(BodyChecks):
    """What a case expects of the answer and of the calls the stubs received."""

    status: int | None = Field(default=None, ge=100, le=599)
    calls: list[CallExpect] | None = None
    ordered: bool = True


class Case(_Strict):
    """One request and what it should lead to."""

    name: str = Field(min_length=1)
    request: RequestSpec = Field(default_factory=RequestSpec)
    stubs: dict[str, StubSpec] = Field(default_factory=dict)
    expect: Expect = Field(default_factory=Expect)
    splitter_draws: list[int] = Field(default_factory=list, alias="splitterDraws")
    seed: int = 0
    timeout: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _draws_in_range(self) -> Case:
        bad = [d for d in self.splitter_draws if not 0 <= d <= 99]
        if bad:
            raise ValueError(f"splitterDraws must be 0..99 (got {bad})")
        return self


class Suite(_Strict):
    """A whole suite file."""

    graph: str = Field(min_length=1)
    name: str | None = None
    propagate_headers: str | None = Field(default=None, alias="propagateHeaders")
    stubs: dict[str, StubSpec] = Field(default_factory=dict)
    cases: list[Case] = Field(min_length=1)


class ServicesFile(pydantic.RootModel[dict[str, StubSpec]]):
    """A services file: serviceName to URL, or to a stub."""


@dataclass(frozen=True, slots=True)
class ServiceUse:
    """A step of the graph that calls a service (not a node)."""

    node: str
    step: str
    service_name: str | None
    service_url: str | None

    @property
    def key(self) -> str:
        """How stubs name it: the serviceName, else the serviceUrl."""
        return self.service_name or self.service_url or ""

    def describe(self) -> str:
        return f"node {self.node!r} step {self.step!r}"


def service_uses(graph: InferenceGraph) -> list[ServiceUse]:
    """Every step that calls a service, in node then step order."""
    uses = []
    for node_name, node in graph.spec.nodes.items():
        for i, step in enumerate(node.steps):
            if step.node_name:
                continue
            uses.append(ServiceUse(node_name, step.name or str(i), step.service_name, step.service_url))
    return uses


@dataclass(frozen=True, slots=True)
class YamlDoc:
    """A parsed YAML file that can say on which line a field is."""

    path: Path
    data: Any
    root: yaml.Node | None

    def line(self, loc: Loc) -> int:
        """1-based line of the node at ``loc``, or of its nearest existing parent."""
        return line_of(self.root, loc)

    def where(self, loc: Loc) -> str:
        return f"{self.path}:{self.line(loc)}"


@dataclass(frozen=True, slots=True)
class LoadedSuite:
    """A suite that passed every check, with its graph and a way back to file lines."""

    suite: Suite
    doc: YamlDoc
    graph: InferenceGraph
    graph_path: Path
    uses: tuple[ServiceUse, ...] = field(default=())

    @property
    def path(self) -> Path:
        return self.doc.path

    @property
    def name(self) -> str:
        return self.suite.name or self.path.name.removesuffix(".yaml").removesuffix(".suite")

    def where(self, loc: Loc) -> str:
        return self.doc.where(loc)

    def case_where(self, index: int) -> str:
        return self.doc.where(("cases", index))


def read_yaml(path: Path) -> YamlDoc:
    """One YAML document and its node tree; syntax errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: cannot read: {exc}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.composer.ComposerError as exc:
        raise SuiteError(f"{path}: holds more than one YAML document; keep one per file") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"{where}: not valid YAML: {problem}") from exc
    return YamlDoc(path, data, root)


def load_suite(path: str | Path) -> LoadedSuite:
    """Read and check a suite file and its graph; raise SuiteError listing every mistake.

    Shape, graph and service-name checks all run before anything is raised, so one run
    shows every mistake in the file, in line order.
    """
    doc = read_yaml(Path(path))
    if not isinstance(doc.data, dict):
        raise SuiteError(f"{doc.path}:1: a suite file is a mapping with graph, stubs and cases")
    problems: list[str] = []
    suite: Suite | None = None
    try:
        suite = Suite.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        problems += describe_errors(exc, doc, Suite).splitlines()
    raw_graph = doc.data.get("graph")
    graph: InferenceGraph | None = None
    graph_path = Path()
    if isinstance(raw_graph, str) and raw_graph:
        graph_path = Path(raw_graph) if Path(raw_graph).is_absolute() else (doc.path.parent / raw_graph).resolve()
        try:
            graph = load_graph_file(graph_path)
            compile_graph(graph, require_urls=False)
        except GraphError as exc:
            graph = None
            problems.append(f"{doc.where(('graph',))}: graph: {_relative(graph_path)} cannot be used:\n{exc}")
    uses = service_uses(graph) if graph is not None else []
    if graph is not None:
        problems += _reference_problems(doc, uses)
    if problems or suite is None or graph is None:
        raise SuiteError("\n".join(sorted(problems, key=_line_number)))
    return LoadedSuite(suite, doc, graph, graph_path, tuple(uses))


def load_services(path: str | Path) -> dict[str, StubSpec]:
    """A services file: each serviceName mapped to a URL (string) or a stub (mapping)."""
    doc = read_yaml(Path(path))
    if not isinstance(doc.data, dict):
        raise SuiteError(f"{doc.path}:1: a services file maps each serviceName to a URL or a stub")
    try:
        return ServicesFile.model_validate(doc.data).root
    except pydantic.ValidationError as exc:
        raise SuiteError(describe_errors(exc, doc, ServicesFile)) from exc


def _reference_problems(doc: YamlDoc, uses: Sequence[ServiceUse]) -> Iterator[str]:
    """Stubs and expected calls must name services the graph calls.

    Read from the raw document, so these are found even when the file has shape errors too.
    """
    known = sorted({u.key for u in uses} | {u.service_url for u in uses if u.service_url})
    data = doc.data
    cases = data.get("cases") if isinstance(data.get("cases"), list) else []
    stub_sets: list[tuple[Loc, Any]] = [(("stubs",), data.get("stubs"))]
    stub_sets += [(("cases", i, "stubs"), c.get("stubs")) for i, c in enumerate(cases) if isinstance(c, dict)]
    for loc, stubs in stub_sets:
        for name in stubs if isinstance(stubs, dict) else ():
            if str(name) not in known:
                yield f"{doc.where((*loc, name))}: {dotted((*loc, name))}: {_not_a_service(str(name), known)}"
    for i, case in enumerate(cases):
        expect = case.get("expect") if isinstance(case, dict) else None
        calls = expect.get("calls") if isinstance(expect, dict) else None
        for j, call in enumerate(calls if isinstance(calls, list) else ()):
            service = call.get("service") if isinstance(call, dict) else call
            at: Loc = ("cases", i, "expect", "calls", j)
            if isinstance(service, str) and service not in known:
                yield f"{doc.where(at)}: {dotted((*at, 'service'))}: {_not_a_service(service, known)}"


def _not_a_service(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{name!r} is not a service the graph calls (expected one of: {', '.join(known) or 'none'}){hint}"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------ error messages


def describe_errors(exc: pydantic.ValidationError, doc: YamlDoc, model: type[BaseModel]) -> str:
    """One line per problem: ``FILE:LINE: field: what is wrong (what was expected)``."""
    lines = []
    for err in exc.errors():
        loc = _data_loc(tuple(err["loc"]), doc.data)
        kind = err["type"]
        if kind == "extra_forbidden":
            parent, key = loc[:-1], str(loc[-1])
            allowed = _fields_at(model, parent)
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            expected = f"expected one of: {', '.join(allowed)}"
            lines.append(f"{doc.where(loc)}: {dotted(loc)}: unknown field ({expected}){hint}")
        elif kind == "missing":
            lines.append(f"{doc.where(loc[:-1])}: {dotted(loc)}: required field is missing")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            got = err.get("input")
            shown = got is None or isinstance(got, dict | list) or repr(got) in msg
            got_text = "" if shown else f" (got {got!r})"
            lines.append(f"{doc.where(loc)}: {dotted(loc) or 'file'}: {msg}{got_text}")
    return "\n".join(sorted(dict.fromkeys(lines), key=_line_number))


def _line_number(message: str) -> int:
    """The LINE of a ``FILE:LINE: ...`` message, to list problems in file order."""
    head = message.split(": ", 1)[0]
    number = head.rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else 0


def _data_loc(loc: Loc, data: Any) -> Loc:
    """``loc`` without pydantic's own parts (union and validator tags), following the data."""
    out: list[int | str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and not _is_tag(part):
            out.append(part)  # a missing or unknown key: named, though not in the data
            node = None
    return tuple(out)


def _is_tag(part: str) -> bool:
    return "[" in part or part in ("root",) or part.startswith("function-")


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """The keys the model accepts at ``loc`` (file spelling), for 'expected one of'."""
    current: Any = model
    for part in loc:
        current = _step_into(current, part)
        if current is None:
            return []
    target = _model_in(current)
    if target is None:
        return []
    return [f.alias or name for name, f in target.model_fields.items()]


def _step_into(annotation: Any, part: int | str) -> Any:
    model = _model_in(annotation)
    if model is not None and issubclass(model, pydantic.RootModel):
        annotation = model.model_fields["root"].annotation
        model = None
    if model is not None:
        for name, f in model.model_fields.items():
            if part in (name, f.alias):
                return f.annotation
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin is list and args:
        return args[0]
    return None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class in an annotation such as ``Model``, ``Model | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def line_of(node: yaml.Node | None, loc: Loc) -> int:
    """1-based line of the YAML node at ``loc`` (the key's line for mapping entries)."""
    return loader_line_of(node, loc) or 1
