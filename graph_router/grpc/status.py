"""gRPC status codes <-> HTTP statuses, both ways, as KServe documents them.

400 INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED and 500
INTERNAL map one to one; the rest follow the usual gRPC/HTTP correspondences, and
anything else is INTERNAL (an HTTP 5xx) or INVALID_ARGUMENT (a 4xx).
"""

from __future__ import annotations

import grpc

_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status a step's gRPC status stands for (what nodes, retries and breakers see)."""
    return _TO_HTTP.get(code, 500)


def grpc_code(http: int) -> grpc.StatusCode:
    """The gRPC status the front answers for the graph's HTTP status."""
    found = _TO_GRPC.get(http)
    if found is not None:
        return found
    return grpc.StatusCode.INVALID_ARGUMENT if 400 <= http < 500 else grpc.StatusCode.INTERNAL


_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def http_status_of(code: int) -> int:
    """:func:`http_status` for a status number (the lean transport's)."""
    found = _BY_NUMBER.get(code)
    return 500 if found is None else _TO_HTTP.get(found, 500)
