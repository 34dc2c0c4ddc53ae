# cython: annotation_typing=False
"""gRPC over HTTP/2, the parts above the frames: messages, timeouts, status trailers.

From gRPC's "gRPC over HTTP2" protocol description: a message is a 5-octet prefix
(compressed flag, 4-octet big-endian length) and its bytes; ``grpc-timeout`` is up to
8 digits and a unit; the status travels as ``grpc-status`` and a percent-encoded
``grpc-message`` in the trailers, or in the headers of a "trailers-only" answer.

Status codes are plain ints here (the numbering every gRPC library shares), so the
lean transport does not need grpcio.
"""

from __future__ import annotations

from typing import Any

from ..http2 import hpack

OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 12, 13, 14
UNAUTHENTICATED, PERMISSION_DENIED = 16, 7

CONTENT_TYPE = "application/grpc"


class MessageError(Exception):
    """A request body that is not one gRPC message: ``code`` says which status answers it."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def prefix(length: int) -> bytes:
    """The 5-octet prefix of an uncompressed message."""
    return length.to_bytes(5, "big")


def message(chunks: list[Any], total: int, encoding: str | None) -> bytes:
    """The one message carried by a unary call's DATA ``chunks`` (``total`` octets in all).

    Its bytes are joined once, straight from the frames' buffers: the only copy.
    """
    if total < 5:
        raise MessageError(INTERNAL, f"{total} octets of DATA: not a gRPC message")
    if len(chunks) == 1 and type(chunks[0]) is bytes and len(chunks[0]) == total:
        # The common case (a small message in one DATA frame): the prefix read in place.
        whole = chunks[0]
        p = whole
        length = p[1]
        length = length << 24 | p[2] << 16 | p[3] << 8 | p[4]
        if p[0] == 0 and length == total - 5:
            return p[5:total]  # compiled: bytes straight from the pointer
    first = bytes(chunks[0][:5])
    at = 1
    while len(first) < 5:  # a first DATA frame of under 5 octets
        first += bytes(chunks[at][: 5 - len(first)])
        at += 1
    flag = first[0]
    length = int.from_bytes(first[1:5], "big")
    if flag:
        if encoding in (None, "identity"):
            raise MessageError(INTERNAL, "a compressed message without grpc-encoding")
        raise MessageError(UNIMPLEMENTED, f"grpc-encoding {encoding!r} is not supported: send uncompressed")
    if length != total - 5:
        raise MessageError(INTERNAL if length > total - 5 else UNIMPLEMENTED,
                           "the request is not exactly one message" if length < total - 5
                           else "the message is shorter than its prefix says")
    if len(chunks) == 1:
        return bytes(memoryview(chunks[0])[5:])
    return _join(chunks, 5)


def _join(chunks: list[Any], skip: int) -> bytes:
    """The chunks' bytes after the first ``skip`` octets, in one allocation."""
    parts: list[Any] = []
    for chunk in chunks:
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk = memoryview(chunk)[skip:]
            skip = 0
        parts.append(chunk)
    return b"".join(parts)


def request_model(raw: bytes) -> str:
    """The ``model_name`` of a serialized ModelInferRequest, read without parsing the rest.

    Walks the top-level fields only (a handful: the tensors are single fields), so the
    tensor bytes are neither parsed nor copied. The last occurrence wins, as in protobuf.
    """
    i = 0
    end = len(raw)
    name_at = name_end = 0
    while i < end:
        after = _varint_end(raw, i)
        tag = _varint_value(raw, i)
        i = after
        wire_type = tag & 7
        if wire_type == 0:
            i = _varint_end(raw, i)
        elif wire_type == 2:
            after = _varint_end(raw, i)
            length = _varint_value(raw, i)
            i = after
            if length > end - i:
                raise ValueError("the message ends inside a field")
            if tag >> 3 == 1:
                name_at, name_end = i, i + length
            i += length
        elif wire_type == 1:
            i += 8
        elif wire_type == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wire_type} is not valid here")
        if i > end:
            raise ValueError("the message ends inside a field")
    p = raw
    return p[name_at:name_end].decode("utf-8")


# A varint read in two C calls (where it ends, then its value) rather than one returning
# a tuple: the front reads every ModelInfer request's model name with these.
def _varint_end(raw: bytes, i: int) -> int:
    """The index after the varint at ``i``. Over 64 bits is an error, as in protobuf."""
    shift = 0
    n = len(raw)
    p = raw
    while True:
        if i >= n or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = p[i]
        i += 1
        if shift == 63 and byte > 1:
            raise ValueError("a varint over 64 bits")
        if byte < 0x80:
            return i
        shift += 7


def _varint_value(raw: bytes, i: int) -> int:
    """The value of the varint at ``i`` (one :func:`_varint_end` has found valid)."""
    value = 0
    shift = 0
    p = raw
    while True:
        byte = p[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
        shift += 7


_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> float | None:
    """Seconds from a ``grpc-timeout`` value (``1-8 digits`` + H M S m u n); None if malformed."""
    unit = _UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not 1 <= len(digits) <= 8 or not digits.isdigit():
        return None
    return int(digits) * unit


def format_timeout(seconds: float) -> str:
    """A ``grpc-timeout`` value for ``seconds``, in the finest unit that fits in 8 digits."""
    for unit, scale in (("u", 1e6), ("m", 1e3), ("S", 1.0), ("M", 1 / 60)):
        value = int(max(0.0, seconds) * scale) + (1 if unit != "u" else 0)
        if value < 100_000_000:
            return f"{max(value, 1)}{unit}"
    return "99999999H"


def percent_encode(text: str) -> str:
    """``grpc-message`` encoding: UTF-8, with octets outside 0x20-0x7E and ``%`` as %XX."""
    if text.isascii() and text.isprintable() and "%" not in text:
        return text
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in text.encode("utf-8"))


def percent_decode(text: str) -> str:
    """The inverse of :func:`percent_encode`; a malformed escape is kept as it is."""
    if "%" not in text:
        return text
    raw = text.encode("latin-1", "replace")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25 and _hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "replace")


def _hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


RESPONSE_HEADERS = hpack.encode([(":status", "200"), ("content-type", CONTENT_TYPE)])
TRAILERS_OK = hpack.encode([("grpc-status", "0")])


def status_block(code: int, text: str, headers_too: bool) -> bytes:
    """Trailers with a status (and, ``headers_too``, a trailers-only answer's whole block)."""
    fields = [(":status", "200"), ("content-type", CONTENT_TYPE)] if headers_too else []
    fields.append(("grpc-status", str(code)))
    if text:
        fields.append(("grpc-message", percent_encode(text)))
    return hpack.encode(fields)


def status_of(headers: list[tuple[str, str]] | None) -> tuple[int, str] | None:
    """(grpc-status, grpc-message) from a header list, or None when it has no status."""
    if not headers:
        return None
    code: int | None = None
    text = ""
    for name, value in headers:
        if name == "grpc-status":
            code = int(value) if value.isdigit() else UNKNOWN
        elif name == "grpc-message":
            text = percent_decode(value)
    return None if code is None else (code, text)


def http_to_code(status: int) -> int:
    """The gRPC status of an HTTP answer that is not a gRPC one (the protocol's own table)."""
    return {400: INTERNAL, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED, 404: UNIMPLEMENTED,
            429: UNAVAILABLE, 502: UNAVAILABLE, 503: UNAVAILABLE, 504: UNAVAILABLE}.get(status, UNKNOWN)
