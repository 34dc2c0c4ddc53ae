"""``grpc://`` and ``grpcs://`` step URLs, read without importing grpcio.

``grpc://HOST[:PORT]/v2/models/MODEL[/versions/VERSION]/infer`` calls ``ModelInfer``
on MODEL at HOST:PORT in clear text; ``grpcs://`` over TLS. The path has the V2 REST
shape on purpose: swapping ``http`` for ``grpc`` (and the port) switches a step's
protocol. The default ports are 80 and 443, as for http and https.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SCHEMES = ("grpc", "grpcs")
PREFIXES = ("grpc://", "grpcs://")

_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer/?$")


@dataclass(frozen=True, slots=True)
class GRPCTarget:
    """A gRPC step URL, split once: where to connect and which model to call."""

    secure: bool
    host: str
    port: int
    model: str
    version: str

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # The circuit breaker's key, the same shape as an HTTP service's: made once, read per call.
    key: tuple[str, str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ("grpcs" if self.secure else "grpc", self.host, self.port))


def parse(url: str) -> GRPCTarget:
    """Split a gRPC step URL; ValueError says what is wrong with it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in SCHEMES or not host:
        raise ValueError(f"{url!r} is not a grpc:// or grpcs:// URL with a host")
    match = _PATH.match(parts.path)
    if match is None:
        raise ValueError(f"{url!r}: a gRPC step URL's path is /v2/models/MODEL/infer "
                         "(or /v2/models/MODEL/versions/VERSION/infer)")
    secure = parts.scheme == "grpcs"
    return GRPCTarget(secure, host, port or (443 if secure else 80), unquote(match.group(1)),
                      unquote(match.group(2) or ""))


def problem(url: str) -> str | None:
    """None for a usable gRPC step URL, else what is wrong with it (for load-time validation)."""
    try:
        parse(url)
    except ValueError as exc:
        return str(exc)
    return None


def from_address(base: str, model: str) -> str:
    """The gRPC step URL for ``model`` behind an InferenceService address (its ``status.address.url``).

    KServe serves a ``grpc-v2`` predictor's h2c port behind the same address (port 80,
    or 443 for an https address), so only the scheme and the path change.
    """
    parts = urlsplit(base)
    scheme = "grpcs" if parts.scheme == "https" else "grpc"
    return f"{scheme}://{parts.netloc}/v2/models/{model}/infer"
