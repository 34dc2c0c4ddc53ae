"""Open Inference Protocol v2: V2 JSON documents <-> protobuf messages.

Nodes, conditions and templates read V2 JSON, so a gRPC answer becomes V2 JSON and a
V2 JSON request becomes a ``ModelInferRequest`` wherever the two protocols meet.
Tensors are converted element for element, every datatype of the protocol:

- protobuf -> JSON reads typed ``contents`` or ``raw_*_contents`` (little-endian,
  row-major; BYTES elements with a 4-byte little-endian length first). BYTES become
  strings, so they must be UTF-8 text: JSON has no binary strings.
- JSON -> protobuf always writes ``raw_*_contents`` (the protocol allows one form per
  message; raw is the only one FP16 has, and the cheapest to build). Nested ``data``
  lists are flattened, row-major.

Floats survive both ways bit for bit (a float32 widened to a Python float prints as the
shortest text that reads back to the same double), except NaN and infinities, which
JSON cannot hold.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._proto import grpc_predict_v2_pb2 as pb

_LITTLE = sys.byteorder == "little"

# datatype -> (array typecode or "" for the struct/bytes-handled ones, element size,
# the InferTensorContents field holding it)
_TYPES: dict[str, tuple[str, int, str]] = {
    "BOOL": ("", 1, "bool_contents"),
    "INT8": ("b", 1, "int_contents"),
    "INT16": ("h", 2, "int_contents"),
    "INT32": ("i", 4, "int_contents"),
    "INT64": ("q", 8, "int64_contents"),
    "UINT8": ("B", 1, "uint_contents"),
    "UINT16": ("H", 2, "uint_contents"),
    "UINT32": ("I", 4, "uint_contents"),
    "UINT64": ("Q", 8, "uint64_contents"),
    "FP16": ("", 2, ""),
    "FP32": ("f", 4, "fp32_contents"),
    "FP64": ("d", 8, "fp64_contents"),
    "BYTES": ("", 0, "bytes_contents"),
}

DATATYPES: frozenset[str] = frozenset(_TYPES)


class ConversionError(ValueError):
    """A tensor or document that cannot be expressed in the other form (the message says why)."""


# --- parameters -------------------------------------------------------------------


def params_to_json(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        out[key] = getattr(param, which) if which is not None else None
    return out


def params_to_proto(doc: Any, target: Any, where: str) -> None:
    """Fill a protobuf parameters map from a JSON object (None: nothing)."""
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise ConversionError(f"{where}: parameters must be an object")
    for key, value in doc.items():
        param = target[key]
        if isinstance(value, bool):
            param.bool_param = value
        elif isinstance(value, int):
            if value >= 2**63:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, float):
            param.double_param = value
        elif isinstance(value, str):
            param.string_param = value
        elif value is None:
            del target[key]
        else:  # lists and objects have no InferParameter form
            raise ConversionError(f"{where}: parameter {key!r} must be a boolean, number or string")


# --- tensors ----------------------------------------------------------------------


def _count(shape: Sequence[int]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def raw_to_list(datatype: str, raw: bytes, shape: Sequence[int], where: str) -> list[Any]:
    """Elements of a raw tensor as JSON values."""
    spec = _TYPES.get(datatype)
    if spec is None:
        raise ConversionError(f"{where}: unknown datatype {datatype!r}")
    code, size, _ = spec
    n = _count(shape)
    if datatype == "BYTES":
        return [_text(e, where) for e in _split_bytes(raw, where)]
    if len(raw) != n * size:
        raise ConversionError(f"{where}: {len(raw)} raw bytes do not hold {n} {datatype} elements")
    if datatype == "BOOL":
        return [b != 0 for b in raw]
    if datatype == "FP16":
        return list(struct.unpack(f"<{n}e", raw))
    values = array.array(code)
    values.frombytes(raw)
    if not _LITTLE:
        values.byteswap()
    return values.tolist()


def _split_bytes(raw: bytes, where: str) -> list[bytes]:
    """BYTES raw contents: each element is a 4-byte little-endian length, then its bytes."""
    out = []
    view = memoryview(raw)
    i, end = 0, len(raw)
    while i < end:
        if i + 4 > end:
            raise ConversionError(f"{where}: BYTES raw contents end inside an element's length")
        (length,) = struct.unpack_from("<I", view, i)
        i += 4
        if i + length > end:
            raise ConversionError(f"{where}: BYTES raw contents end inside an element")
        out.append(bytes(view[i : i + length]))
        i += length
    return out


def _text(value: bytes, where: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ConversionError(
            f"{where}: a BYTES element is not UTF-8 text, and V2 JSON (a REST step, a condition or a "
            "template) can only carry text"
        ) from None


def contents_to_list(datatype: str, contents: pb.InferTensorContents, where: str) -> list[Any]:
    spec = _TYPES.get(datatype)
    if spec is None:
        raise ConversionError(f"{where}: unknown datatype {datatype!r}")
    field = spec[2]
    if not field:
        raise ConversionError(f"{where}: FP16 has no typed contents; it must travel as raw contents")
    values = list(getattr(contents, field))
    if datatype == "BYTES":
        return [_text(v, where) for v in values]
    return values


def _flatten(data: Any, out: list[Any]) -> None:
    for item in data:
        if isinstance(item, list):
            _flatten(item, out)
        else:
            out.append(item)


def flat_data(data: Any, where: str) -> list[Any]:
    """A V2 JSON ``data`` value flattened, row-major (nested lists are allowed)."""
    if not isinstance(data, list):
        raise ConversionError(f"{where}: data must be a list")
    if not any(isinstance(item, list) for item in data):
        return data
    out: list[Any] = []
    _flatten(data, out)
    return out


def list_to_raw(datatype: str, values: list[Any], where: str) -> bytes:
    """JSON elements as raw little-endian contents."""
    spec = _TYPES.get(datatype)
    if spec is None:
        raise ConversionError(f"{where}: unknown datatype {datatype!r}")
    code = spec[0]
    try:
        if datatype == "BYTES":
            parts = []
            for value in values:
                item = value.encode("utf-8") if isinstance(value, str) else bytes(value)
                parts.append(struct.pack("<I", len(item)))
                parts.append(item)
            return b"".join(parts)
        if datatype == "BOOL":
            return bytes(1 if v else 0 for v in values)
        if datatype == "FP16":
            return struct.pack(f"<{len(values)}e", *values)
        packed = array.array(code, values)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise ConversionError(f"{where}: data does not fit {datatype}: {exc}") from None
    if not _LITTLE:
        packed.byteswap()
    return packed.tobytes()


def _shape(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise ConversionError(f"{where}: shape must be a list of integers")
    return value


def _tensors_to_json(tensors: Iterable[Any], raws: Sequence[bytes], kind: str) -> list[dict[str, Any]]:
    out = []
    for i, tensor in enumerate(tensors):
        where = f"{kind} {tensor.name!r}"
        shape = list(tensor.shape)
        if raws:
            if i >= len(raws):
                raise ConversionError(f"{where}: no raw contents for this tensor")
            data = raw_to_list(tensor.datatype, raws[i], shape, where)
        else:
            data = contents_to_list(tensor.datatype, tensor.contents, where)
        doc: dict[str, Any] = {"name": tensor.name, "shape": shape, "datatype": tensor.datatype}
        if tensor.parameters:
            doc["parameters"] = params_to_json(tensor.parameters)
        doc["data"] = data
        out.append(doc)
    return out


def _tensors_to_proto(docs: Any, add: Any, raws: Any, kind: str) -> None:
    if not isinstance(docs, list):
        raise ConversionError(f"{kind}s must be a list")
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise ConversionError(f"{kind} {i} must be an object")
        name = doc.get("name")
        datatype = doc.get("datatype")
        where = f"{kind} {name!r}"
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise ConversionError(f"{kind} {i}: name and datatype must be strings")
        if datatype not in _TYPES:
            raise ConversionError(f"{where}: unknown datatype {datatype!r}")
        shape = _shape(doc.get("shape"), where)
        values = flat_data(doc.get("data"), where)
        if len(values) != _count(shape):
            raise ConversionError(f"{where}: {len(values)} elements do not fill shape {shape}")
        tensor = add(name=name, datatype=datatype, shape=shape)
        params_to_proto(doc.get("parameters"), tensor.parameters, where)
        raws.append(list_to_raw(datatype, values, where))


# --- whole messages ---------------------------------------------------------------


def request_to_json(request: pb.ModelInferRequest) -> dict[str, Any]:
    """A ModelInferRequest as the V2 JSON inference request a REST step expects."""
    doc: dict[str, Any] = {}
    if request.id:
        doc["id"] = request.id
    if request.parameters:
        doc["parameters"] = params_to_json(request.parameters)
    doc["inputs"] = _tensors_to_json(request.inputs, request.raw_input_contents, "input")
    if request.outputs:
        outputs = []
        for wanted in request.outputs:
            out: dict[str, Any] = {"name": wanted.name}
            if wanted.parameters:
                out["parameters"] = params_to_json(wanted.parameters)
            outputs.append(out)
        doc["outputs"] = outputs
    return doc


def json_to_request(doc: Any, model_name: str, model_version: str = "") -> pb.ModelInferRequest:
    """A V2 JSON inference request as a ModelInferRequest for ``model_name``."""
    if not isinstance(doc, dict):
        raise ConversionError("an inference request must be a JSON object")
    request = pb.ModelInferRequest(model_name=model_name, model_version=model_version)
    rid = doc.get("id")
    if rid is not None:
        request.id = str(rid)
    params_to_proto(doc.get("parameters"), request.parameters, "request")
    if "inputs" not in doc:
        raise ConversionError("an inference request needs inputs")
    _tensors_to_proto(doc["inputs"], request.inputs.add, request.raw_input_contents, "input")
    wanted = doc.get("outputs")
    if wanted is not None:
        if not isinstance(wanted, list):
            raise ConversionError("outputs must be a list")
        for item in wanted:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ConversionError("each requested output must be an object with a name")
            out = request.outputs.add(name=item["name"])
            params_to_proto(item.get("parameters"), out.parameters, f"output {item['name']!r}")
    return request


def response_to_json(response: pb.ModelInferResponse) -> dict[str, Any]:
    """A ModelInferResponse as V2 JSON, as a REST model server would have answered."""
    doc: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version:
        doc["model_version"] = response.model_version
    doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = params_to_json(response.parameters)
    doc["outputs"] = _tensors_to_json(response.outputs, response.raw_output_contents, "output")
    return doc


def json_to_response(doc: Any) -> pb.ModelInferResponse:
    """A V2 JSON inference response as a ModelInferResponse.

    A graph's answer that is not one (an Ensemble's merged object, a V1 answer) is
    carried whole, as one BYTES output named ``json`` holding its JSON text, so a gRPC
    client still gets every byte of it.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        return _wrapped(doc)
    response = pb.ModelInferResponse()
    for key in ("model_name", "model_version", "id"):
        value = doc.get(key)
        if value is not None:
            setattr(response, key, str(value))
    params_to_proto(doc.get("parameters"), response.parameters, "response")
    _tensors_to_proto(doc["outputs"], response.outputs.add, response.raw_output_contents, "output")
    return response


def _wrapped(doc: Any) -> pb.ModelInferResponse:
    import orjson

    text = orjson.dumps(doc)
    response = pb.ModelInferResponse()
    out = response.outputs.add(name="json", datatype="BYTES", shape=[1])
    out.parameters["content_type"].string_param = "application/json"
    response.raw_output_contents.append(struct.pack("<I", len(text)) + text)
    return response
