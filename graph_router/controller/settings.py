"""The controller sidecar's settings: one object of grouped sub-settings, built by the CLI."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class WatchSettings:
    """How the list/watch loops talk to the API server. All times are seconds.

    resync_seconds: a full relist this often, to catch anything a watch missed (client-go's
    informers resync too); 300 keeps the load on the API server negligible.
    watch_timeout_seconds: how long the API server keeps one watch open (``timeoutSeconds``).
    A watch that ends normally is resumed from the last resourceVersion, without a relist.
    read_grace_seconds: a watch that stays silent this much past its timeout counts as dropped
    (the socket's read timeout), so a half-open connection cannot hang the loop.
    request_timeout: bound on one list, get or patch.
    connect_timeout: bound on opening a connection to the API server.
    backoff_initial, backoff_max: reconnect delays after errors double from the first up to
    the second, each with jitter, so a restarting API server is not hit by every sidecar at once.
    """

    resync_seconds: float = 300.0
    watch_timeout_seconds: int = 240
    read_grace_seconds: float = 30.0
    request_timeout: float = 30.0
    connect_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """What the sidecar watches and where it writes.

    namespace, name: the InferenceGraph to serve; InferenceServices are read from the same
    namespace, as KServe's controller does.
    output: the file the router reloads; written atomically and only when it changes.
    url: reported as ``status.url``; None leaves ``status.url`` alone.
    debounce_seconds: events arriving this close together are reconciled once (a relist
    delivers many at a time).
    """

    namespace: str
    name: str
    output: Path
    url: str | None = None
    debounce_seconds: float = 0.1
    watch: WatchSettings = field(default_factory=WatchSettings)
