"""What ``serve``'s security flags ask for; everything off by default."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """What ``serve --enable-auth`` checks, and how hard it may lean on the API server."""

    graph_name: str
    namespace: str
    kubeconfig: str | None = None
    cache_seconds: float = 60.0
    cache_size: int = 10_000
    review_timeout: float = 5.0
    max_reviews: int = 16
    metrics_auth: bool = False


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """HTTPS in front (both files, or neither), a plain /metrics listener, auth."""

    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    metrics_port: int | None = None
    auth: AuthSettings | None = None
