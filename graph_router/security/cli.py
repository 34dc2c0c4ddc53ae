"""``serve``'s security flags (OpenShift AI's names accepted), checked before the router starts."""

from __future__ import annotations

import argparse
import os
import ssl

from ..commands import UsageError
from ..errors import GraphError
from ..upstream import UpstreamSettings
from .settings import AuthSettings, SecuritySettings
from .tls import OPENSHIFT_CERT_FILE, OPENSHIFT_KEY_FILE, server_context


def add_security_flags(p: argparse.ArgumentParser) -> None:
    from ..commands.serve import non_negative_float, port_number

    g = p.add_argument_group("security (see README: Security)")
    g.add_argument("--tls-cert-file", metavar="FILE",
                   help="serve HTTPS (TLS 1.2+) with this certificate chain; reloaded when it changes on disk")
    g.add_argument("--tls-key-file", metavar="FILE", help="the certificate's private key")
    g.add_argument("--enable-tls", action="store_true",
                   help=f"OpenShift AI's flag: HTTPS with {OPENSHIFT_CERT_FILE} and {OPENSHIFT_KEY_FILE}")
    g.add_argument("--metrics-port", type=port_number, default=None, metavar="N",
                   help="also serve /metrics (and /readyz) on this port, plain HTTP, for scrapers inside the mesh")
    g.add_argument("--enable-auth", action="store_true",
                   help="require Authorization: Bearer TOKEN, checked with a Kubernetes TokenReview and a "
                   "SubjectAccessReview for get on inferencegraphs/NAME")
    g.add_argument("--inferencegraph-name", metavar="NAME",
                   help="the InferenceGraph whose get permission --enable-auth checks (default: --name)")
    g.add_argument("--auth-namespace", metavar="NS",
                   help="its namespace (default: $POD_NAMESPACE, else the service account's namespace)")
    g.add_argument("--auth-cache-seconds", type=non_negative_float, default=60.0, metavar="S",
                   help="how long an auth decision is reused (default 60)")
    g.add_argument("--auth-timeout-seconds", type=non_negative_float, default=5.0, metavar="S",
                   help="a review slower than this answers 503 (default 5)")
    g.add_argument("--metrics-auth", action="store_true",
                   help="with --enable-auth, /metrics needs a token too (default: open, as /readyz)")
    g.add_argument("--no-istio-rewrite", dest="istio_rewrite", action="store_false",
                   help="call https:// steps over https even beside an Istio sidecar (KServe rewrites them to "
                   "http:// there; so does graph-router by default, and says so once)")


def _namespace(args: argparse.Namespace) -> str:
    if args.auth_namespace:
        return str(args.auth_namespace)
    ns = os.environ.get("POD_NAMESPACE")
    if ns:
        return ns
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        raise UsageError("--enable-auth needs the router's namespace: --auth-namespace NS or $POD_NAMESPACE") from None


def security_settings(args: argparse.Namespace) -> SecuritySettings:
    """The flags as settings; unreadable TLS files fail here, once, with the file named."""
    cert, key = args.tls_cert_file, args.tls_key_file
    if args.enable_tls and cert is None and key is None:
        cert, key = OPENSHIFT_CERT_FILE, OPENSHIFT_KEY_FILE
    if (cert is None) != (key is None):
        raise UsageError("give both --tls-cert-file and --tls-key-file")
    if cert is not None and key is not None:
        try:
            server_context(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise GraphError(f"cannot serve TLS with {cert} and {key}: {exc}") from None
    auth = None
    if args.enable_auth:
        name = args.inferencegraph_name or args.name
        if not name:
            raise UsageError("--enable-auth needs --inferencegraph-name NAME")
        auth = AuthSettings(graph_name=name, namespace=_namespace(args),
                            cache_seconds=args.auth_cache_seconds, review_timeout=args.auth_timeout_seconds,
                            metrics_auth=args.metrics_auth)
    elif args.metrics_auth:
        raise UsageError("--metrics-auth needs --enable-auth")
    return SecuritySettings(tls_cert_file=cert, tls_key_file=key, metrics_port=args.metrics_port, auth=auth)


def upstream_settings(args: argparse.Namespace) -> UpstreamSettings | None:
    """Step-call settings the flags change (None: the defaults)."""
    return None if args.istio_rewrite else UpstreamSettings(istio_rewrite=False)
