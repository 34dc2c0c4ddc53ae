"""Each comparison operator of a condition, fixed cases for strings and numbers, on both evaluators.

The differential test compares the fast path with gjson on random documents, which can
miss an operator swapped for another (``!=`` evaluated as ``==`` survived it); these
cases state the expected answer outright, and a Switch routes on ``!=`` end to end.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from graph_router import gjson
from graph_router.conditions import compile_fast, exists_parsed

# (operator, literal, value in the document, expected)
CASES = [
    ("==", '"cat"', "cat", True), ("==", '"cat"', "dog", False),
    ("!=", '"cat"', "cat", False), ("!=", '"cat"', "dog", True),
    ("<", '"m"', "a", True), ("<", '"m"', "z", False), ("<", '"m"', "m", False),
    ("<=", '"m"', "m", True), ("<=", '"m"', "z", False),
    (">", '"m"', "z", True), (">", '"m"', "a", False), (">", '"m"', "m", False),
    (">=", '"m"', "m", True), (">=", '"m"', "a", False),
    ("==", "2", 2, True), ("==", "2", 3, False), ("==", "2", 2.0, True),
    ("!=", "2", 2, False), ("!=", "2", 3, True), ("!=", "2", 2.5, True),
    ("<", "2", 1, True), ("<", "2", 2, False), ("<", "2", 3, False),
    ("<=", "2", 2, True), ("<=", "2", 3, False),
    (">", "2", 3, True), (">", "2", 2, False), (">", "2", 1, False),
    (">=", "2", 2, True), (">=", "2", 1, False),
    ("==", "true", True, True), ("==", "true", False, False),
    ("!=", "true", True, False), ("!=", "true", False, True),
]


@pytest.mark.parametrize(("op", "literal", "value", "expected"), CASES,
                         ids=[f"{v!r}{op}{lit}" for op, lit, v, _ in CASES])
def test_operator_on_one_value(op: str, literal: str, value: Any, expected: bool) -> None:
    """`x OP literal` on `{"items": [{"x": value}]}`: the fast path and gjson both give the stated answer."""
    path = f"items.#(x{op}{literal})"
    raw = orjson.dumps({"items": [{"x": value}]})
    assert gjson.compile_path(path).exists(raw) is expected
    fast = compile_fast(path)
    assert fast is not None
    assert exists_parsed(fast, orjson.loads(raw)) is expected


async def test_switch_routes_on_not_equal(start_service: Any, start_router: Any) -> None:
    """A Switch whose first condition is `!=`: a request that differs goes there, an equal one falls through."""
    other = await start_service({"/other": (200, {"route": "not-cat"}), "/cat": (200, {"route": "cat"})})
    spec = {"nodes": {"root": {"routerType": "Switch", "steps": [
        {"serviceUrl": other.url("/other"), "condition": 'instances.#(kind!="cat")'},
        {"serviceUrl": other.url("/cat"), "condition": 'instances.#(kind=="cat")'},
    ]}}}
    router = await start_router(spec)
    status, body, _ = await router.post({"instances": [{"kind": "dog"}]})
    assert (status, orjson.loads(body)) == (200, {"route": "not-cat"})
    status, body, _ = await router.post({"instances": [{"kind": "cat"}]})
    assert (status, orjson.loads(body)) == (200, {"route": "cat"})
    assert [r.path for r in other.received] == ["/other", "/cat"]
