"""HTTPS in front: TLS 1.2+, certificates reloaded on rotation without dropping connections, the
plain --metrics-port listener, and the CLI flags (a real process serving HTTPS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import trustme

from graph_router.loader import load_graph_json
from graph_router.plan import compile_graph
from graph_router.security.tls import ReloadingServerContext
from graph_router.server import Router, start_metrics_server, start_server
from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamClient

pytestmark = pytest.mark.asyncio


def _spec(url: str) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}}}


def _write_pair(ca: trustme.CA, tmp: Path, common_name: str = "router") -> tuple[Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost", common_name=common_name)
    cert_file, key_file = tmp / "tls.crt", tmp / "tls.key"
    # Written as cert-manager's volume does: new files renamed into place.
    for path, blob in ((cert_file, cert.cert_chain_pems[0].bytes()), (key_file, cert.private_key_pem.bytes())):
        part = path.with_suffix(".new")
        part.write_bytes(blob)
        os.replace(part, path)
    return cert_file, key_file


def _client_context(ca: trustme.CA, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    for name, value in versions.items():
        setattr(ctx, name, value)
    return ctx


async def _router(start_service: Any, tls: ReloadingServerContext) -> tuple[Router, Any, UpstreamClient]:
    svc = await start_service({"/m": (200, {"ok": True})})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0)
    client = UpstreamClient(settings.upstream)
    await client.start()
    plan = compile_graph(load_graph_json(orjson.dumps(_spec(svc.url("/m"))).decode(), name="tls"))
    router = Router(settings, plan, client)
    await router.telemetry.start()
    server = await start_server(router, "127.0.0.1", 0, tls=tls)
    return router, server, client


def _peer_serial(port: int, ca: trustme.CA) -> int:
    """The serial number of the certificate a new connection is shown."""
    from cryptography import x509

    ctx = _client_context(ca)
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_https_serves_graph_readyz_and_metrics_on_one_listener(start_service: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    tls = ReloadingServerContext(*map(str, _write_pair(ca, tmp_path)))
    router, server, client = await _router(start_service, tls)
    url = f"https://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_client_context(ca))) as session:
            async with session.post(url, data=b"{}") as resp:
                assert resp.status == 200
                assert await resp.json() == {"ok": True}
            async with session.get(url + "/readyz") as resp:
                assert resp.status == 200
            async with session.get(url + "/metrics") as resp:
                assert resp.status == 200
                assert "graph_router" in await resp.text()
        # Plain HTTP on the TLS port gets no answer (the handshake fails), never the graph.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientError):
                async with session.post(url.replace("https", "http"), data=b"{}") as resp:
                    await resp.read()
        # A client that does not trust the CA is refused.
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.post(url, data=b"{}"):
                    pass
    finally:
        await server.shutdown(1)
        await client.close()
        await router.telemetry.close()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("version", "accepted"), [
    (ssl.TLSVersion.TLSv1_3, True),
    (ssl.TLSVersion.TLSv1_2, True),
    (ssl.TLSVersion.TLSv1_1, False),
])
async def test_tls_versions_offered(start_service: Any, tmp_path: Path, version: ssl.TLSVersion,
                                    accepted: bool) -> None:
    """TLS 1.2 and 1.3 are served; a client capped at 1.1 cannot connect."""
    ca = trustme.CA()
    tls = ReloadingServerContext(*map(str, _write_pair(ca, tmp_path)))
    assert tls.current().minimum_version == ssl.TLSVersion.TLSv1_2
    router, server, client = await _router(start_service, tls)
    try:
        ctx = _client_context(ca, maximum_version=version)
        if version < ssl.TLSVersion.TLSv1_2:
            ctx.minimum_version = version
            with contextlib.suppress(ssl.SSLError):
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer it, so the server refuses

        def handshake() -> str | None:
            with socket.create_connection(("127.0.0.1", server.port)) as raw, \
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                return s.version()

        if accepted:
            assert await asyncio.to_thread(handshake) == {ssl.TLSVersion.TLSv1_3: "TLSv1.3",
                                                          ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[version]
        else:
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                await asyncio.to_thread(handshake)
    finally:
        await server.shutdown(1)
        await client.close()
        await router.telemetry.close()


async def test_certificate_rotation_reaches_new_connections_and_keeps_old_ones(
    start_service: Any, tmp_path: Path
) -> None:
    ca = trustme.CA()
    tls = ReloadingServerContext(*map(str, _write_pair(ca, tmp_path, "first")), check_seconds=0.05)
    router, server, client = await _router(start_service, tls)
    url = f"https://127.0.0.1:{server.port}"
    try:
        first = await asyncio.to_thread(_peer_serial, server.port, ca)
        connector = aiohttp.TCPConnector(ssl=_client_context(ca), limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.post(url, data=b"{}") as resp:
                assert resp.status == 200
            _write_pair(ca, tmp_path, "second")
            await asyncio.sleep(0.1)
            second = await asyncio.to_thread(_peer_serial, server.port, ca)
            assert second != first
            assert tls.reloads == 1
            # The connection opened before the rotation still serves (aiohttp reuses it).
            async with session.post(url, data=b"{}") as resp:
                assert resp.status == 200
            assert len(server.connections) == 1
        # A half-written rotation (a key that does not match) keeps the last good pair.
        other = trustme.CA().issue_cert("127.0.0.1")
        (tmp_path / "tls.key").write_bytes(other.private_key_pem.bytes())
        await asyncio.sleep(0.1)
        assert await asyncio.to_thread(_peer_serial, server.port, ca) == second
    finally:
        await server.shutdown(1)
        await client.close()
        await router.telemetry.close()


async def test_metrics_port_is_plain_http_and_serves_only_metrics(start_service: Any, start_router: Any) -> None:
    svc = await start_service({"/m": (200, {"ok": True})})
    running = await start_router(_spec(svc.url("/m")))
    server = await start_metrics_server(running.router, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/metrics") as resp:
                assert resp.status == 200
                assert "graph_router_requests_total" in await resp.text()
            async with session.get(base + "/readyz") as resp:
                assert resp.status == 200
            async with session.post(base + "/", data=b"{}") as resp:
                assert resp.status == 404
        assert svc.received == []
    finally:
        await server.shutdown(1)


async def test_cli_serves_https_with_metrics_port(start_service: Any, tmp_path: Path) -> None:
    """The real command: --tls-cert-file/--tls-key-file and --metrics-port."""
    svc = await start_service({"/m": (200, {"ok": True})})
    ca = trustme.CA()
    cert_file, key_file = _write_pair(ca, tmp_path)
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph-json", orjson.dumps(_spec(svc.url("/m"))).decode(),
        "--host", "127.0.0.1", "--port", str(ports[0]), "--drain-seconds", "0", "--tls-cert-file", str(cert_file),
        "--tls-key-file", str(key_file), "--metrics-port", str(ports[1]),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_client_context(ca))) as session:
            for _ in range(200):
                try:
                    async with session.get(f"http://127.0.0.1:{ports[1]}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            async with session.post(f"https://127.0.0.1:{ports[0]}/", data=b"{}") as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{ports[1]}/metrics") as resp:
                assert resp.status == 200
    finally:
        proc.terminate()
        await proc.wait()


@pytest.mark.parametrize(("flags", "message"), [
    (["--tls-cert-file", "/nonexistent/tls.crt"], "give both --tls-cert-file and --tls-key-file"),
    (["--tls-cert-file", "/nonexistent/tls.crt", "--tls-key-file", "/nonexistent/tls.key"],
     "cannot serve TLS with /nonexistent/tls.crt"),
    (["--enable-tls"], "cannot serve TLS with /etc/tls/private/tls.crt"),
])
async def test_cli_tls_flag_mistakes(flags: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph-json", orjson.dumps(_spec("http://x/")).decode(),
        *flags, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode in (1, 2)
    assert message in err.decode()


async def test_grpc_front_serves_tls_and_reloads_its_certificate(start_service: Any, start_router: Any,
                                                                 tmp_path: Path) -> None:
    """--grpc-port with the TLS flags: the gRPC front serves the same certificate, rotated likewise."""
    import grpc
    import grpc.aio

    from graph_router.grpc._proto import grpc_predict_v2_pb2 as pb
    from graph_router.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
    from graph_router.grpc.front import GRPCFront
    from graph_router.security.settings import SecuritySettings

    ca = trustme.CA()
    cert_file, key_file = _write_pair(ca, tmp_path, "first")
    svc = await start_service({"/m": (200, {"ok": True})})
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              security=SecuritySettings(tls_cert_file=str(cert_file), tls_key_file=str(key_file)))
    running = await start_router(_spec(svc.url("/m")), settings=settings)
    front = GRPCFront(running.router)
    port = await front.start("127.0.0.1", 0)

    def served_serial() -> int:
        from cryptography import x509

        ctx = _client_context(ca)
        ctx.set_alpn_protocols(["h2"])
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls_sock:
            der = tls_sock.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    try:
        creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds) as channel:
            live = await pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest())
            assert live.live
            first = await asyncio.to_thread(served_serial)
            _write_pair(ca, tmp_path, "second")
            second = await asyncio.to_thread(served_serial)
            assert second != first
            # The channel opened before the rotation still works.
            assert (await pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(pb.ServerLiveRequest())).live
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.GRPCInferenceServiceStub(plain).ServerLive(pb.ServerLiveRequest(), timeout=2)
    finally:
        await front.stop(0)
