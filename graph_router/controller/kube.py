"""The one place graph_router talks to the Kubernetes API, through the official client.

The ``kubernetes`` client is synchronous: every method here blocks, and the watch loop
and the reconciler call them from worker threads so the asyncio loop never waits on a
socket. The client's exceptions (``ApiException``, urllib3 errors, socket errors) are
translated here, once, into ours, split by whether the API server answered:

    KubeError                   base of everything below (a GraphRouterError)
    ├── ConnectionLost          no usable answer: refused, reset, timed out, stream cut
    └── ApiError                the API server answered with an error ``status``
        └── ResourceGone        410: the resourceVersion is too old; list again
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from ..errors import GraphRouterError

logger = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"


class KubeError(GraphRouterError):
    """A Kubernetes API call that did not succeed."""


class ConnectionLost(KubeError):
    """The API server could not be reached, or the connection broke mid-answer."""


class ApiError(KubeError):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ResourceGone(ApiError):
    """410 Gone: the watched resourceVersion was compacted away; list again."""


@dataclass(frozen=True, slots=True)
class Resource:
    """A custom resource's coordinates in the API."""

    group: str
    version: str
    plural: str

    def __str__(self) -> str:
        return f"{self.plural}.{self.version}.{self.group}"


INFERENCE_GRAPHS = Resource("serving.kserve.io", "v1alpha1", "inferencegraphs")
INFERENCE_SERVICES = Resource("serving.kserve.io", "v1beta1", "inferenceservices")
SERVING_RUNTIMES = Resource("serving.kserve.io", "v1alpha1", "servingruntimes")
CLUSTER_SERVING_RUNTIMES = Resource("serving.kserve.io", "v1alpha1", "clusterservingruntimes")
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices")  # a Service's ready pods


@dataclass(frozen=True, slots=True)
class ListResult:
    """One consistent snapshot: the objects and the resourceVersion to watch from."""

    items: list[dict[str, Any]]
    resource_version: str


def _translate(exc: BaseException) -> KubeError:
    """The one translation of the client's exceptions into ours."""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        if status == 0:
            return ConnectionLost(str(exc.reason or exc))
        message = str(exc.reason or "")
        body = getattr(exc, "body", None)
        if body:
            try:
                message = str(json.loads(body).get("message") or message)
            except (ValueError, AttributeError):
                pass
        if status == 410:
            return ResourceGone(status, message)
        return ApiError(status, message)
    return ConnectionLost(f"{type(exc).__name__}: {exc}")


# A malformed watch line is a broken stream, like a cut connection.
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError, json.JSONDecodeError)


class WatchStream:
    """One watch request: iterate it (in a worker thread) for event dicts; ``stop`` ends it.

    ``stop`` may be called from another thread: it shuts the socket down so a blocked
    read returns at once.
    """

    def __init__(self, api: client.CustomObjectsApi, resource: Resource, namespace: str, *,
                 resource_version: str, field_selector: str | None, timeout_seconds: int,
                 request_timeout: tuple[float, float]) -> None:
        self._api = api
        self._resource = resource
        self._namespace = namespace
        self._kwargs: dict[str, Any] = {
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_seconds,
            "_request_timeout": request_timeout,
        }
        if field_selector:
            self._kwargs["field_selector"] = field_selector
        self._watch = watch.Watch()
        self._stopped = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._stopped:
            return
        r = self._resource
        try:
            # timeout_seconds makes the client's Watch hand every 410 to us instead of
            # retrying on its own, so relisting stays our decision.
            for event in self._watch.stream(self._api.list_namespaced_custom_object, r.group, r.version,
                                            self._namespace, r.plural, **self._kwargs):
                # For custom resources ``object`` and ``raw_object`` are both the plain dict.
                if isinstance(event, dict):
                    yield {"type": event.get("type"), "object": event.get("raw_object")}
                if self._stopped:
                    return
        except ApiException as exc:
            raise _translate(exc) from exc
        except _TRANSPORT_ERRORS as exc:
            if self._stopped:
                return
            raise _translate(exc) from exc

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


class KubeClient:
    """The calls the controller makes, each blocking and each raising only KubeError.

    request_timeout: seconds for a whole list/get/patch (connect, read).
    """

    def __init__(self, api_client: client.ApiClient, *, request_timeout: float = 30.0,
                 connect_timeout: float = 10.0) -> None:
        self._api_client = api_client
        self._api = client.CustomObjectsApi(api_client)
        self._timeout = (connect_timeout, request_timeout)
        self.connect_timeout = connect_timeout

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, **kwargs: float) -> KubeClient:
        """Configuration from ``kubeconfig``, else $KUBECONFIG, else in-cluster, else ~/.kube/config."""
        cfg = client.Configuration()
        path = kubeconfig or os.environ.get("KUBECONFIG")
        if path:
            # The client reads a missing file as an empty configuration ("No configuration
            # found"), which sends people looking inside a file that is not there.
            given = "--kubeconfig" if kubeconfig else "$KUBECONFIG"
            for one in path.split(os.pathsep):
                if one and not os.path.isfile(one):
                    what = "is a directory, not a file" if os.path.isdir(one) else "does not exist"
                    raise KubeError(f"cannot load Kubernetes configuration: {given} {one}: the file {what}")
        try:
            if path:
                config.load_kube_config(config_file=path, client_configuration=cfg)
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
            else:
                config.load_kube_config(client_configuration=cfg)
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise KubeError(f"cannot load Kubernetes configuration: {exc}") from exc
        # Our loops own retrying (with backoff); urllib3's silent immediate retries would
        # only hide a dead API server for a while.
        cfg.retries = False
        return cls(client.ApiClient(cfg), **kwargs)

    def close(self) -> None:
        self._api_client.close()

    def list(self, resource: Resource, namespace: str, field_selector: str | None = None) -> ListResult:
        kwargs: dict[str, Any] = {"_request_timeout": self._timeout}
        if field_selector:
            kwargs["field_selector"] = field_selector
        try:
            answer = self._api.list_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, **kwargs
            )
        except ApiException as exc:
            raise _translate(exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _translate(exc) from exc
        if not isinstance(answer, Mapping):
            raise ApiError(200, f"list of {resource} is not a JSON object")
        items = [i for i in answer.get("items") or [] if isinstance(i, dict)]
        rv = str((answer.get("metadata") or {}).get("resourceVersion") or "")
        if not rv:
            raise ApiError(200, f"list of {resource} has no metadata.resourceVersion")
        return ListResult(items, rv)

    def watch(self, resource: Resource, namespace: str, *, resource_version: str,
              field_selector: str | None, timeout_seconds: int, read_timeout: float) -> WatchStream:
        return WatchStream(self._api, resource, namespace, resource_version=resource_version,
                           field_selector=field_selector, timeout_seconds=timeout_seconds,
                           request_timeout=(self.connect_timeout, read_timeout))

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (404)."""
        r = resource
        try:
            if namespace is None:
                answer = self._api.get_cluster_custom_object(r.group, r.version, r.plural, name,
                                                             _request_timeout=self._timeout)
            else:
                answer = self._api.get_namespaced_custom_object(r.group, r.version, namespace, r.plural, name,
                                                                _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _translate(exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _translate(exc) from exc
        return answer if isinstance(answer, dict) else None

    def patch_status(self, resource: Resource, namespace: str, name: str,
                     patch: Mapping[str, Any]) -> dict[str, Any]:
        """JSON merge patch (RFC 7386) of the status subresource: only the fields in ``patch`` change."""
        r = resource
        try:
            answer = self._api.patch_namespaced_custom_object_status(
                r.group, r.version, namespace, r.plural, name, dict(patch),
                _content_type=MERGE_PATCH, _request_timeout=self._timeout,
            )
        except ApiException as exc:
            raise _translate(exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _translate(exc) from exc
        return answer if isinstance(answer, dict) else {}
