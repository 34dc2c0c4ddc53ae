"""Conformance of graph_router.gjson with tidwall/gjson.

The vectors in tests/data/gjson_vectors.jsonl were produced by tidwall/gjson itself
(a copy of the project's shared conformance file, kept here so a plain clone tests
them); every one must match exactly (validity, existence, type and raw text).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from graph_router import gjson

VECTOR_FILE = Path(__file__).resolve().parent / "data" / "gjson_vectors.jsonl"


def _load_vectors() -> list[Any]:
    if not VECTOR_FILE.exists():
        return []
    params = []
    with VECTOR_FILE.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                vec = json.loads(line)
                params.append(pytest.param(vec, id=f"L{lineno}:{vec['path']!r}"))
    return params


VECTORS = _load_vectors()

# The running example of gjson's own SYNTAX.md, pretty-printed on purpose so raw text
# (whitespace included) is exercised.
SYNTAX_DOC = """{
  "name": {"first": "Tom", "last": "Anderson"},
  "age":37,
  "children": ["Sara","Alex","Jack"],
  "fav.movie": "Deer Hunter",
  "friends": [
    {"first": "Dale", "last": "Murphy", "age": 44, "nets": ["ig", "fb", "tw"]},
    {"first": "Roger", "last": "Craig", "age": 68, "nets": ["fb", "tw"]},
    {"first": "Jane", "last": "Murphy", "age": 47, "nets": ["ig", "tw"]}
  ]
}"""
DALE = '{"first": "Dale", "last": "Murphy", "age": 44, "nets": ["ig", "fb", "tw"]}'


def test_vector_file_is_present() -> None:
    """The gjson-generated vector file is in the repository, so a clone with no ../shared tests every vector."""
    assert VECTOR_FILE.exists(), f"missing {VECTOR_FILE}"
    assert VECTORS, "vector file is empty"


@pytest.mark.parametrize("vec", VECTORS)
def test_vector(vec: dict[str, Any]) -> None:
    """valid() and get() agree with tidwall/gjson on validity, existence, type and raw text."""
    doc, path = vec["doc"], vec["path"]
    assert gjson.valid(doc) is vec["valid"]
    res = gjson.get(doc, path)
    assert (res.exists, res.type, res.raw) == (vec["exists"], vec["type"], vec["raw"])


@pytest.mark.parametrize("vec", [v for v in VECTORS if v.values[0]["path"]])
def test_vector_compiled_and_bytes(vec: dict[str, Any]) -> None:
    """A compiled Path gives the same answer for str and UTF-8 bytes, and exists() matches get()."""
    doc, path = vec["doc"], vec["path"]
    compiled = gjson.compile_path(path)
    assert compiled.source == path
    for d in (doc, doc.encode("utf-8")):
        res = compiled.get(d)
        assert (res.exists, res.type, res.raw) == (vec["exists"], vec["type"], vec["raw"])
        assert compiled.exists(d) is vec["exists"]
    assert gjson.valid(doc.encode("utf-8")) is vec["valid"]


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("child*.2", '"Jack"'),
        ("friends.#.age", "[44,68,47]"),
        ('friends.#(first%"D*").last', '"Murphy"'),
        ('friends.#(nets.#(=="fb"))#.first', '["Dale","Roger"]'),
        ("friends|0.first", '"Dale"'),
        ("friends|#", "3"),
        ('friends.#(last="Murphy")#|first', ""),
        ('friends.#(last="Murphy")#.0', "[]"),
        ('friends.#(last="Murphy")#|0', DALE),
        ('friends.#(last="Murphy")#.#', "[]"),
        ('friends.#(last="Murphy")#|#', "2"),
        ('friends.#[last="Murphy"].first', '"Dale"'),
        ("children.@reverse", '["Jack","Alex","Sara"]'),
        (
            '{name.first,age,"the_murphys":friends.#(last="Murphy")#.first}',
            '{"first":"Tom","age":37,"the_murphys":["Dale","Jane"]}',
        ),
        ("[age,nope,name.first]", '[37,"Tom"]'),
        ("@ugly|name", '{"first":"Tom","last":"Anderson"}'),
        ("friends.1.@keys", '["first","last","age","nets"]'),
        ("friends.#.nets|@flatten|@reverse|0", '"tw"'),
        ('!{"a":1}.a', "1"),
    ],
)
def test_documented_syntax(path: str, raw: str) -> None:
    """The examples of gjson's SYNTAX.md (dot vs pipe, nested queries, multipaths) hold."""
    assert gjson.get(SYNTAX_DOC, path).raw == raw


@pytest.mark.parametrize(
    ("path", "offset", "what"),
    [
        ('friends.#(last=="Murphy"', 9, "unbalanced '('"),
        ("[name.first,age", 0, "unbalanced '['"),
        ("{nm:name.first", 0, "unbalanced '{'"),
        ("a.b)", 3, "unexpected ')'"),
        ("friends.#(age>1]", 15, "mismatched ']'"),
        ('friends.#(last=="Murphy)', 16, "unterminated string"),
        ("name\\", 4, "dangling escape"),
    ],
)
def test_compile_rejects_malformed(path: str, offset: int, what: str) -> None:
    """compile_path raises GJSONSyntaxError naming the problem and its character offset."""
    with pytest.raises(gjson.GJSONSyntaxError) as info:
        gjson.compile_path(path)
    message = str(info.value)
    assert what in message
    assert re.search(rf"\boffset {offset}\b", message), message


def test_compile_rejects_empty_path() -> None:
    """An empty path is a syntax error at compile time (get() just selects nothing)."""
    with pytest.raises(gjson.GJSONSyntaxError, match="empty"):
        gjson.compile_path("")
    assert not gjson.get("{}", "").exists


def test_syntax_error_is_value_error() -> None:
    """GJSONSyntaxError is a ValueError so generic config validation catches it."""
    assert issubclass(gjson.GJSONSyntaxError, ValueError)


@pytest.mark.parametrize(
    "path",
    [
        'friends.#(last=~"M")',
        "{ .input.userId == 1 }",
        "fav\\.movie",
        "a\\(b",
        '#(name=="a(b")',
        '@join:{"preserve":true}',
        "..#",
    ],
)
def test_compile_accepts_odd_but_wellformed(path: str) -> None:
    """Well-formed paths gjson accepts (unknown operators, escaped or quoted brackets) compile."""
    assert gjson.compile_path(path).source == path


@pytest.mark.parametrize(
    ("doc", "path", "expected"),
    [
        ('{"s":"a\\"b\\u00e9\\ud83d\\ude00"}', "s", 'a"bé\U0001f600'),
        ('{"s":"plain"}', "s", "plain"),
        ('{"n":37}', "n", 37),
        ('{"n":-2}', "n", -2),
        ('{"n":1.5e3}', "n", 1500.0),
        ('{"n":0.25}', "n", 0.25),
        ('{"b":true}', "b", True),
        ('{"b":false}', "b", False),
        ('{"z":null}', "z", None),
        ('{"o":{"a":[1,"x",null]}}', "o", {"a": [1, "x", None]}),
        ('{"a":[1,2', "a", [1, 2]),
        ('{"a":1}', "nope", None),
        ("[1,2,3]", "#", 3),
    ],
)
def test_result_value(doc: str, path: str, expected: object) -> None:
    """Result.value() converts the selection to the matching Python value."""
    value = gjson.get(doc, path).value()
    assert value == expected
    assert type(value) is type(expected)


def test_result_exists_follows_gjson() -> None:
    """Result.exists is gjson's Exists(): a JSON null exists, a miss does not."""
    assert gjson.Result("Null", "null").exists
    assert gjson.Result("True", "").exists
    assert not gjson.Result("Null", "").exists


def test_get_is_cached_and_matches_compiled() -> None:
    """get() reuses compiled paths and returns what the compiled Path returns."""
    path = 'friends.#(last=="Murphy")#.first'
    assert gjson.get(SYNTAX_DOC, path) == gjson.compile_path(path).get(SYNTAX_DOC)
    assert gjson._cached(path) is gjson._cached(path)


@pytest.mark.parametrize(
    ("doc", "ok"),
    [
        ("[" * 3000 + "]" * 3000, True),
        ("1e400", True),
        ('"\\ud800"', True),
        (b'"\xff"', True),
        ("[1,]", False),
        ('{"a":1,}', False),
        ("01", False),
        ('"tab\there"', False),
        ("NaN", False),
        ("", False),
        ("  {}  ", True),
    ],
)
def test_valid_edges(doc: str | bytes, ok: bool) -> None:
    """valid() follows gjson.Valid where orjson differs (depth, huge numbers, raw bytes)."""
    assert gjson.valid(doc) is ok
