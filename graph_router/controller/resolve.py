"""serviceName -> URL, by the rules KServe's InferenceGraph controller applies.

URL = the InferenceService's ``status.address.url`` + a path chosen by protocol:
``/v1/models/<model>:predict`` (v1) or ``/v2/models/<model>/infer`` (v2), nothing for
any other protocol or for a multi-model-server predictor. The protocol is the
transformer's when there is one, else the predictor's, where a ``model`` predictor
naming a runtime takes the runtime's first v1/v2 protocol. The model name is the
``--model_name`` argument where a container gives one (or ``MLSERVER_MODEL_NAME``),
else the InferenceService's name. No ``status.address.url``: not ready, not resolved.
One extension: a predictor declaring ``protocolVersion: grpc-v2`` (to which KServe gives
a bare URL) resolves to ``grpc://<host>/v2/models/<model>/infer`` (``grpcs`` for https).

Pure functions over the objects as the API server returns them (dicts); the
reconciler fetches the objects and any ServingRuntime named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

PROTOCOL_V1 = "v1"
PROTOCOL_V2 = "v2"
MODEL_NAME_ARG = "--model_name"
MLSERVER_MODEL_NAME_ENV = "MLSERVER_MODEL_NAME"
PROTOCOL_ENV = "PROTOCOL"
MULTI_MODEL_SERVER_ENV = "MULTI_MODEL_SERVER"
TRANSFORMER_CONTAINER = "transformer-container"

# PredictorSpec implementations in the order KServe picks the first one set; a custom
# ``containers`` predictor comes after all of them.
FRAMEWORKS: tuple[str, ...] = (
    "xgboost", "pytorch", "triton", "sklearn", "tensorflow", "onnx",
    "pmml", "lightgbm", "paddle", "huggingface", "model",
)
# Frameworks whose protocol defaults to v2 when ``protocolVersion`` is not set.
V2_DEFAULT_FRAMEWORKS = frozenset({"triton"})

Reason = Literal["NotFound", "NotReady", "RuntimeError"]

# What the reconciler found for a named runtime: its spec, or why it could not be read.
RuntimeResult = Mapping[str, Any] | str


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A serviceName with no URL, and why: the condition message quotes ``message``."""

    service: str
    reason: Reason
    message: str


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _env(container: Mapping[str, Any], name: str) -> str | None:
    for var in _list(container.get("env")):
        if isinstance(var, dict) and var.get("name") == name:
            return str(var.get("value") or "")
    return None


def model_name_from_args(args: Sequence[Any]) -> str:
    """KServe's reading of ``--model_name=NAME`` or ``--model_name NAME``; last one wins."""
    name = ""
    strings = [str(a) for a in args]
    for i, arg in enumerate(strings):
        if arg.startswith(MODEL_NAME_ARG):
            parts = arg.split("=")
            if len(parts) == 2:
                name = parts[1]
            if i + 1 < len(strings) and not strings[i + 1].startswith("--"):
                name = strings[i + 1]
    return name


def model_name(isvc: Mapping[str, Any]) -> str:
    """The model name KServe puts in the predict path."""
    spec = _dict(isvc.get("spec"))
    transformer = spec.get("transformer")
    if isinstance(transformer, dict):
        containers = _list(transformer.get("containers"))
        if containers and isinstance(containers[0], dict):
            found = model_name_from_args(_list(containers[0].get("args")))
            if found:
                return found
    predictor = _dict(spec.get("predictor"))
    model = predictor.get("model")
    containers = _list(predictor.get("containers"))
    if isinstance(model, dict):
        env_name = _env(model, MLSERVER_MODEL_NAME_ENV)
        if env_name is not None:
            return env_name
        found = model_name_from_args(_list(model.get("args")))
        if found:
            return found
    elif containers and isinstance(containers[0], dict):
        found = model_name_from_args(_list(containers[0].get("args")))
        if found:
            return found
    return str(_dict(isvc.get("metadata")).get("name") or "")


def predictor_implementation(predictor: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(framework, spec) of the predictor KServe uses; ``("containers", {...})`` for a custom one."""
    for framework in FRAMEWORKS:
        impl = predictor.get(framework)
        if isinstance(impl, dict):
            return framework, impl
    if _list(predictor.get("containers")):
        return "containers", dict(predictor)
    return None


def is_multi_model_server(predictor: Mapping[str, Any]) -> bool:
    """KServe's IsMMSPredictor: such a predictor is called at its bare URL, with no path."""
    containers = _list(predictor.get("containers"))
    if containers:
        first = containers[0] if isinstance(containers[0], dict) else {}
        return _env(first, MULTI_MODEL_SERVER_ENV) == "true"
    impl = predictor_implementation(predictor)
    if impl is None:
        return False
    _, spec = impl
    if isinstance(predictor.get("huggingface"), dict):
        return False
    model = predictor.get("model")
    if isinstance(model, dict) and _dict(model.get("modelFormat")).get("name") == "huggingface":
        return False
    return spec.get("storageUri") is None and spec.get("storage") is None


def _custom_protocol(containers: list[Any], collocated_transformer: bool) -> str:
    if collocated_transformer:
        for c in containers:
            if isinstance(c, dict) and c.get("name") == TRANSFORMER_CONTAINER:
                return _env(c, PROTOCOL_ENV) or PROTOCOL_V1
    first = containers[0] if containers and isinstance(containers[0], dict) else {}
    return _env(first, PROTOCOL_ENV) or PROTOCOL_V1


def runtime_name(isvc: Mapping[str, Any]) -> str | None:
    """The ServingRuntime whose protocol decides the path, when KServe would read one."""
    spec = _dict(isvc.get("spec"))
    if isinstance(spec.get("transformer"), dict):
        return None
    predictor = _dict(spec.get("predictor"))
    if is_multi_model_server(predictor):
        return None
    impl = predictor_implementation(predictor)
    if impl is None or impl[0] != "model":
        return None
    runtime = impl[1].get("runtime")
    return runtime if isinstance(runtime, str) and runtime else None


def protocol(isvc: Mapping[str, Any], runtime: RuntimeResult | None = None) -> str | Unresolved | None:
    """The protocol of the path; None for a multi-model server (no path)."""
    name = str(_dict(isvc.get("metadata")).get("name") or "")
    spec = _dict(isvc.get("spec"))
    transformer = spec.get("transformer")
    if isinstance(transformer, dict):
        return _custom_protocol(_list(transformer.get("containers")), collocated_transformer=False)
    predictor = _dict(spec.get("predictor"))
    if is_multi_model_server(predictor):
        return None
    impl = predictor_implementation(predictor)
    if impl is None:
        return PROTOCOL_V1
    framework, impl_spec = impl
    if framework == "containers":
        return _custom_protocol(_list(predictor.get("containers")), collocated_transformer=True)
    default = PROTOCOL_V2 if framework in V2_DEFAULT_FRAMEWORKS else PROTOCOL_V1
    chosen = str(impl_spec.get("protocolVersion") or default)
    wanted = runtime_name(isvc)
    if wanted is None:
        return chosen
    if runtime is None or isinstance(runtime, str):
        detail = runtime or f"No ServingRuntimes or ClusterServingRuntimes with the name: {wanted}"
        return Unresolved(name, "RuntimeError", f"InferenceService {name!r}: {detail}")
    versions = [str(v) for v in _list(runtime.get("protocolVersions"))]
    if not versions:
        return chosen
    for version in versions:
        if version in (PROTOCOL_V1, PROTOCOL_V2):
            return version
    return Unresolved(name, "RuntimeError", f"InferenceService {name!r}: runtime {wanted!r} supports no protocol "
                      f"an InferenceGraph can call (v1 or v2); it lists {versions}")


def predict_path(model: str, proto: str | None) -> str:
    if proto == PROTOCOL_V1:
        return f"/v1/models/{model}:predict"
    if proto == PROTOCOL_V2:
        return f"/v2/models/{model}/infer"
    return ""


def resolve_service(service: str, namespace: str, services: Mapping[str, Mapping[str, Any]],
                    runtimes: Mapping[str, RuntimeResult]) -> str | Unresolved:
    """The URL KServe's controller would give ``serviceName: service``, or why there is none."""
    isvc = services.get(service)
    if isvc is None:
        return Unresolved(service, "NotFound", f"InferenceService {service!r} not found in namespace {namespace!r}")
    address = _dict(_dict(isvc.get("status")).get("address"))
    base = address.get("url")
    if not isinstance(base, str) or not base:
        return Unresolved(service, "NotReady", f"InferenceService {service!r} is not ready: it has no "
                          "status.address.url yet")
    if declares_grpc_v2(isvc):  # graph_router's extension: the step calls it over gRPC
        from ..grpc.urls import from_address

        return from_address(base, model_name(isvc))
    wanted = runtime_name(isvc)
    proto = protocol(isvc, runtimes.get(wanted) if wanted else None)
    if isinstance(proto, Unresolved):
        return proto
    return base + predict_path(model_name(isvc), proto)


def declares_grpc_v2(isvc: Mapping[str, Any]) -> bool:
    """A predictor (no transformer) with ``protocolVersion: grpc-v2``: KServe's router gives it a
    bare URL it cannot call; graph_router calls its Open Inference Protocol gRPC service."""
    spec = _dict(isvc.get("spec"))
    if isinstance(spec.get("transformer"), dict):
        return False
    impl = predictor_implementation(_dict(spec.get("predictor")))
    return impl is not None and impl[0] != "containers" and impl[1].get("protocolVersion") == "grpc-v2"

