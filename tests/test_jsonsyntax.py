"""Which answers are labelled application/json: exactly those Go's ``json.Valid`` accepts.

KServe's router sets ``Content-Type: application/json`` on a graph's answer when
``json.Valid`` accepts the body. ``tests/data/json_valid_vectors.jsonl`` holds 3,326
bodies with the answer Go 1.19's ``encoding/json`` gave for each (hand-picked edge cases,
generated documents and mutations of them; ``tests/data/json_valid/`` has the generator
and the Go program that produced the file).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from graph_router.jsonsyntax import MAX_DEPTH, valid

VECTORS = Path(__file__).resolve().parent / "data" / "json_valid_vectors.jsonl"


def _vectors() -> list[tuple[bytes, bool]]:
    rows = [orjson.loads(line) for line in VECTORS.read_bytes().splitlines() if line]
    return [(base64.b64decode(row["body_b64"]), row["valid"]) for row in rows]


def test_every_go_vector() -> None:
    """Each body is valid exactly when Go's json.Valid said so."""
    vectors = _vectors()
    assert len(vectors) > 3000
    assert {answer for _, answer in vectors} == {True, False}
    wrong = [(body[:60], answer) for body, answer in vectors if valid(body) is not answer]
    assert wrong == []


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"predictions": [1, 2.5e-3, -0, true, null]}', True),
    (b'"\\ud800"', True),  # a lone surrogate escape: Go's scanner does not look inside
    (b'"\xff\xfe"', True),  # nor at UTF-8
    (b'"\x1f"', False),  # a raw control character
    (b"01", False),
    (b"[1,]", False),
    (b"1 2", False),
    (b"", False),
    (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, True),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), False),  # Go's nesting limit
])
def test_edges(body: bytes, expected: bool) -> None:
    assert valid(body) is expected


async def test_answer_content_type_follows_go(start_service: Any, start_router: Any) -> None:
    """The graph's answer is application/json when Go would say so, invalid UTF-8 inside a string included."""
    bodies = {
        "/json": b'{"label": "dog", "score": [0.8, 0.2]}',
        "/latin1": b'{"label": "caf\xe9"}',  # not UTF-8, yet valid to json.Valid (and to KServe)
        "/text": b"plain words",
        "/binary": b"\x00\x01\xff",
    }

    def fixed(body: bytes) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/octet-stream")
        return handler

    svc = await start_service({path: fixed(body) for path, body in bodies.items()})
    expected = {"/json": "application/json", "/latin1": "application/json",
                "/text": "text/plain; charset=utf-8", "/binary": "application/octet-stream"}
    for path, content_type in expected.items():
        router = await start_router({"nodes": {"root": {"routerType": "Sequence",
                                                        "steps": [{"serviceUrl": svc.url(path)}]}}})
        status, body, headers = await router.post(raw=b"{}")
        assert (status, body) == (200, bodies[path])
        assert headers["Content-Type"] == content_type, path
