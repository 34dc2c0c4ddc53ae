"""TLS contexts for the router's listener (reloaded when cert-manager rotates the files).

A rotation rewrites the certificate and key in place (a Secret volume swaps a symlink),
so :class:`ReloadingServerContext` looks at the files' identity (inode, mtime, size) at
most every ``check_seconds`` when a connection arrives and builds a new
:class:`ssl.SSLContext` when they changed. New connections take the new context;
connections already open keep theirs, so nothing is dropped. A half-written pair
(a key that does not match its certificate) is logged and the old context kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import GraphError
from .models import TLSSpec

if TYPE_CHECKING:
    from ..plan import GraphPlan
    from ..upstream import UpstreamClient

logger = logging.getLogger(__name__)

# OpenShift AI's --enable-tls reads these (its service-serving certificate's mount).
OPENSHIFT_CERT_FILE = "/etc/tls/private/tls.crt"
OPENSHIFT_KEY_FILE = "/etc/tls/private/tls.key"


def _identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """An HTTPS server context: TLS 1.2 and newer, the system's default ciphers, HTTP/1.1 by ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class ReloadingServerContext:
    """The current server context for ``cert_file``/``key_file``; checked lazily, reloaded on change.

    Both files must be readable at construction (a router that cannot serve TLS must
    not start); later failures keep the last good context.
    """

    def __init__(self, cert_file: str, key_file: str, *, check_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.check_seconds = check_seconds
        self._clock = clock
        self._files = (_identity(cert_file), _identity(key_file))
        self._context = server_context(cert_file, key_file)
        self._checked = clock()
        self.reloads = 0

    def current(self) -> ssl.SSLContext:
        """The context for a new connection (at most one stat pair per ``check_seconds``)."""
        now = self._clock()
        if now - self._checked >= self.check_seconds:
            self._checked = now
            self._maybe_reload()
        return self._context

    def _maybe_reload(self) -> None:
        try:
            files = (_identity(self.cert_file), _identity(self.key_file))
        except OSError as exc:
            logger.warning("TLS files unreadable, keeping the current certificate: %s", exc)
            return
        if files == self._files:
            return
        try:
            context = server_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            # Likely mid-rotation (new certificate, old key): try again at the next check.
            logger.warning("new TLS files not loaded yet, keeping the current certificate: %s", exc)
            return
        self._files = files
        self._context = context
        self.reloads += 1
        logger.info("TLS certificate reloaded from %s", self.cert_file)


class ClientTLS:
    """How the router connects to one https:// step: its own CA, client certificate and SNI.

    ``key`` names the settings in the connection pool's key, so a step with a client
    certificate never reuses a connection made for another step's settings. The files
    are looked at again (at most every ``check_seconds``) when a new connection is made:
    a rotated client certificate or CA is used from then on, pooled connections keep
    theirs, and files that do not load (mid-rotation) keep the last good context.
    """

    __slots__ = ("_checked", "_context", "_files", "_spec", "check_seconds", "key", "reloads", "server_name")

    def __init__(self, spec: TLSSpec, *, check_seconds: float = 2.0) -> None:
        self._spec = spec
        self.check_seconds = check_seconds
        self._files = self._identities()
        self._context = self._build()
        self._checked = time.monotonic()
        self.reloads = 0
        self.server_name = spec.server_name
        fields = (spec.ca_file, spec.cert_file, spec.key_file, spec.server_name, spec.insecure_skip_verify)
        self.key = "tls:" + hashlib.sha256(repr(fields).encode()).hexdigest()[:16]

    def _identities(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        spec = self._spec
        return tuple(_identity(f) if f is not None else None for f in (spec.ca_file, spec.cert_file, spec.key_file))

    def _build(self) -> ssl.SSLContext:
        spec = self._spec
        if spec.insecure_skip_verify:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            # With caFile, only that CA is trusted (a private CA); without, the system's.
            ctx = ssl.create_default_context(cafile=spec.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if spec.cert_file is not None and spec.key_file is not None:
            ctx.load_cert_chain(spec.cert_file, spec.key_file)
        return ctx

    def grpc_credentials(self) -> tuple[Any, list[tuple[str, str]]]:
        """Channel credentials and options for a grpcs:// step (files read now: a new channel)."""
        import grpc

        spec = self._spec

        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as f:
                return f.read()

        credentials = grpc.ssl_channel_credentials(read(spec.ca_file), read(spec.key_file), read(spec.cert_file))
        options = [("grpc.ssl_target_name_override", spec.server_name)] if spec.server_name else []
        return credentials, options

    def current(self) -> ssl.SSLContext:
        """The context for a new connection, rebuilt when the files changed."""
        now = time.monotonic()
        if now - self._checked >= self.check_seconds:
            self._checked = now
            try:
                files = self._identities()
                if files != self._files:
                    self._context = self._build()
                    self._files = files
                    self.reloads += 1
                    logger.info("step TLS files reloaded (%s)", self._spec.cert_file or self._spec.ca_file)
            except (OSError, ssl.SSLError) as exc:
                logger.warning("step TLS files not loaded yet, keeping the current ones: %s", exc)
        return self._context


def step_tls(plan: GraphPlan) -> dict[str, ClientTLS]:
    """Each https:// step URL of ``plan`` with ``tls`` settings (the step's own, else the graph's).

    Raises GraphError for files that cannot be loaded, naming the step. Settings are
    shared per distinct spec, so equal settings share one context (and pools).
    """
    ext = plan.extensions
    out: dict[str, ClientTLS] = {}
    made: dict[TLSSpec, ClientTLS] = {}
    for node_name, node in plan.nodes.items():
        for step in node.steps:
            if step.url is None or not step.url.startswith(("https://", "grpcs://")):
                continue
            own = ext.steps.get(f"{node_name}/{step.label}") or ext.steps.get(f"{node_name}/{step.index}")
            spec = own.tls if own is not None and own.tls is not None else ext.tls
            if spec is None:
                continue
            if spec.insecure_skip_verify and step.url.startswith("grpcs://"):
                raise GraphError(f"graph {plan.name!r} step {node_name}/{step.label}: tls: insecureSkipVerify is "
                                 "not available for grpcs:// steps (gRPC always checks the server)")
            tls = made.get(spec)
            if tls is None:
                try:
                    tls = made[spec] = ClientTLS(spec)
                except (OSError, ssl.SSLError) as exc:
                    raise GraphError(f"graph {plan.name!r} step {node_name}/{step.label}: tls: {exc}") from exc
                if spec.insecure_skip_verify:
                    logger.warning("graph %s step %s/%s: tls.insecureSkipVerify: the service's certificate is "
                                   "not checked", plan.name, node_name, step.label)
            previous = out.get(step.url)
            if previous is not None and previous is not tls:
                raise GraphError(f"graph {plan.name!r}: {step.url} is called with two different tls settings")
            out[step.url] = tls
    return out


def apply_step_tls(client: UpstreamClient, plan: GraphPlan, *, strict: bool) -> bool:
    """Give ``client`` the TLS settings of ``plan``'s steps before it is served.

    ``strict`` (the first graph): a file that cannot be loaded raises GraphError, so the
    router does not start. On a reload it is logged and False returned: the current
    graph keeps serving, as for any other invalid graph.
    """
    try:
        client.set_step_tls(dict(step_tls(plan)))
    except GraphError as exc:
        if strict:
            raise
        logger.error("%s; keeping the current graph", exc)
        return False
    return True
