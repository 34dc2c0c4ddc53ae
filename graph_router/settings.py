"""Process settings: one object of grouped sub-settings, built once by the CLI.

Nothing here is read from the environment at import time; ``from_env`` is called by
the CLI so tests can build settings directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .security.settings import SecuritySettings
from .upstream import UpstreamSettings


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How the router listens and stops.

    drain_seconds: after SIGTERM, /readyz answers 503 for this long before the listener
    closes, so load balancers stop sending (KServe waits 30 s).
    shutdown_timeout: then, how long in-flight requests may take to finish.
    max_body_bytes: request bodies above this get 413; KServe has no limit, but an
    unbounded body is a memory exhaustion vector.
    max_buffered_bytes: request bodies held at once across all connections (a body is
    buffered whole before the graph runs); past it a new body gets 503 with Retry-After,
    so many large uploads together cannot take all memory.
    propagate_headers: the raw ``PROPAGATE_HEADERS`` value (None: unset).
    max_in_flight: graph requests one process runs at once; past it, 503 with
    Retry-After at once (a bounded queue is the kernel's accept backlog, not memory).
    explain_header: whether a request may ask for ``X-Graph-Explain`` (the path taken,
    service URLs included); on by default for debugging, off where clients are untrusted.
    """

    host: str = "0.0.0.0"
    port: int = 8080
    drain_seconds: float = 30.0
    shutdown_timeout: float = 60.0
    max_body_bytes: int = 64 * 1024 * 1024
    max_buffered_bytes: int = 512 * 1024 * 1024
    max_in_flight: int = 4096
    propagate_headers: str | None = None
    explain_header: bool = True
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServerSettings:
        """Settings from the process environment plus explicit (CLI) overrides."""
        env = os.environ if env is None else env
        values: dict[str, object] = {"propagate_headers": env.get("PROPAGATE_HEADERS")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
