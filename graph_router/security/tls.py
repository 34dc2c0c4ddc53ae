"""TLS contexts for the router's listener (reloaded when cert-manager rotates the files).

A rotation rewrites the certificate and key in place (a Secret volume swaps a symlink),
so :class:`ReloadingServerContext` looks at the files' identity (inode, mtime, size) at
most every ``check_seconds`` when a connection arrives and builds a new
:class:`ssl.SSLContext` when they changed. New connections take the new context;
connections already open keep theirs, so nothing is dropped. A half-written pair
(a key that does not match its certificate) is logged and the old context kept.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable

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
