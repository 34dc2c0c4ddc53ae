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
    # A query's own sub-path contains dots: find where the query segment starts.
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
        return lambda doc: _walk(doc, keys) is not _MISSING
    m = _QUERY.match(query)
    if m is None:
        return None
    sub = tuple(m.group("sub").split("."))
    compare = _comparison(m.group("op"), m.group("lit"))
    if compare is None:
        return None
    if m.group("all"):
        # gjson answers ``#(...)#`` with an array, matching or not: it exists when the
        # walk reaches an array.
        return lambda doc: isinstance(_walk(doc, keys), list)

    def first_match(doc: Any) -> bool:
        items = _walk(doc, keys)
        if not isinstance(items, list):
            return False
        for item in items:
            value = _walk(item, sub)
            if value is not _MISSING and compare(value):
                return True
        return False

    return first_match


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


def _comparison(op: str, literal: str) -> Callable[[Any], bool] | None:
    text = literal[1:-1] if literal.startswith('"') else literal
    number = _go_float(text)
    string_ops: dict[str, Callable[[str], bool]] = {
        "==": lambda v: v == text, "!=": lambda v: v != text,
        "<": lambda v: v < text, "<=": lambda v: v <= text,
        ">": lambda v: v > text, ">=": lambda v: v >= text,
    }
    number_ops: dict[str, Callable[[float], bool]] = {
        "==": lambda v: v == number, "!=": lambda v: v != number,
        "<": lambda v: v < number, "<=": lambda v: v <= number,
        ">": lambda v: v > number, ">=": lambda v: v >= number,
    }
    equal = op == "=="

    def bool_rule(v: bool) -> bool:
        return (("true" if v else "false") == text) == equal

    ordered = op not in ("==", "!=")  # gjson orders true/false in its own way: not modelled
    str_test, num_test = string_ops[op], number_ops[op]

    def compare(value: Any) -> bool:
        if isinstance(value, str):
            return str_test(value)
        if isinstance(value, bool):
            if ordered:
                raise _Unsupported
            return bool_rule(value)
        if isinstance(value, int | float):
            return num_test(float(value))
        return False

    return compare


class _Unsupported(Exception):
    """A comparison this fast path does not model (an ordering on true/false)."""


def exists_parsed(test: Test, doc: Any) -> bool | None:
    """Run a fast test; None when it met a case it does not model."""
    try:
        return test(doc)
    except _Unsupported:
        return None
