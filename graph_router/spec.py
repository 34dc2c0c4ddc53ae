"""Pydantic models of KServe's ``serving.kserve.io/v1alpha1`` InferenceGraph resource.

Field names are the wire (camelCase) names, so a spec read from ``--graph-json`` or a
cluster round-trips unchanged. Unknown fields are ignored, as KServe's Go decoder
ignores them: a newer controller must not break an older router.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "serving.kserve.io/v1alpha1"
KIND = "InferenceGraph"
ROOT_NODE = "root"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class RouterType(StrEnum):
    """The four node kinds KServe defines."""

    SEQUENCE = "Sequence"
    SPLITTER = "Splitter"
    ENSEMBLE = "Ensemble"
    SWITCH = "Switch"


class Dependency(StrEnum):
    """Whether a step's non-2xx answer stops its node (Hard) or is passed on (Soft)."""

    SOFT = "Soft"
    HARD = "Hard"


class InferenceStep(_Model):
    """One step of a node: a service to call or a node to run."""

    name: str | None = None
    node_name: str | None = Field(default=None, alias="nodeName")
    service_name: str | None = Field(default=None, alias="serviceName")
    service_url: str | None = Field(default=None, alias="serviceUrl")
    data: str | None = None
    map_predictions_to_instances: bool | None = Field(default=None, alias="mapPredictionsToInstances")
    weight: int | None = None
    condition: str | None = None
    dependency: Dependency | None = None

    @property
    def is_hard(self) -> bool:
        return self.dependency is Dependency.HARD


class InferenceRouter(_Model):
    """A node: how its steps are combined."""

    router_type: RouterType = Field(alias="routerType")
    steps: list[InferenceStep] = Field(default_factory=list)


class RouterTimeouts(_Model):
    """Integer seconds; None means KServe's default (60/60/180, no client limit)."""

    server_read: int | None = Field(default=None, alias="serverRead", ge=0)
    server_write: int | None = Field(default=None, alias="serverWrite", ge=0)
    server_idle: int | None = Field(default=None, alias="serverIdle", ge=0)
    service_client: int | None = Field(default=None, alias="serviceClient", ge=0)


class InferenceGraphSpec(_Model):
    """The ``spec`` of an InferenceGraph: what KServe passes to its router as ``--graph-json``."""

    nodes: dict[str, InferenceRouter] = Field(default_factory=dict)
    resources: dict[str, Any] | None = None
    affinity: dict[str, Any] | None = None
    timeout: int | None = None
    router_timeouts: RouterTimeouts | None = Field(default=None, alias="routerTimeouts")
    min_replicas: int | None = Field(default=None, alias="minReplicas")
    max_replicas: int | None = Field(default=None, alias="maxReplicas")
    scale_target: int | None = Field(default=None, alias="scaleTarget")
    scale_metric: str | None = Field(default=None, alias="scaleMetric")
    tolerations: list[dict[str, Any]] | None = None
    node_selector: dict[str, str] | None = Field(default=None, alias="nodeSelector")
    node_name: str | None = Field(default=None, alias="nodeName")
    service_account_name: str | None = Field(default=None, alias="serviceAccountName")


class Condition(_Model):
    """A Knative-style status condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    severity: str | None = None
    last_transition_time: str | None = Field(default=None, alias="lastTransitionTime")


class InferenceGraphStatus(_Model):
    """What the controller reports about a graph."""

    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    url: str | None = None
    deployment_mode: str | None = Field(default=None, alias="deploymentMode")


class ObjectMeta(_Model):
    """The part of Kubernetes metadata graph_router reads."""

    name: str | None = None
    namespace: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class InferenceGraph(_Model):
    """The whole resource."""

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: InferenceGraphSpec
    status: InferenceGraphStatus | None = None
