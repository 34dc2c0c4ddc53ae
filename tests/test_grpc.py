"""gRPC end to end: the Open Inference Protocol v2 in front of a graph and at its steps.

Conversion is checked datatype by datatype; the front and the steps against a gRPC
model stand-in on loopback (a real grpc.aio server that records what crossed the
wire), then against a real KServe ModelServer with gRPC on serving a real
scikit-learn model, called with real clients: grpcio stubs built from our proto and
kserve's own InferenceGRPCClient (both in the peer venv, .venv-kserve).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import orjson
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from graph_router.errors import GraphValidationError
from graph_router.extensions import ANNOTATION
from graph_router.grpc import convert, status
from graph_router.grpc._proto import grpc_predict_v2_pb2 as pb
from graph_router.grpc._proto import grpc_predict_v2_pb2_grpc as pb_grpc
from graph_router.grpc.front import GRPCFront, passes_protobuf, request_model
from graph_router.grpc.urls import parse
from graph_router.loader import load_graph_json, load_graph_text
from graph_router.plan import compile_graph

ROOT = Path(__file__).resolve().parents[1]
PEER_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
PEER_SCRIPT = Path(__file__).parent / "peers" / "kserve_sklearn_grpc.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- conversion -------------------------------------------------------------------

ALL_TYPES: list[tuple[str, list[Any]]] = [
    ("BOOL", [True, False, True]),
    ("INT8", [-128, 0, 127]),
    ("INT16", [-32768, 1, 32767]),
    ("INT32", [-(2**31), 2, 2**31 - 1]),
    ("INT64", [-(2**63), 3, 2**63 - 1]),
    ("UINT8", [0, 1, 255]),
    ("UINT16", [0, 2, 65535]),
    ("UINT32", [0, 3, 2**32 - 1]),
    ("UINT64", [0, 4, 2**64 - 1]),
    ("FP16", [1.5, -0.25, 65504.0]),
    ("FP32", [struct.unpack("<f", struct.pack("<f", 0.1))[0], -3.5, struct.unpack("<f", struct.pack("<f", 1e-30))[0]]),
    ("FP64", [0.1, -1e300, 5e-324]),
    ("BYTES", ["text", "", "ünï"]),
]


@pytest.mark.parametrize(("datatype", "data"), ALL_TYPES)
def test_every_datatype_survives_json_to_protobuf_and_back(datatype: str, data: list[Any]) -> None:
    """V2 JSON -> ModelInferRequest (raw contents) -> V2 JSON gives the same values, as the same types."""
    doc = {"id": "1", "parameters": {"b": True, "i": -2, "u": 2**64 - 1, "d": 0.5, "s": "x"},
           "inputs": [{"name": "t", "shape": [3], "datatype": datatype, "parameters": {"p": "q"}, "data": data}],
           "outputs": [{"name": "o", "parameters": {"binary_data": False}}]}
    request = convert.json_to_request(doc, "m", "2")
    assert (request.model_name, request.model_version) == ("m", "2")
    assert len(request.raw_input_contents) == 1 and not request.inputs[0].HasField("contents")
    again = convert.request_to_json(pb.ModelInferRequest.FromString(request.SerializeToString()))
    assert again == doc
    assert [type(v) for v in again["inputs"][0]["data"]] == [type(v) for v in data]


@pytest.mark.parametrize(("datatype", "data"), [t for t in ALL_TYPES if t[0] != "FP16"])
def test_typed_contents_read_as_json(datatype: str, data: list[Any]) -> None:
    """A response in typed contents (as some servers answer) reads as the same V2 JSON."""
    response = pb.ModelInferResponse(model_name="m", id="7")
    out = response.outputs.add(name="o", datatype=datatype, shape=[3])
    field_name = {"BOOL": "bool_contents", "INT64": "int64_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}.get(
        datatype, "int_contents" if datatype.startswith("INT") else "uint_contents")
    values = [v.encode() for v in data] if datatype == "BYTES" else data
    getattr(out.contents, field_name).extend(values)
    doc = convert.response_to_json(response)
    assert doc == {"model_name": "m", "id": "7", "outputs": [{"name": "o", "shape": [3], "datatype": datatype,
                                                              "data": data}]}
    assert convert.response_to_json(convert.json_to_response(doc)) == doc


def test_raw_layout_is_little_endian_row_major_with_length_prefixed_bytes() -> None:
    """The bytes on the wire are the protocol's layout, not just self-consistent."""
    request = convert.json_to_request({"inputs": [
        {"name": "a", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
        {"name": "b", "shape": [2], "datatype": "BYTES", "data": ["hi", ""]},
        {"name": "c", "shape": [1], "datatype": "FP16", "data": [1.0]},
        {"name": "d", "shape": [2], "datatype": "BOOL", "data": [True, False]}]}, "m")
    assert list(request.raw_input_contents) == [
        struct.pack("<4i", 1, 2, 3, 4), b"\x02\x00\x00\x00hi\x00\x00\x00\x00", b"\x00\x3c", b"\x01\x00"]
    assert list(request.inputs[0].shape) == [2, 2]


@pytest.mark.parametrize(("doc", "message"), [
    ({"inputs": [{"name": "a", "shape": [3], "datatype": "FP32", "data": [1.0]}]}, "do not fill shape"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "FP8", "data": [1]}]}, "unknown datatype"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "UINT8", "data": [256]}]}, "does not fit UINT8"),
    ({"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": ["x"]}]}, "does not fit INT32"),
    ({"instances": [1]}, "needs inputs"),
    ({"inputs": [], "parameters": {"x": [1]}}, "must be a boolean, number or string"),
])
def test_json_that_protobuf_cannot_hold_is_refused_with_a_reason(doc: Any, message: str) -> None:
    with pytest.raises(convert.ConversionError, match=message):
        convert.json_to_request(doc, "m")


def test_raw_contents_that_do_not_match_the_shape_or_are_not_text_are_refused() -> None:
    with pytest.raises(convert.ConversionError, match="do not hold 3 FP32"):
        convert.raw_to_list("FP32", b"\x00" * 8, [3], "input 'a'")
    with pytest.raises(convert.ConversionError, match="end inside an element"):
        convert.raw_to_list("BYTES", b"\x05\x00\x00\x00ab", [1], "input 'a'")
    with pytest.raises(convert.ConversionError, match="not UTF-8"):
        convert.raw_to_list("BYTES", b"\x01\x00\x00\x00\xff", [1], "input 'a'")


def test_a_graph_answer_that_is_not_a_v2_response_is_carried_whole() -> None:
    """An Ensemble's merged object reaches a gRPC client as one BYTES output holding its JSON."""
    response = convert.json_to_response({"a": {"x": 1}, "b": [2]})
    assert response.outputs[0].name == "json" and response.outputs[0].datatype == "BYTES"
    assert response.raw_output_contents[0][4:] == b'{"a":{"x":1},"b":[2]}'


def test_status_codes_map_both_ways_as_kserve_documents() -> None:
    pairs = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
             503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED, 500: grpc.StatusCode.INTERNAL}
    for http, code in pairs.items():
        assert status.grpc_code(http) is code
        assert status.http_status(code) == http
    assert status.grpc_code(418) is grpc.StatusCode.INVALID_ARGUMENT
    assert status.grpc_code(599) is grpc.StatusCode.INTERNAL


def test_model_name_is_read_without_parsing_the_tensors() -> None:
    request = pb.ModelInferRequest(model_name="graph", id="x")
    request.raw_input_contents.append(b"\x00" * 1000)
    raw = request.SerializeToString()
    assert request_model(raw) == "graph"
    assert request_model(raw + b"\x0a\x03abc") == "abc"  # the last occurrence wins, as in protobuf
    with pytest.raises(ValueError):
        request_model(b"\x0a\x10ab")
    # Varints of up to 64 bits are read whole (a 10-octet id length of 2^63 runs past the end);
    # longer ones are refused, as protobuf refuses them, in both builds alike.
    with pytest.raises(ValueError, match="ends inside"):
        request_model(b"\x12" + b"\x80" * 9 + b"\x01")
    with pytest.raises(ValueError, match="over 64 bits"):
        request_model(b"\x12" + b"\x80" * 9 + b"\x02")
    with pytest.raises(ValueError):
        request_model(b"\x12" + b"\x80" * 10 + b"\x01")
    assert request_model(b"\x18" + b"\xff" * 9 + b"\x01" + raw) == "graph"  # a 64-bit varint field skipped


def test_grpc_step_urls_are_validated_at_load() -> None:
    assert parse("grpc://m.default.svc:8081/v2/models/iris/infer").authority == "m.default.svc:8081"
    assert parse("grpcs://m/v2/models/iris/versions/3/infer").version == "3"
    assert parse("grpcs://m/v2/models/iris/infer").port == 443
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": "grpc://m:8081/v1/models/x"}]}}}
    with pytest.raises(GraphValidationError, match="path is /v2/models/MODEL/infer"):
        compile_graph(load_graph_json(json.dumps(spec)))
    spec["nodes"]["root"]["steps"] = [{"serviceUrl": "ftp://m/x"}]
    with pytest.raises(GraphValidationError, match="is not an http"):
        compile_graph(load_graph_json(json.dumps(spec)))


def _plan(spec: dict[str, Any]) -> Any:
    return compile_graph(load_graph_json(json.dumps(spec)))


def test_protobuf_passes_through_only_where_nothing_reads_the_body() -> None:
    grpc_step = {"serviceUrl": "grpc://m:1/v2/models/a/infer"}
    assert passes_protobuf(_plan({"nodes": {"root": {"routerType": "Sequence", "steps": [grpc_step]}}}))
    assert not passes_protobuf(_plan({"nodes": {"root": {"routerType": "Sequence", "steps": [
        grpc_step, {**grpc_step, "data": "$response"}]}}}))
    assert not passes_protobuf(_plan({"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": "http://m/v2/models/a/infer"}]}}}))
    assert not passes_protobuf(_plan({"nodes": {"root": {"routerType": "Ensemble", "steps": [grpc_step]}}}))


# --- a gRPC model stand-in --------------------------------------------------------


@dataclass
class StandIn:
    """A gRPC model server on loopback: answers by model name, records every call."""

    port: int = 0
    calls: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    fail_first: int = 0  # answer UNAVAILABLE to this many calls first
    server: grpc.aio.Server | None = None

    def url(self, model: str) -> str:
        return f"grpc://127.0.0.1:{self.port}/v2/models/{model}/infer"

    async def infer(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        meta = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.calls.append((raw, meta))
        request = pb.ModelInferRequest.FromString(raw)
        if self.fail_first > 0:
            self.fail_first -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        if request.model_name == "slow":
            await asyncio.sleep(3)
        if request.model_name == "bad":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input 'x' has the wrong shape")
        if request.model_name not in ("echo", "slow", "label"):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.model_name} not found")
        response = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
        if request.model_name == "label":
            out = response.outputs.add(name="label", datatype="BYTES", shape=[1])
            out.contents.bytes_contents.append(b"cat")
            return response.SerializeToString()
        for tensor in request.inputs:
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.extend(request.raw_input_contents)
        return response.SerializeToString()


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    model = StandIn()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(model.infer)}),))
    model.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    model.server = server
    yield model
    await server.stop(0)


@dataclass
class Front:
    """The router with its gRPC front, and a grpcio stub built from our proto to call it."""

    http: Any
    stub: pb_grpc.GRPCInferenceServiceStub
    health: health_pb2_grpc.HealthStub
    front: GRPCFront
    channel: grpc.aio.Channel
    port: int


@pytest.fixture
async def start_front(start_router: Any) -> AsyncIterator[Callable[..., Awaitable[Front]]]:
    started: list[Front] = []

    async def start(spec: dict[str, Any], **kwargs: Any) -> Front:
        http = await start_router(spec, **kwargs)
        front = GRPCFront(http.router)
        port = await front.start("127.0.0.1", 0)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        made = Front(http, pb_grpc.GRPCInferenceServiceStub(channel), health_pb2_grpc.HealthStub(channel), front,
                     channel, port)
        started.append(made)
        return made

    yield start
    for made in started:
        await made.channel.close()
        await made.front.stop(0)


def one_step(url: str, **step: Any) -> dict[str, Any]:
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url, **step}]}}}


def fp32_request(model: str, values: array.array[float]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="req-1")
    request.inputs.add(name="x", datatype="FP32", shape=[len(values)])
    request.raw_input_contents.append(values.tobytes())
    return request


def outputs_as_json(response: pb.ModelInferResponse) -> list[dict[str, Any]]:
    return list(convert.response_to_json(response)["outputs"])


async def test_grpc_front_to_grpc_step_passes_a_1mib_fp32_tensor_bit_exact(stand_in: StandIn, start_front: Any) -> None:
    """The bytes the client sent are the bytes the model got, and the answer's are the model's, renamed."""
    front = await start_front(one_step(stand_in.url("echo")), name="g")
    values = array.array("f", [math.nan, -0.0, math.inf, 1e-45, *[i / 7 for i in range(262140)]])
    assert len(values.tobytes()) == 1024 * 1024
    answer = await front.stub.ModelInfer(fp32_request("g", values))
    received = pb.ModelInferRequest.FromString(stand_in.calls[0][0])
    assert received.model_name == "echo" and received.model_version == "" and received.id == "req-1"
    assert received.raw_input_contents[0] == values.tobytes()
    assert answer.raw_output_contents[0] == values.tobytes()
    assert (answer.model_name, answer.outputs[0].name, list(answer.outputs[0].shape)) == ("echo", "x", [262144])


async def test_bytes_tensor_through_raw_input_contents_is_bit_exact(stand_in: StandIn, start_front: Any) -> None:
    """BYTES elements, binary ones included, arrive and come back exactly."""
    front = await start_front(one_step(stand_in.url("echo")), name="g")
    elements = [b"\x00\xff\xfe binary", b"", "ünï".encode(), bytes(range(256))]
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    request = pb.ModelInferRequest(model_name="g")
    request.inputs.add(name="b", datatype="BYTES", shape=[4])
    request.raw_input_contents.append(raw)
    answer = await front.stub.ModelInfer(request)
    assert pb.ModelInferRequest.FromString(stand_in.calls[0][0]).raw_input_contents[0] == raw
    assert answer.raw_output_contents[0] == raw


async def test_rest_front_to_grpc_step(stand_in: StandIn, start_router: Any) -> None:
    """A V2 JSON request becomes a ModelInferRequest; the answer comes back as V2 JSON."""
    router = await start_router(one_step(stand_in.url("echo")))
    doc = {"id": "r1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1.5, 2], [3, 4]]},
                                  {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}
    status_code, body, headers = await router.post(doc)
    assert status_code == 200 and headers["Content-Type"] == "application/json"
    received = pb.ModelInferRequest.FromString(stand_in.calls[0][0])
    assert received.model_name == "echo" and received.id == "r1"
    assert orjson.loads(body) == {"model_name": "echo", "id": "r1", "outputs": [
        {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1.5, 2.0, 3.0, 4.0]},
        {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}


async def test_grpc_front_to_rest_step(start_service: Any, start_front: Any) -> None:
    """A REST step gets the request as V2 JSON, tensors decoded; its V2 answer returns as protobuf."""
    v2_answer = {"model_name": "rest", "id": "req-1", "outputs": [
        {"name": "y", "shape": [2], "datatype": "INT64", "data": [7, 8]}]}
    service = await start_service({"/v2/models/rest/infer": (200, v2_answer)})
    front = await start_front(one_step(service.url("/v2/models/rest/infer")), name="g")
    answer = await front.stub.ModelInfer(fp32_request("g", array.array("f", [0.5, 1.5])))
    assert service.received[0].json() == {"id": "req-1", "inputs": [
        {"name": "x", "shape": [2], "datatype": "FP32", "data": [0.5, 1.5]}]}
    assert outputs_as_json(answer) == v2_answer["outputs"]
    assert answer.model_name == "rest"


async def test_errors_map_to_grpc_codes_and_http_statuses(stand_in: StandIn, start_front: Any) -> None:
    """A gRPC service's INVALID_ARGUMENT is 400 over REST and INVALID_ARGUMENT over gRPC; a wrong name NOT_FOUND."""
    front = await start_front(one_step(stand_in.url("bad"), dependency="Hard"), name="g")
    status_code, body, _ = await front.http.post({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                                             "data": [1]}]})
    assert (status_code, orjson.loads(body)) == (400, {"error": "input 'x' has the wrong shape"})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await front.stub.ModelInfer(fp32_request("g", array.array("f", [1])))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "input 'x' has the wrong shape"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await front.stub.ModelInfer(fp32_request("other", array.array("f", [1])))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND and "'other'" in (info.value.details() or "")


async def test_a_refused_grpc_step_is_a_500_and_opens_the_breaker(start_front: Any) -> None:
    """No server at the port: a transport error (500 with the cause), then fast 503s once the circuit opens."""
    port = free_port()
    front = await start_front(one_step(f"grpc://127.0.0.1:{port}/v2/models/m/infer"), name="g")
    for _ in range(5):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await front.stub.ModelInfer(fp32_request("g", array.array("f", [1])))
        assert info.value.code() is grpc.StatusCode.INTERNAL
        assert f"grpc://127.0.0.1:{port}" in (info.value.details() or "")
    status_code, body, _ = await front.http.post({"inputs": []})
    assert status_code == 503 and "circuit open" in orjson.loads(body)["cause"]


async def test_policy_retries_a_grpc_step(stand_in: StandIn, start_router: Any) -> None:
    """UNAVAILABLE is 503, which the step's policy retries, as for a REST step."""
    stand_in.fail_first = 2
    extensions = {"steps": {"root/0": {"policy": {"retries": 2, "backoffSeconds": 0.01}}}}
    router = await start_router(one_step(stand_in.url("echo")))
    text = yaml.safe_dump({"kind": "InferenceGraph", "metadata": {"name": "r", "annotations": {
        ANNOTATION: yaml.safe_dump(extensions)}}, "spec": one_step(stand_in.url("echo"))})
    router.router.swap(compile_graph(load_graph_text(text, "r.yaml")))
    status_code, _, _ = await router.post({"inputs": []})
    assert status_code == 200 and len(stand_in.calls) == 3


async def test_client_deadline_caps_the_graph_and_step_timeouts_apply(stand_in: StandIn, start_front: Any) -> None:
    """A 0.3 s client deadline ends a graph whose step takes 3 s; a REST call is bound by its step timeout."""
    front = await start_front(one_step(stand_in.url("slow"), dependency="Hard"), name="g")
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await front.stub.ModelInfer(fp32_request("g", array.array("f", [1])), timeout=0.3)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    spec = one_step(stand_in.url("slow"))
    spec["routerTimeouts"] = {"serviceClient": 1}
    other = await start_front(spec, name="g")
    status_code, body, _ = await other.http.post({"inputs": []})
    assert status_code == 500 and "timed out after 1s" in orjson.loads(body)["cause"]


async def test_propagated_headers_become_metadata_and_back(stand_in: StandIn, start_service: Any,
                                                           start_front: Any) -> None:
    """PROPAGATE_HEADERS picks REST headers for gRPC steps and gRPC metadata for REST steps."""
    from graph_router.settings import ServerSettings

    settings = ServerSettings(host="127.0.0.1", port=0, drain_seconds=0, propagate_headers="X-Request-Id,Authoriz")
    service = await start_service({"/v2/models/rest/infer": (200, {"outputs": []})})
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": stand_in.url("echo")}, {"serviceUrl": service.url("/v2/models/rest/infer")}]}}}
    front = await start_front(spec, name="g", settings=settings)
    await front.http.post({"inputs": []}, headers={"X-Request-Id": "abc", "X-Other": "no"})
    assert stand_in.calls[0][1].get("x-request-id") == "abc" and "x-other" not in stand_in.calls[0][1]
    await front.stub.ModelInfer(fp32_request("g", array.array("f", [1])),
                                metadata=(("x-request-id", "def"), ("authorization", "Bearer t"), ("x-other", "n")))
    assert service.received[1].header_values("X-Request-Id") == ["def"]
    assert service.received[1].header_values("Authorization") == ["Bearer t"]
    assert service.received[1].header_values("X-Other") == []


async def test_switch_on_a_grpc_answer_and_ensemble_of_rest_and_grpc(stand_in: StandIn, start_service: Any,
                                                                     start_front: Any) -> None:
    """Conditions read a gRPC answer as V2 JSON; an Ensemble merges a REST and a gRPC member."""
    service = await start_service({"/v2/models/cat/infer": (200, {"outputs": [
        {"name": "says", "shape": [1], "datatype": "BYTES", "data": ["meow"]}]})})
    spec = {"nodes": {
        "root": {"routerType": "Sequence", "steps": [
            {"serviceUrl": stand_in.url("label")},
            {"nodeName": "pick", "data": "$response"}]},
        "pick": {"routerType": "Switch", "steps": [
            {"serviceUrl": stand_in.url("echo"), "condition": 'outputs.#(name=="dog")'},
            {"serviceUrl": service.url("/v2/models/cat/infer"), "condition": 'outputs.#(name=="label")'}]}}}
    front = await start_front(spec, name="g")
    answer = await front.stub.ModelInfer(fp32_request("g", array.array("f", [1])))
    assert outputs_as_json(answer)[0]["data"] == ["meow"]
    both = await start_front({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "rest", "serviceUrl": service.url("/v2/models/cat/infer")},
        {"name": "grpc", "serviceUrl": stand_in.url("echo")}]}}}, name="g")
    status_code, body, _ = await both.http.post({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32",
                                                            "data": [5]}]})
    merged = orjson.loads(body)
    assert status_code == 200 and merged["grpc"]["outputs"][0]["data"] == [5]
    assert merged["rest"]["outputs"][0]["data"] == ["meow"]
    answer = await both.stub.ModelInfer(fp32_request("g", array.array("f", [2])))
    carried = answer.raw_output_contents[0][4:]
    assert answer.outputs[0].name == "json" and orjson.loads(carried)["grpc"]["outputs"][0]["data"] == [2.0]


async def test_readiness_health_and_metadata_follow_the_router(start_front: Any) -> None:
    front = await start_front(one_step("grpc://127.0.0.1:1/v2/models/m/infer"), name="g")
    assert (await front.stub.ServerLive(pb.ServerLiveRequest())).live
    assert (await front.stub.ServerReady(pb.ServerReadyRequest())).ready
    assert (await front.stub.ModelReady(pb.ModelReadyRequest(name="g"))).ready
    assert (await front.stub.ModelMetadata(pb.ModelMetadataRequest(name="g"))).name == "g"
    assert (await front.stub.ServerMetadata(pb.ServerMetadataRequest())).name == "graph-router"
    check = await front.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    watch = front.health.Watch(health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService"))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    front.http.router.shutting_down = True  # what SIGTERM does: drain
    assert not (await front.stub.ServerReady(pb.ServerReadyRequest())).ready
    check = await front.health.Check(health_pb2.HealthCheckRequest(service=""))
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await front.health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await front.stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_serve_grpc_port_runs_the_front_beside_http(tmp_path: Path) -> None:
    """``graph-router serve --grpc-port`` answers gRPC health and readiness, and stops on SIGTERM."""
    graph = tmp_path / "g.yaml"
    graph.write_text(yaml.safe_dump({"kind": "InferenceGraph", "metadata": {"name": "g"},
                                     "spec": one_step("grpc://127.0.0.1:1/v2/models/m/infer")}))
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "graph_router", "serve", str(graph), "--host", "127.0.0.1",
                             "--port", str(http_port), "--grpc-port", str(grpc_port), "--drain-seconds", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            ready = pb_grpc.GRPCInferenceServiceStub(channel).ModelReady(pb.ModelReadyRequest(name="g"), timeout=5)
            assert ready.ready
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- a real KServe ModelServer with gRPC, serving a real scikit-learn model --------


@dataclass
class Peer:
    rest: str  # http://127.0.0.1:PORT
    grpc_target: str  # 127.0.0.1:PORT

    def grpc_url(self, model: str) -> str:
        return f"grpc://{self.grpc_target}/v2/models/{model}/infer"

    def rest_url(self, model: str) -> str:
        return f"{self.rest}/v2/models/{model}/infer"


@pytest.fixture(scope="module")
def kserve_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """kserve's ModelServer with gRPC on, serving a LogisticRegression trained here, saved with joblib."""
    if not PEER_PYTHON.exists():
        pytest.skip("the kserve peer venv (.venv-kserve) is missing: `make test` creates it when PyPI is reachable")
    if subprocess.run([str(PEER_PYTHON), "-c", "import sklearn, joblib, kserve"], capture_output=True).returncode:
        pytest.skip("the kserve peer venv lacks scikit-learn or joblib: rm -rf .venv-kserve; make test")
    model_path = tmp_path_factory.mktemp("model") / "model.joblib"
    subprocess.run([str(PEER_PYTHON), str(PEER_SCRIPT), "train", str(model_path)], check=True, timeout=120)
    http_port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen([str(PEER_PYTHON), str(PEER_SCRIPT), "serve", str(model_path), str(http_port),
                             str(grpc_port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import urllib.request

    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError(f"kserve ModelServer exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/models/iris/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("kserve ModelServer did not become ready in 60 s")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        yield Peer(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


ROWS = [[0.1, 0.0, -0.2, 0.1], [5.1, 4.9, 5.0, 5.2], [0.0, 0.3, 0.1, 0.0]]
LABELS = [0, 1, 0]


def rows_request(model: str, rows: list[list[float]] = ROWS) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id="k")
    request.inputs.add(name="rows", datatype="FP32", shape=[len(rows), len(rows[0])])
    request.raw_input_contents.append(array.array("f", [v for row in rows for v in row]).tobytes())
    return request


ROWS_JSON = {"inputs": [{"name": "rows", "shape": [3, 4], "datatype": "FP32", "data": ROWS}]}


async def test_kserve_grpc_front_to_grpc_step(kserve_peer: Peer, start_front: Any) -> None:
    front = await start_front(one_step(kserve_peer.grpc_url("iris")), name="g")
    answer = await front.stub.ModelInfer(rows_request("g"))
    assert outputs_as_json(answer) == [{"name": "predict", "shape": [3], "datatype": "INT64", "data": LABELS}]


async def test_kserve_rest_front_to_grpc_step(kserve_peer: Peer, start_router: Any) -> None:
    router = await start_router(one_step(kserve_peer.grpc_url("iris")))
    status_code, body, _ = await router.post(ROWS_JSON)
    assert status_code == 200
    assert orjson.loads(body)["outputs"] == [{"name": "predict", "shape": [3], "datatype": "INT64", "data": LABELS}]


async def test_kserve_grpc_front_to_rest_step(kserve_peer: Peer, start_front: Any) -> None:
    front = await start_front(one_step(kserve_peer.rest_url("iris")), name="g")
    answer = await front.stub.ModelInfer(rows_request("g"))
    assert outputs_as_json(answer)[0]["data"] == LABELS


async def test_kserve_three_step_mixed_sequence(kserve_peer: Peer, start_front: Any) -> None:
    """gRPC echo -> REST echo -> gRPC classifier, each answer turned into the next request."""
    extensions = {"steps": {"root/b": {"v2OutputsToInputs": True}, "root/c": {"v2OutputsToInputs": True}}}
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"name": "a", "serviceUrl": kserve_peer.grpc_url("echo")},
        {"name": "b", "serviceUrl": kserve_peer.rest_url("echo"), "data": "$response", "dependency": "Hard"},
        {"name": "c", "serviceUrl": kserve_peer.grpc_url("iris"), "data": "$response", "dependency": "Hard"}]}}}
    front = await start_front(one_step(kserve_peer.grpc_url("iris")), name="g")
    text = yaml.safe_dump({"kind": "InferenceGraph", "metadata": {"name": "g", "annotations": {
        ANNOTATION: yaml.safe_dump(extensions)}}, "spec": spec})
    front.http.router.swap(compile_graph(load_graph_text(text, "g.yaml")))
    answer = await front.stub.ModelInfer(rows_request("g"))
    assert outputs_as_json(answer)[0]["data"] == LABELS
    status_code, body, _ = await front.http.post(ROWS_JSON)
    assert status_code == 200 and orjson.loads(body)["outputs"][0]["data"] == LABELS


async def test_kserve_ensemble_of_rest_and_grpc(kserve_peer: Peer, start_front: Any) -> None:
    """Both members classify the same rows, one over REST and one over gRPC; the answers agree."""
    front = await start_front({"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "rest", "serviceUrl": kserve_peer.rest_url("iris")},
        {"name": "grpc", "serviceUrl": kserve_peer.grpc_url("iris")}]}}}, name="g")
    status_code, body, _ = await front.http.post(ROWS_JSON)
    merged = orjson.loads(body)
    assert status_code == 200
    assert merged["rest"]["outputs"][0]["data"] == merged["grpc"]["outputs"][0]["data"] == LABELS
    answer = await front.stub.ModelInfer(rows_request("g"))
    assert orjson.loads(answer.raw_output_contents[0][4:])["grpc"]["outputs"][0]["data"] == LABELS


async def test_kserve_switch_on_a_grpc_answer(kserve_peer: Peer, start_front: Any) -> None:
    """A Switch tests the gRPC classifier's answer as V2 JSON, and sends the original rows to the chosen echo."""
    extensions = {"steps": {"pick/1": {"request": {"inputs": "{{ $request.inputs }}"}}}}
    spec = {"nodes": {
        "root": {"routerType": "Sequence", "steps": [
            {"serviceUrl": kserve_peer.grpc_url("iris")},
            {"nodeName": "pick", "data": "$response"}]},
        "pick": {"routerType": "Switch", "steps": [
            {"serviceUrl": kserve_peer.grpc_url("nope"), "condition": 'outputs.#(name=="other")'},
            {"serviceUrl": kserve_peer.rest_url("echo"), "condition": 'outputs.#(name=="predict")'}]}}}
    text = yaml.safe_dump({"kind": "InferenceGraph", "metadata": {"name": "g", "annotations": {
        ANNOTATION: yaml.safe_dump(extensions)}}, "spec": spec})
    front = await start_front(one_step(kserve_peer.grpc_url("iris")), name="g")
    front.http.router.swap(compile_graph(load_graph_text(text, "g.yaml")))
    answer = await front.stub.ModelInfer(rows_request("g"))
    echoed = outputs_as_json(answer)[0]
    assert echoed["name"] == "rows" and echoed["shape"] == [3, 4]
    assert echoed["data"] == [v for row in ROWS for v in array.array("f", row)]


async def test_kserve_errors_map_to_codes(kserve_peer: Peer, start_front: Any) -> None:
    """KServe's unknown model and bad input, over gRPC, reach REST and gRPC clients with the right codes."""
    unknown = await start_front(one_step(kserve_peer.grpc_url("nope"), dependency="Hard"), name="g")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unknown.stub.ModelInfer(rows_request("g"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND and "nope" in (info.value.details() or "")
    status_code, _, _ = await unknown.http.post(ROWS_JSON)
    assert status_code == 404
    bad = await start_front(one_step(kserve_peer.grpc_url("iris"), dependency="Hard"), name="g")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await bad.stub.ModelInfer(rows_request("g", [[1.0, 2.0]]))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "4 features" in (info.value.details() or "")
    status_code, body, _ = await bad.http.post({"inputs": [{"name": "rows", "shape": [2], "datatype": "FP32",
                                                           "data": [1, 2]}]})
    assert status_code == 400 and "4 features" in orjson.loads(body)["error"]


async def test_kserve_bit_exact_through_the_router(kserve_peer: Peer, start_front: Any) -> None:
    """A 1 MiB FP32 tensor and a BYTES tensor in raw_input_contents come back from kserve's echo unchanged."""
    front = await start_front(one_step(kserve_peer.grpc_url("echo")), name="g")
    values = array.array("f", [(i * 2654435761 % 2**32) / 2**20 - 2048 for i in range(262144)])
    answer = await front.stub.ModelInfer(fp32_request("g", values))
    assert outputs_as_json(answer)[0]["shape"] == [262144]
    got = answer.raw_output_contents[0] if answer.raw_output_contents else array.array(
        "f", answer.outputs[0].contents.fp32_contents).tobytes()
    assert got == values.tobytes()
    elements = ["plain", "ünï", ""]
    request = pb.ModelInferRequest(model_name="g")
    request.inputs.add(name="b", datatype="BYTES", shape=[3])
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(e.encode())) + e.encode() for e in elements))
    answer = await front.stub.ModelInfer(request)
    assert outputs_as_json(answer)[0]["data"] == elements


async def test_kserve_inference_grpc_client_calls_the_router(kserve_peer: Peer, start_front: Any) -> None:
    """kserve's own InferenceGRPCClient (in the peer venv) calls the graph as it would a model."""
    front = await start_front(one_step(kserve_peer.grpc_url("iris")), name="g")
    proc = await asyncio.create_subprocess_exec(
        str(PEER_PYTHON), str(PEER_SCRIPT), "client", f"127.0.0.1:{front.port}", "g",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(json.dumps(ROWS).encode()), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    answer = json.loads(out)
    assert answer["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [3], "data": LABELS}]
    assert answer["id"] == "k1"



def test_controller_resolves_grpc_v2_predictors_to_grpc_urls() -> None:
    """A predictor declaring grpc-v2 is called over gRPC at its address; a transformer in front keeps REST."""
    from graph_router.controller.resolve import resolve_service

    def resolve(spec: dict[str, Any], url: str = "http://iris.ns.svc.cluster.local") -> Any:
        obj = {"metadata": {"name": "iris"}, "spec": spec, "status": {"address": {"url": url}}}
        return resolve_service("iris", "ns", {"iris": obj}, {})

    grpc_v2 = {"predictor": {"sklearn": {"storageUri": "s3://m", "protocolVersion": "grpc-v2"}}}
    assert resolve(grpc_v2) == "grpc://iris.ns.svc.cluster.local/v2/models/iris/infer"
    assert resolve(grpc_v2, "https://iris.example.com:8443") == "grpcs://iris.example.com:8443/v2/models/iris/infer"
    named = {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://m",
                                     "protocolVersion": "grpc-v2", "args": ["--model_name=clf"]}}}
    assert resolve(named) == "grpc://iris.ns.svc.cluster.local/v2/models/clf/infer"
    fronted = {**grpc_v2, "transformer": {"containers": [{"name": "kserve-container"}]}}
    assert resolve(fronted) == "http://iris.ns.svc.cluster.local/v1/models/iris:predict"
    assert parse(resolve(grpc_v2)).port == 80


def test_readme_grpc_example_runs_as_pasted(tmp_path: Path) -> None:
    """The README's gRPC example, run by bash as written (on free ports): both calls print the stub's answer."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```sh\n", readme.index("Try it with no model running")) + len("```sh\n")
    script = readme[start:readme.index("\n```\n", start)]
    for port in ("8081", "8080", "8090"):
        script = script.replace(port, str(free_port()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    lines = [line for line in out.decode().splitlines() if "predict" in line]
    assert len(lines) == 2, out.decode()[-2000:]
    assert orjson.loads(lines[0])["outputs"] == [{"name": "predict", "shape": [1], "datatype": "INT64", "data": [0]}]
    assert "'data': [0]" in lines[1]


async def test_grpcs_step_over_tls(tmp_path: Path, start_router: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grpcs:// step calls a TLS gRPC server, trusting the CA named by SSL_CERT_FILE; an untrusted one fails."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    model = StandIn()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(model.infer)}),))
    credentials = grpc.ssl_server_credentials([(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        url = f"grpcs://localhost:{port}/v2/models/echo/infer"
        untrusted = await start_router(one_step(url))
        status_code, body, _ = await untrusted.post({"inputs": []})
        assert status_code == 500 and url in orjson.loads(body)["cause"]
        from graph_router.grpc.steps import close_channels

        await close_channels()  # the next channel reads SSL_CERT_FILE anew
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        router = await start_router(one_step(url))
        status_code, body, _ = await router.post({"inputs": [{"name": "x", "shape": [1], "datatype": "INT64",
                                                              "data": [3]}]})
        assert status_code == 200 and orjson.loads(body)["outputs"][0]["data"] == [3]
    finally:
        await server.stop(0)
