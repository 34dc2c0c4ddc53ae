"""The parsed-document fast path for conditions agrees with the raw-text GJSON evaluator."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gjson_conformance import VECTORS

from graph_router import gjson
from graph_router.conditions import compile_fast, exists_parsed

PATHS = [
    "instances", "instances.0", "instances.0.x.1", "instances.#(modelId==\"2\")", "instances.#(modelId==\"1\")",
    "instances.#(modelId==2)", "instances.#(x.1>1)", "instances.#(score<=0.5)", "instances.#(label!=\"dog\")",
    "instances.#(ok==true)", "instances.#(ok!=false)", "instances.#(n>=3)", "instances.#(modelId)",
    "instances.#(modelId==\"2\")#", "predictions.#(label==\"dog\")", "a.b.c", "question", "k-1.k_2",
    "instances.#(name==ERROR)", "instances.#(v<\"m\")",
]


def test_fast_path_covers_the_common_shapes() -> None:
    """The shapes a Switch typically uses compile to a fast test; others fall back."""
    assert compile_fast('instances.#(modelId=="2")') is not None
    assert compile_fast("a.b.0") is not None
    assert compile_fast("[@this].#(a==1)") is None
    assert compile_fast("a.*") is None
    assert compile_fast("a|b") is None
    assert compile_fast('a.#(b%"x*")') is None


values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False)
    | st.sampled_from(["2", "1", "dog", "cat", "ERROR", "m", "a", "z", ""]),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(
        st.sampled_from(["modelId", "x", "score", "label", "ok", "n", "name", "v", "a", "b", "c"]), c, max_size=4),
    max_leaves=12,
)
documents = st.fixed_dictionaries({}, optional={
    "instances": st.lists(values, max_size=4) | values,
    "predictions": st.lists(values, max_size=3),
    "a": values, "question": values, "k-1": values,
})


@settings(max_examples=400, deadline=None)
@given(doc=documents, path=st.sampled_from(PATHS))
def test_fast_path_agrees_with_gjson(doc: dict[str, Any], path: str) -> None:
    """On random documents the fast path's answer is gjson's answer, for every supported path."""
    fast = compile_fast(path)
    if fast is None:
        return
    raw = orjson.dumps(doc)
    answer = exists_parsed(fast, orjson.loads(raw))
    if answer is None:
        return
    assert answer == gjson.compile_path(path).exists(raw), (path, raw)


@pytest.mark.parametrize("vector", [
    p for p in VECTORS if p.values[0]["valid"] and compile_fast(p.values[0]["path"]) is not None  # type: ignore[index]
])
def test_fast_path_agrees_on_conformance_vectors(vector: dict[str, Any]) -> None:
    """Where a conformance vector's path has a fast form, it gives tidwall/gjson's exists."""
    fast = compile_fast(vector["path"])
    assert fast is not None
    answer = exists_parsed(fast, json.loads(vector["doc"]))
    if answer is not None:
        assert answer == vector["exists"]
