"""TLS for the gRPC front (``--grpc-port`` with ``--tls-cert-file``), reloaded like the HTTP listener's.

gRPC asks the fetcher before each new handshake; it answers with a new certificate
configuration only when the files' identity changed (and they load), so existing
connections keep theirs and rotation needs no restart.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import Any

import grpc

logger = logging.getLogger(__name__)


def _identity(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _config(cert_file: str, key_file: str) -> Any:
    with open(key_file, "rb") as k, open(cert_file, "rb") as c:
        key, chain = k.read(), c.read()
    # A pair that does not match is refused here rather than by every handshake.
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
    return grpc.ssl_server_certificate_configuration([(key, chain)])


def server_credentials(cert_file: str, key_file: str) -> grpc.ServerCredentials:
    """Credentials serving ``cert_file``/``key_file``, the newest valid pair for each new connection."""
    state = {"files": (_identity(cert_file), _identity(key_file))}

    def fetch() -> Any:
        try:
            files = (_identity(cert_file), _identity(key_file))
            if files == state["files"]:
                return None
            config = _config(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            logger.warning("gRPC TLS: new files not loaded yet, keeping the current certificate: %s", exc)
            return None
        state["files"] = files
        logger.info("gRPC TLS certificate reloaded from %s", cert_file)
        return config

    return grpc.dynamic_ssl_server_credentials(_config(cert_file, key_file), fetch)
