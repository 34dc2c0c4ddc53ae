"""--enable-auth: TokenReview + SubjectAccessReview through the real kubernetes client against the
fake API server; 401/403 never run the graph; the decision cache is bounded and a slow API
server answers 503 instead of piling requests up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_ready
from fake_kube import FakeKube

from graph_router.controller.kube import KubeClient
from graph_router.security.auth import Authorizer, Reviewer
from graph_router.security.settings import AuthSettings

pytestmark = pytest.mark.asyncio

SPEC = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": "SVC"}]}}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeKube]:
    kube = FakeKube()
    await kube.start()
    kube.add_user("alice-token", "alice")
    kube.add_user("bob-token", "bob")
    kube.grant("alice", "my-graph", namespace="team")
    yield kube
    await kube.stop()


def _authorizer(fake: FakeKube, tmp_path: Path, **overrides: Any) -> Authorizer:
    settings = AuthSettings(graph_name="my-graph", namespace="team", **overrides)
    api_client = KubeClient.from_environment(str(fake.write_kubeconfig(tmp_path / "kubeconfig")))._api_client
    return Authorizer(settings, Reviewer(api_client, settings).review)


async def _routed(start_service: Any, start_router: Any, auth: Authorizer, **settings: Any) -> Any:
    svc = await start_service({"/m": _echo_auth})
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": svc.url("/m")}]}}}
    running = await start_router(spec, **settings)
    running.router.auth = auth
    return running, svc


async def _echo_auth(request: Any) -> Any:
    from aiohttp import web

    return web.json_response({"authorization": request.headers.get("Authorization")})


@pytest.mark.parametrize(("headers", "status", "reason"), [
    ({}, 401, "missing bearer token"),
    ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, 401, "missing bearer token"),
    ({"Authorization": "Bearer not-a-token"}, 401, "token has expired or is not valid"),
    ({"Authorization": "Bearer bob-token"}, 403, "user 'bob' may not get inferencegraphs/my-graph"),
])
async def test_denied_requests_never_run_the_graph(fake: FakeKube, tmp_path: Path, start_service: Any,
                                                   start_router: Any, headers: dict[str, str], status: int,
                                                   reason: str) -> None:
    auth = _authorizer(fake, tmp_path)
    running, svc = await _routed(start_service, start_router, auth)
    code, body, got = await running.post({"x": 1}, headers=headers)
    assert code == status
    assert reason in got["X-Forbidden-Reason"]
    assert body.startswith(b'{"error":"' + (b"Unauthorized" if status == 401 else b"Forbidden"))
    assert ("WWW-Authenticate" in got) == (status == 401)
    assert svc.received == []
    async with running.session.get(running.url + "/metrics") as resp:
        scraped = await resp.text()
    assert f'graph_router_requests_total{{graph="test",code="{status}"}} 1' in scraped
    auth.close()


async def test_allowed_user_runs_and_decisions_are_cached(fake: FakeKube, tmp_path: Path, start_service: Any,
                                                          start_router: Any) -> None:
    auth = _authorizer(fake, tmp_path)
    running, svc = await _routed(start_service, start_router, auth)
    for _ in range(5):
        code, _, _ = await running.post({"x": 1}, headers={"Authorization": "Bearer alice-token"})
        assert code == 200
    assert len(svc.received) == 5
    assert (fake.token_reviews, fake.access_reviews) == (1, 1)  # the API server was asked once
    sar = next(r.body for r in fake.requests if r.path.endswith("subjectaccessreviews"))
    assert sar["spec"]["resourceAttributes"] == {"group": "serving.kserve.io", "name": "my-graph",
                                                 "namespace": "team", "resource": "inferencegraphs", "verb": "get"}
    assert sar["spec"]["user"] == "alice"
    # /readyz stays open, and /metrics too without --metrics-auth.
    async with running.session.get(running.url + "/readyz") as resp:
        assert resp.status == 200
    async with running.session.get(running.url + "/metrics") as resp:
        assert resp.status == 200
    auth.close()


async def test_expired_token_is_refused_once_its_cached_decision_lapses(
    fake: FakeKube, tmp_path: Path, start_service: Any, start_router: Any
) -> None:
    auth = _authorizer(fake, tmp_path, cache_seconds=0.3)
    running, _ = await _routed(start_service, start_router, auth)
    hdr = {"Authorization": "Bearer alice-token"}
    assert (await running.post({}, headers=hdr))[0] == 200
    del fake.tokens["alice-token"]  # the token expires
    assert (await running.post({}, headers=hdr))[0] == 200  # still cached
    await asyncio.sleep(0.35)
    code, _, got = await running.post({}, headers=hdr)
    assert code == 401
    assert "expired" in got["X-Forbidden-Reason"]
    auth.close()


async def test_metrics_auth_protects_metrics(fake: FakeKube, tmp_path: Path, start_service: Any,
                                             start_router: Any) -> None:
    auth = _authorizer(fake, tmp_path, metrics_auth=True)
    running, _ = await _routed(start_service, start_router, auth)
    async with running.session.get(running.url + "/metrics") as resp:
        assert resp.status == 401
    async with running.session.get(running.url + "/metrics",
                                   headers={"Authorization": "Bearer alice-token"}) as resp:
        assert resp.status == 200
    async with running.session.get(running.url + "/readyz") as resp:
        assert resp.status == 200
    auth.close()


@pytest.mark.parametrize(("propagate", "forwarded"), [(None, None), ("Authorization", "Bearer alice-token")])
async def test_authorization_reaches_steps_only_when_propagate_headers_matches(
    fake: FakeKube, tmp_path: Path, start_service: Any, start_router: Any, propagate: str | None,
    forwarded: str | None
) -> None:
    auth = _authorizer(fake, tmp_path)
    running, _ = await _routed(start_service, start_router, auth, propagate_headers=propagate)
    code, body, _ = await running.post({}, headers={"Authorization": "Bearer alice-token"})
    assert code == 200
    assert body == b'{"authorization": ' + (b"null" if forwarded is None else f'"{forwarded}"'.encode()) + b"}"
    auth.close()


async def test_cache_stays_bounded_under_1000_distinct_tokens(fake: FakeKube, tmp_path: Path) -> None:
    auth = _authorizer(fake, tmp_path, cache_size=100, max_reviews=16)
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> int:
        async with sem:
            answer = await auth.check(f"Bearer token-{i}")
            assert answer is not None
            return int(answer.status)

    statuses = await asyncio.gather(*(one(i) for i in range(1000)))
    assert set(statuses) == {401}
    assert fake.token_reviews == 1000
    assert auth.cached == 100
    # The newest decisions are the ones kept: a recent token is answered without the API server.
    await auth.check("Bearer token-999")
    assert fake.token_reviews == 1000
    auth.close()


async def test_slow_token_review_times_out_to_503_without_piling_up(fake: FakeKube, tmp_path: Path,
                                                                    start_service: Any, start_router: Any) -> None:
    fake.review_delay = 2.0
    auth = _authorizer(fake, tmp_path, review_timeout=0.3, max_reviews=2)
    running, svc = await _routed(start_service, start_router, auth)
    started = time.monotonic()
    answers = await asyncio.gather(*(running.post({}, headers={"Authorization": f"Bearer t{i}"})
                                     for i in range(20)))
    elapsed = time.monotonic() - started
    assert [a[0] for a in answers] == [503] * 20
    assert elapsed < 1.5, elapsed  # nobody waited for the slow API server
    reasons = {a[2]["X-Forbidden-Reason"] for a in answers}
    assert reasons == {"authentication timed out (the Kubernetes API is slow)",
                       "too many authentication reviews in progress"}
    assert auth.reviews == 2  # only two reviews ever reached the API server's queue
    assert svc.received == []
    auth.close()


async def test_api_server_error_is_503_and_not_cached(fake: FakeKube, tmp_path: Path) -> None:
    auth = _authorizer(fake, tmp_path)
    fake.fail(1, 500, "tokenreviews")
    answer = await auth.check("Bearer alice-token")
    assert answer is not None and answer.status == 503
    assert await auth.check("Bearer alice-token") is None
    auth.close()


async def test_cli_enable_auth_needs_a_graph_name() -> None:
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph-json", '{"nodes": {}}', "--enable-auth",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"--enable-auth needs --inferencegraph-name NAME" in err




async def test_grpc_model_infer_is_checked_too(fake: FakeKube, tmp_path: Path, start_service: Any,
                                               start_router: Any) -> None:
    """--enable-auth with --grpc-port: ModelInfer reads the authorization metadata; health stays open."""
    import grpc
    import grpc.aio

    from graph_router.grpc._proto import grpc_predict_v2_pb2 as pb
    from graph_router.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
    from graph_router.grpc.front import GRPCFront

    async def v2(request: Any) -> Any:
        from aiohttp import web

        return web.json_response({"model_name": "m", "outputs": [
            {"name": "y", "shape": [1], "datatype": "INT64", "data": [7]}]})

    svc = await start_service({"/m": v2})
    running = await start_router({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": svc.url("/m")}]}}}, name="my-graph")
    running.router.auth = auth = _authorizer(fake, tmp_path)
    front = GRPCFront(running.router)
    port = await front.start("127.0.0.1", 0)
    request = pb.ModelInferRequest(model_name="my-graph")
    request.inputs.add(name="x", datatype="INT64", shape=[1]).contents.int64_contents.append(1)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
            for metadata, code in [((), grpc.StatusCode.UNAUTHENTICATED),
                                   ((("authorization", "Bearer bob-token"),), grpc.StatusCode.PERMISSION_DENIED)]:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ModelInfer(request, metadata=metadata)
                assert info.value.code() == code
            answer = await stub.ModelInfer(request, metadata=(("authorization", "Bearer alice-token"),))
            assert answer.outputs[0].name == "y"
        assert len(svc.received) == 1
    finally:
        await front.stop(0)
        auth.close()


async def test_cli_enable_auth_end_to_end(fake: FakeKube, tmp_path: Path, start_service: Any) -> None:
    """The real command with $KUBECONFIG pointing at the fake API server."""
    import os
    import socket
    import sys

    import orjson

    svc = await start_service({"/m": _echo_auth})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = orjson.dumps({"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": svc.url("/m")}]}}})
    env = {**os.environ, "KUBECONFIG": str(fake.write_kubeconfig(tmp_path / "kubeconfig"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph-json", spec.decode(), "--host", "127.0.0.1",
        "--port", str(port), "--drain-seconds", "0", "--enable-auth", "--inferencegraph-name", "my-graph",
        "--auth-namespace", "team", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            await wait_ready(session, url)
            async with session.post(url, data=b"{}") as resp:
                assert resp.status == 401
            async with session.post(url, data=b"{}", headers={"Authorization": "Bearer bob-token"}) as resp:
                assert resp.status == 403
            async with session.post(url, data=b"{}", headers={"Authorization": "Bearer alice-token"}) as resp:
                assert resp.status == 200
        assert fake.token_reviews == 2 and fake.access_reviews == 2
    finally:
        proc.terminate()
        await proc.wait()
