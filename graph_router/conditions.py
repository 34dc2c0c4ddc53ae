"""Conditions on an already-parsed document: a fast path for the common GJSON shapes.

A Switch tests several conditions on one request body. The GJSON evaluator scans raw
text per condition (a few microseconds each); a router that has parsed the body once
(it must check that the body is JSON anyway) can answer the usual shapes from the
parsed value in a fraction of that:

    key.key.0.key                 plain keys and array indexes
    key.#(sub.key OP literal)     the first element matching a comparison exists
    key.#(sub.key OP literal)#    always exists (possibly empty), as in gjson

with OP one of ``== != < <= > >=`` and the literal a quoted string, a number or a bare
word. Comparisons follow gjson's: by the type of the document's value (a string compares
as text, a number as a float, true/false only with ``==``/``!=``, null, objects and arrays
never match). Any other shape returns None and the caller uses the raw-text evaluator,
so answers stay gjson's; a differential test checks both agree. One known difference:
with a duplicated object key gjson reads the first occurrence, a parsed object keeps the
last; such a document is not valid JSON for most producers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

_MISSING = object()
_NAME = r"[A-Za-z0-9_\-]+"
_QUERY = re.compile(
    rf"^#\((?P<sub>{_NAME}(?:\.{_NAME})*)\s*(?P<op>==|!=|<=|>=|<|>)\s*"
    r"(?P<lit>\"[^\"\\]*\"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[A-Za-z_][A-Za-z0-9_]*)\)(?P<all>#?)$"
)
_PLAIN = re.compile(rf"^{_NAME}$")

Test = Callable[[Any], bool]


def compile_fast(path: str) -> Test | None:
    """A test on a parsed document equivalent to gjson's Exists for ``path``, or None."""
    parts = path.split(".")
    query = None
    for i, part in enumerate(parts):
        if part.startswith("#("):
            query = ".".join(parts[i:])
            parts = parts[:i]
            break
    if not parts and query is None:
        return None
    if not all(_PLAIN.match(p) for p in parts):
        return None
    keys = tuple(parts)
    if query is None:
        return _Exists(keys)
    m = _QUERY.match(query)
    if m is None:
        return None
    compare = _Comparison(m.group("op"), m.group("lit"))
    if m.group("all"):
        return _IsList(keys)
    return _FirstMatch(keys, tuple(m.group("sub").split(".")), compare)


# The tests are small classes rather than closures: compiled (conditions.pxd), their
# calls and fields are C-level, and a Switch runs several of them on every request.
class _Exists:
    """``a.b.0``: the path leads to a value."""

    __slots__ = ("keys",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def __call__(self, doc: Any) -> bool:
        return _walk(doc, self.keys) is not _MISSING


class _IsList:
    """``a.#(...)#``: always exists (possibly empty) where the path leads to an array."""

    __slots__ = ("keys",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def __call__(self, doc: Any) -> bool:
        return isinstance(_walk(doc, self.keys), list)


class _FirstMatch:
    """``a.#(sub OP literal)``: some element of the array at ``keys`` matches."""

    __slots__ = ("compare", "keys", "sub")

    def __init__(self, keys: tuple[str, ...], sub: tuple[str, ...], compare: _Comparison) -> None:
        self.keys = keys
        self.sub = sub
        self.compare = compare

    def __call__(self, doc: Any) -> bool:
        items = _walk(doc, self.keys)
        if not isinstance(items, list):
            return False
        compare = self.compare
        for item in items:
            value = _walk(item, self.sub)
            if value is not _MISSING and compare.matches(value):
                return True
        return False


def _walk(doc: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if isinstance(doc, dict):
            doc = doc.get(key, _MISSING)
        elif isinstance(doc, list) and key.isdigit():
            index = int(key)
            doc = doc[index] if index < len(doc) else _MISSING
        else:
            return _MISSING
        if doc is _MISSING:
            return _MISSING
    return doc


def _go_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


_OPS = ("==", "!=", "<", "<=", ">", ">=")


class _Comparison:
    """``OP literal`` against one value, by the value's type, as gjson compares."""

    __slots__ = ("equal", "number", "op", "ordered", "text")

    def __init__(self, op: str, literal: str) -> None:
        self.op = _OPS.index(op)
        self.text = literal[1:-1] if literal.startswith('"') else literal
        self.number = _go_float(self.text)
        self.equal = op == "=="
        self.ordered = op not in ("==", "!=")  # gjson orders true/false in its own way: not modelled

    def matches(self, value: Any) -> bool:
        if isinstance(value, str):
            return _apply(self.op, value, self.text)
        if isinstance(value, bool):
            if self.ordered:
                raise _Unsupported
            return (("true" if value else "false") == self.text) == self.equal
        if isinstance(value, int | float):
            return _apply(self.op, float(value), self.number)
        return False


def _apply(op: int, left: Any, right: Any) -> bool:
    """``left OP right`` for OP's index in _OPS (strings or floats on both sides)."""
    if op == 0:
        return bool(left == right)
    if op == 1:
        return bool(left != right)
    if op == 2:
        return bool(left < right)
    if op == 3:
        return bool(left <= right)
    if op == 4:
        return bool(left > right)
    return bool(left >= right)


class _Unsupported(Exception):
    """A comparison this fast path does not model (an ordering on true/false)."""


def exists_parsed(test: Test, doc: Any) -> bool | None:
    """Run a fast test; None when it met a case it does not model."""
    try:
        return test(doc)
    except _Unsupported:
        return None
