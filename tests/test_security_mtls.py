"""Calling https:// steps with the annotation's ``tls``: a private CA, a client certificate (mTLS),
an SNI override, insecureSkipVerify; pools never shared across settings; the Istio rewrite
leaves such steps alone and --no-istio-rewrite turns it off. Real TLS servers on loopback."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
import yaml
from aiohttp import web

from graph_router.errors import GraphError
from graph_router.extensions import ANNOTATION
from graph_router.loader import load_graph_text
from graph_router.plan import compile_graph
from graph_router.settings import ServerSettings
from graph_router.upstream import UpstreamSettings

pytestmark = pytest.mark.asyncio


class Files:
    """A private CA, the service's certificate and the router's client certificate, on disk."""

    def __init__(self, tmp: Path, service_names: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.ca = trustme.CA()
        self.server = self.ca.issue_cert(*service_names)
        self.client = self.ca.issue_cert("graph-router.team.svc", common_name="graph-router")
        self.ca_file = tmp / "ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.cert_file, self.key_file = tmp / "client.crt", tmp / "client.key"
        self.client.cert_chain_pems[0].write_to_path(str(self.cert_file))
        self.client.private_key_pem.write_to_path(str(self.key_file))

    def tls(self, **extra: Any) -> dict[str, Any]:
        return {"caFile": str(self.ca_file), "certFile": str(self.cert_file), "keyFile": str(self.key_file), **extra}


async def _tls_service(files: Files, *, require_client_cert: bool = True) -> tuple[web.AppRunner, int, list[str]]:
    """A TLS model stand-in; records the client certificate's common name per call."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        cn = ""
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    cn = value
        seen.append(cn)
        return web.json_response({"path": request.path, "client": cn})

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    files.server.configure_cert(ctx)
    if require_client_cert:
        files.ca.configure_trust(ctx)
        ctx.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_post("/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1], seen  # type: ignore[union-attr]


@pytest.fixture
async def runners() -> AsyncIterator[list[web.AppRunner]]:
    kept: list[web.AppRunner] = []
    yield kept
    for r in kept:
        await r.cleanup()


def _plan(steps: list[dict[str, Any]], extensions: dict[str, Any], node: str = "Sequence") -> Any:
    text = yaml.safe_dump({
        "kind": "InferenceGraph",
        "metadata": {"name": "mtls", "annotations": {ANNOTATION: yaml.safe_dump(extensions)}},
        "spec": {"nodes": {"root": {"routerType": node, "steps": steps}}},
    })
    return compile_graph(load_graph_text(text, "g.yaml"))


async def _serve(start_router: Any, plan: Any, **settings: Any) -> Any:
    running = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": "http://127.0.0.1:9/unused"}]}}}, **settings)
    running.router.swap(plan)
    assert running.router.plan is plan
    return running


async def test_step_with_client_certificate_and_private_ca(tmp_path: Path, start_router: Any,
                                                           runners: list[web.AppRunner]) -> None:
    files = Files(tmp_path)
    runner, port, seen = await _tls_service(files)
    runners.append(runner)
    url = f"https://127.0.0.1:{port}/m"
    running = await _serve(start_router, _plan([{"name": "m", "serviceUrl": url}],
                                               {"steps": {"root/m": {"tls": files.tls()}}}))
    status, body, _ = await running.post({"a": 1})
    assert status == 200, body
    assert orjson.loads(body) == {"path": "/m", "client": "graph-router"}
    # Without the client certificate the service refuses the handshake: a transport error.
    running.router.swap(_plan([{"name": "m", "serviceUrl": url}], {"tls": {"caFile": str(files.ca_file)}}))
    status, body, _ = await running.post({"a": 1})
    assert status == 500
    assert b"failed" in body
    # Without the private CA the router does not trust the service.
    running.router.swap(_plan([{"name": "m", "serviceUrl": url}], {}))
    status, body, _ = await running.post({"a": 1})
    assert status == 500
    assert b"CERTIFICATE_VERIFY_FAILED" in body
    assert seen == ["graph-router"]


async def test_graph_tls_applies_to_every_https_step_and_pools_are_per_settings(
    tmp_path: Path, start_router: Any, runners: list[web.AppRunner]
) -> None:
    """Two steps on one host:port: the graph's settings (with a certificate) and a step's own
    (without one). A connection made with the certificate is never lent to the other step."""
    files = Files(tmp_path)
    runner, port, seen = await _tls_service(files)
    runners.append(runner)
    steps = [{"name": "a", "serviceUrl": f"https://127.0.0.1:{port}/a"},
             {"name": "b", "serviceUrl": f"https://127.0.0.1:{port}/b"}]
    ext = {"tls": files.tls(), "steps": {"root/b": {"tls": {"caFile": str(files.ca_file)}}}}
    running = await _serve(start_router, _plan(steps, ext, node="Ensemble"))
    status, body, _ = await running.post({"x": 1})
    assert status == 500  # b has no client certificate
    running.router.swap(_plan(steps, {"tls": files.tls()}, node="Ensemble"))
    status, body, _ = await running.post({"x": 1})
    assert status == 200, body
    assert orjson.loads(body) == {"a": {"path": "/a", "client": "graph-router"},
                                  "b": {"path": "/b", "client": "graph-router"}}
    pools = running.router._client._http._pools
    assert len({k for k in pools if k[1:] == ("127.0.0.1", port)}) == 2  # one per settings
    assert len([c for c in seen if c == "graph-router"]) == 3


async def test_server_name_overrides_sni_and_the_name_checked(tmp_path: Path, start_router: Any,
                                                             runners: list[web.AppRunner]) -> None:
    files = Files(tmp_path, service_names=("model.internal",))
    runner, port, _ = await _tls_service(files)
    runners.append(runner)
    steps = [{"name": "m", "serviceUrl": f"https://127.0.0.1:{port}/m"}]
    running = await _serve(start_router, _plan(steps, {"tls": files.tls()}))
    assert (await running.post({}))[0] == 500  # the certificate is not for 127.0.0.1
    running.router.swap(_plan(steps, {"tls": files.tls(serverName="model.internal")}))
    assert (await running.post({}))[0] == 200


async def test_insecure_skip_verify_warns_at_load(tmp_path: Path, start_router: Any, runners: list[web.AppRunner],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    files = Files(tmp_path)
    runner, port, _ = await _tls_service(files, require_client_cert=False)
    runners.append(runner)
    steps = [{"name": "m", "serviceUrl": f"https://127.0.0.1:{port}/m"}]
    with caplog.at_level(logging.WARNING, logger="graph_router.security.tls"):
        running = await _serve(start_router, _plan(steps, {"tls": {"insecureSkipVerify": True}}))
    warned = [r for r in caplog.records if "insecureSkipVerify" in r.getMessage()]
    assert len(warned) == 1
    for _ in range(3):
        assert (await running.post({}))[0] == 200
    assert len([r for r in caplog.records if "insecureSkipVerify" in r.getMessage()]) == 1


async def test_unloadable_tls_files_keep_the_current_graph(tmp_path: Path, start_router: Any) -> None:
    running = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": "http://127.0.0.1:9/unused"}]}}})
    before = running.router.plan
    bad = _plan([{"name": "m", "serviceUrl": "https://127.0.0.1:9/m"}],
                {"tls": {"caFile": str(tmp_path / "missing.crt")}})
    running.router.swap(bad)
    assert running.router.plan is before
    assert running.router.telemetry.metrics.reload_failures == 1
    from graph_router.security.tls import step_tls

    with pytest.raises(GraphError, match="step root/m: tls:"):
        step_tls(bad)


@pytest.mark.parametrize("tls", [{"certFile": "/x"}, {"keyFile": "/x"}, {"caFile": "/x", "verify": True}])
async def test_tls_mistakes_are_load_errors(tls: dict[str, Any]) -> None:
    with pytest.raises(GraphError, match="tls"):
        _plan([{"serviceUrl": "https://h/m"}], {"tls": tls})


async def test_istio_rewrite_skips_tls_steps_and_can_be_turned_off(
    tmp_path: Path, start_router: Any, start_service: Any, runners: list[web.AppRunner]
) -> None:
    files = Files(tmp_path)
    runner, port, seen = await _tls_service(files)
    runners.append(runner)
    probe = await start_service({"/": (200, b"envoy")})
    upstream = UpstreamSettings(istio_probe_url=probe.url("/"))
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, upstream=upstream)
    url = f"https://127.0.0.1:{port}/m"
    running = await _serve(start_router, _plan([{"name": "m", "serviceUrl": url}], {"tls": files.tls()}),
                           settings=settings)
    assert (await running.post({}))[0] == 200  # called over TLS although a sidecar answers
    assert seen == ["graph-router"]
    # A plain https step beside a sidecar is rewritten (KServe's behaviour) ...
    plain = await start_service({"/m": (200, {"plain": True})})
    https_plain = plain.url("/m").replace("http://", "https://")
    running.router.swap(_plan([{"name": "m", "serviceUrl": https_plain}], {}))
    assert (await running.post({}))[0] == 200
    # ... unless --no-istio-rewrite.
    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0,
                              upstream=UpstreamSettings(istio_probe_url=probe.url("/"), istio_rewrite=False))
    off = await _serve(start_router, _plan([{"name": "m", "serviceUrl": https_plain}], {}), settings=settings)
    assert (await off.post({}))[0] == 500
    assert len(probe.received) == 1  # asked once, and never with the rewrite off


async def test_rotated_client_certificate_is_used_for_new_connections(tmp_path: Path, start_router: Any,
                                                                       runners: list[web.AppRunner]) -> None:
    files = Files(tmp_path)
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append(next((v for rdn in (peer or {}).get("subject", ()) for k, v in rdn if k == "commonName"), ""))
        answer = web.json_response({"ok": True})
        answer.force_close()  # every call opens a new connection
        return answer

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    files.server.configure_cert(ctx)
    files.ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_post("/m", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    running = await _serve(start_router, _plan([{"name": "m", "serviceUrl": f"https://127.0.0.1:{port}/m"}],
                                               {"tls": files.tls()}))
    assert (await running.post({}))[0] == 200
    renewed = files.ca.issue_cert("graph-router.team.svc", common_name="graph-router-renewed")
    renewed.private_key_pem.write_to_path(str(files.key_file))
    renewed.cert_chain_pems[0].write_to_path(str(files.cert_file))
    await asyncio.sleep(2.1)  # ClientTLS looks at the files at most every 2 s
    assert (await running.post({}))[0] == 200
    assert seen == ["graph-router", "graph-router-renewed"]


async def test_grpcs_step_with_client_certificate(tmp_path: Path, start_router: Any) -> None:
    """A grpcs:// step to a gRPC server that requires a client certificate from a private CA."""
    import grpc
    import grpc.aio
    from test_grpc import StandIn

    files = Files(tmp_path, service_names=("model.internal",))
    model = StandIn()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(model.infer)}),))
    credentials = grpc.ssl_server_credentials(
        [(files.server.private_key_pem.bytes(), files.server.cert_chain_pems[0].bytes())],
        root_certificates=files.ca.cert_pem.bytes(), require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    from graph_router.grpc.steps import close_channels

    try:
        steps = [{"name": "m", "serviceUrl": f"grpcs://127.0.0.1:{port}/v2/models/echo/infer"}]
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [3]}]}
        # Without a client certificate the server refuses the connection.
        running = await _serve(start_router, _plan(steps, {"tls": {"caFile": str(files.ca_file),
                                                                   "serverName": "model.internal"}}))
        assert (await running.post(body))[0] == 500
        running.router.swap(_plan(steps, {"tls": files.tls(serverName="model.internal")}))
        status_code, answer, _ = await running.post(body)
        assert status_code == 200, answer
        assert orjson.loads(answer)["outputs"][0]["data"] == [3]
        with pytest.raises(GraphError, match="insecureSkipVerify is not available for grpcs"):
            from graph_router.security.tls import step_tls

            step_tls(_plan(steps, {"tls": {"insecureSkipVerify": True}}))
    finally:
        await close_channels()
        await server.stop(0)
