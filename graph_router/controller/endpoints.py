"""A resolved URL's replicas: the ready endpoints of its Kubernetes Service, from EndpointSlices.

A Service spreads calls at random, which throws away a replica's prompt cache, so the
sidecar also resolves a step's URL to its pods (graph_router/endpoints.py then picks
one per call). The Service is the first label of the URL's host (``NAME.NS.svc...``,
or a bare ``NAME``); its slices carry the label ``kubernetes.io/service-name``. Each
ready endpoint (``conditions.ready`` not false) becomes the URL with the pod's address
and the slice's port in place of the host and port. Fewer than two ready endpoints, or
no slice at all: the URL stays the Service's (nothing to choose between).

The endpoints go into the rendered graph in the annotation ``graph-router.io/endpoints``
(serviceUrl -> [endpoint URL, ...]), which the router reads as ``--service URL=URL1,URL2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HTTP_PORT_NAMES = ("http", "http1", "h2c", "http-web")


def service_of(url: str, namespace: str) -> str | None:
    """The Service a URL addresses in ``namespace``, or None (another namespace, an IP, outside)."""
    if not url.startswith(("http://", "https://")):
        return None
    host = urlsplit(url).hostname or ""
    labels = host.split(".")
    if len(labels) == 1:
        return labels[0] or None
    if len(labels) >= 3 and labels[1] == namespace and labels[2] == "svc":
        return labels[0]
    return None


def _port(slice_: Mapping[str, Any]) -> int | None:
    ports = [p for p in slice_.get("ports") or [] if isinstance(p, dict) and isinstance(p.get("port"), int)]
    if not ports:
        return None
    for port in ports:
        if port.get("name") in HTTP_PORT_NAMES:
            return int(port["port"])
    return int(ports[0]["port"])


def endpoint_urls(url: str, namespace: str, slices: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The URL at each ready endpoint of its Service, sorted; [] when there are fewer than two."""
    service = service_of(url, namespace)
    if service is None:
        return []
    parts = urlsplit(url)
    found: set[str] = set()
    for slice_ in slices.values():
        labels = (slice_.get("metadata") or {}).get("labels") or {}
        if labels.get(SERVICE_NAME_LABEL) != service:
            continue
        port = _port(slice_)
        if port is None:
            continue
        for endpoint in slice_.get("endpoints") or []:
            if not isinstance(endpoint, dict) or (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            addresses = endpoint.get("addresses") or []
            if not addresses:
                continue
            address = str(addresses[0])
            host = f"[{address}]" if ":" in address else address
            found.add(urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, "")))
    return sorted(found) if len(found) >= 2 else []
