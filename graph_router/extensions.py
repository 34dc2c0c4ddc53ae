"""graph_router's extensions to KServe's graph, and where they live.

A cluster with KServe's CRD installed prunes spec fields its schema does not know, so
extensions live in one annotation of the InferenceGraph, ``graph-router.io/extensions``,
whose value is a YAML (or JSON) document. Annotations survive pruning, travel with the
resource through ``kubectl apply`` and GitOps, and read the same in local files::

    metadata:
      annotations:
        graph-router.io/extensions: |
          deadlineSeconds: 30          # one deadline for the whole request
          steps:
            root/generate:             # <node>/<step name or index>
              request: {...}           # a JSON template for the step's request
              v2OutputsToInputs: true  # Open Inference Protocol outputs -> inputs
              policy: {timeoutSeconds: 20, retries: 2}

KServe's own router ignores the annotation, so a graph with extensions still deploys
there (without them). Mistakes are reported with the annotation and field named.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from .errors import GraphError
from .llm.config import BudgetsConfig, Fallback
from .security.models import HeaderPolicy, LoggerSpec, TLSSpec
from .spec import InferenceGraph

ANNOTATION = "graph-router.io/extensions"


class _Strict(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class V2Mapping(_Strict):
    """Open Inference Protocol: the previous answer's ``outputs`` become ``inputs``."""

    rename: dict[str, str] = Field(default_factory=dict, description="output name -> input name")
    only: list[str] | None = Field(default=None, description="keep only these outputs (by output name)")


class StepPolicy(_Strict):
    """How one step is called: its own timeout, and retries for steps safe to repeat.

    retries apply only on a transport error or a status in ``retryOn``; each waits
    ``backoffSeconds * 2**attempt`` (capped at ``maxBackoffSeconds``) with full jitter,
    and never past the request's deadline.
    """

    timeout_seconds: float | None = Field(default=None, alias="timeoutSeconds", gt=0)
    retries: int = Field(default=0, ge=0, le=10)
    retry_on: list[int] = Field(default_factory=lambda: [502, 503, 504], alias="retryOn")
    backoff_seconds: float = Field(default=0.05, alias="backoffSeconds", ge=0)
    max_backoff_seconds: float = Field(default=2.0, alias="maxBackoffSeconds", ge=0)


class Affinity(_Strict):
    """Which replica answers: the same key goes to the same endpoint (its caches stay warm).

    ``key``: a GJSON path into the step's request body (cut to ``prefixChars``);
    ``header``: a request header's value instead (session pinning). Exactly one.
    """

    key: str | None = None
    prefix_chars: int | None = Field(default=None, alias="prefixChars", gt=0)
    header: str | None = None

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> Affinity:
        if (self.key is None) == (self.header is None):
            raise ValueError("give exactly one of key and header")
        if self.key is not None:
            from . import gjson

            try:
                gjson.compile_path(self.key)
            except ValueError as exc:
                raise ValueError(f"key {self.key!r} is not a GJSON path: {exc}") from None
        return self


class MirrorSpec(_Strict):
    """A share of the step's requests also sent to a candidate; its answers are only compared."""

    service_url: str = Field(alias="serviceUrl")
    percent: float = Field(default=100.0, ge=0, le=100)
    timeout_seconds: float = Field(default=30.0, alias="timeoutSeconds", gt=0)

    @pydantic.field_validator("service_url")
    @classmethod
    def _callable(cls, url: str) -> str:
        from .validation import step_url_problem

        problem = step_url_problem(url)
        if problem is not None:
            raise ValueError(problem)
        return url


class StepExtension(_Strict):
    """Everything graph_router adds to one step."""

    request: Any = None
    v2_outputs_to_inputs: bool | V2Mapping = Field(default=False, alias="v2OutputsToInputs")
    policy: StepPolicy | None = None
    tls: TLSSpec | None = None  # calling this https:// step (graph_router/security/tls.py)
    openai: bool | None = None  # an OpenAI step whatever its URL (graph_router/llm)
    fallback: list[Fallback] = Field(default_factory=list)  # tried in order before the first byte
    affinity: Affinity | None = None  # graph_router/endpoints.py
    balance: Literal["leastRequest", "roundRobin"] = "leastRequest"  # without affinity, over several endpoints
    mirror: MirrorSpec | None = None  # graph_router/mirror.py


class GraphExtensions(_Strict):
    """The annotation's document."""

    deadline_seconds: float | None = Field(default=None, alias="deadlineSeconds", gt=0)
    steps: dict[str, StepExtension] = Field(default_factory=dict)
    budgets: BudgetsConfig | None = None  # per-tenant request rate and tokens (graph_router/llm/budget.py)
    headers: HeaderPolicy | None = None  # graph_router/security/headers.py
    tls: TLSSpec | None = None  # for every https:// step of the graph (a step's own wins)
    logger: LoggerSpec | None = None  # graph_router/payload_logger.py


def read_extensions(graph: InferenceGraph) -> GraphExtensions:
    """The graph's extensions (empty when it has none); GraphError names what is wrong."""
    text = graph.metadata.annotations.get(ANNOTATION)
    if text is None or not text.strip():
        return GraphExtensions()
    where = f"annotation {ANNOTATION}"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise GraphError(f"{where}{line}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return GraphExtensions()
    if not isinstance(data, dict):
        raise GraphError(f"{where}: expected a mapping with 'steps' and/or 'deadlineSeconds'")
    try:
        return GraphExtensions.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            problems.append(f"{where}: {field}: {err['msg']}")
        raise GraphError("\n".join(problems)) from exc
