"""GJSON path evaluation (tidwall/gjson syntax), written for this router.

KServe InferenceGraph conditions are GJSON paths, and KServe evaluates them with
tidwall/gjson, so a condition must select exactly what gjson selects -- including on
documents gjson itself would call invalid. The evaluator therefore follows gjson's
scanning model: it walks the raw document text and returns the selected value's raw
text unchanged (whitespace included), building new text only where gjson does
(``#.``, ``#(...)#``, multipaths, modifiers).

Paths are parsed once by :func:`compile_path` into a tree of segment objects; a
request only pays for scanning its document. Every suffix or sub-path that gjson
would re-parse at run time is pre-parsed here, for both the object and the array
reading of a segment, because which reading applies depends on the document.
"""

from __future__ import annotations

import functools
import json as _stdlib_json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

_orjson_loads: Callable[[str | bytes], object] | None
try:
    import orjson

    _orjson_loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _orjson_loads = None

__all__ = ["GJSONSyntaxError", "Path", "Result", "compile_path", "get", "valid"]

# gjson's Type names; results travel internally as (type, raw) tuples.
NULL: Final = "Null"
FALSE: Final = "False"
NUMBER: Final = "Number"
STRING: Final = "String"
TRUE: Final = "True"
JSON: Final = "JSON"

_Val = tuple[str, str]
_NONE: Final[_Val] = (NULL, "")


class GJSONSyntaxError(ValueError):
    """A path that is not valid GJSON syntax; message says where and what."""


@dataclass(frozen=True, slots=True)
class Result:
    """What a path selected: gjson's type name and the raw JSON text."""

    type: str
    raw: str

    @property
    def exists(self) -> bool:
        """gjson's Exists(): something was selected (a JSON null counts)."""
        return self.raw != "" or self.type != NULL

    def value(self) -> object:
        """The selection as a Python value (str, int/float, dict/list, bool, None)."""
        t = self.type
        if t == STRING:
            return _string_body(self.raw)
        if t == NUMBER:
            return _number_value(self.raw)
        if t == TRUE:
            return True
        if t == FALSE:
            return False
        if t == JSON:
            return _json_value(self.raw)
        return None


_EMPTY_RESULT: Final = Result(NULL, "")

# Building a Result through its slot descriptors skips the frozen-dataclass __init__
# (about a third cheaper, ~0.1 us per get); equality and hashing are unaffected.
_new_object = object.__new__
_set_type = Result.__dict__["type"].__set__
_set_raw = Result.__dict__["raw"].__set__


def _make_result(t: str, raw: str) -> Result:
    """Result(t, raw) without the dataclass __init__ overhead."""
    r: Result = _new_object(Result)
    _set_type(r, t)
    _set_raw(r, raw)
    return r


# --------------------------------------------------------------------------- scanning
# Regexes keep the per-character work in C; the possessive/atomic forms (3.11+) make a
# failed match give up at once instead of backtracking.

_STR_BODY = r'[^"\\]*+(?:\\[\s\S][^"\\]*+)*+'
_STR_RE = re.compile(r'"' + _STR_BODY + r'"')


def _nested_squash_pattern(levels: int) -> str:
    """A regex for a bracketed value nested at most ``levels`` deep.

    Like gjson's squash it does not care which bracket closes which: it only counts.
    """
    flat = r'(?:[^"\[\](){}]++|"' + _STR_BODY + r'")*+'
    pat = r"[\[({]" + flat + r"[\])}]"
    for _ in range(levels - 1):
        pat = r'[\[({](?:[^"\[\](){}]++|"' + _STR_BODY + r'"|' + pat + r")*+[\])}]"
    return pat


_SQUASH_FAST = re.compile(_nested_squash_pattern(6))
_SQUASH_TOKEN = re.compile(r'"' + _STR_BODY + r'"|["\[\](){}]')
_NUM_RUN = re.compile(r"[^\x00- ,\]}]*+")
_LIT_RUN = re.compile(r"[a-z]*+")
_KEY_OR_CLOSE = re.compile(r'["}]')
_ROOT = re.compile(r"[{\[]")
_TONUM_END = re.compile(r"[\x00- ,\]}]")
_UINT = re.compile(r"[0-9]+")
_INT_LITERAL = re.compile(r"-?[0-9]+")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_PLAIN_RUN = re.compile(r"[^\\\x00-\x1f]*+")
_UGLY_TOKEN = re.compile(r'("' + _STR_BODY + r'"?)|[\x00- ]++')
_JSON_STRING_SAFE = re.compile(r'[^\x00-\x1f"\\<>&\u2028\u2029\ud800-\udfff]*+')

# What a value starts with, as gjson dispatches on it.
_K_STR, _K_OBJ, _K_ARR, _K_LIT, _K_N, _K_NUM, _K_END = 1, 2, 3, 4, 5, 6, 7
_VALUE_KIND: Final[dict[str, int]] = {'"': _K_STR, "{": _K_OBJ, "[": _K_ARR, "t": _K_LIT, "f": _K_LIT, "n": _K_N}
for _c in "+-0123456789iIN":
    _VALUE_KIND[_c] = _K_NUM
_ELEMENT_KIND: Final[dict[str, int]] = {**_VALUE_KIND, "]": _K_END}


def _squash_end(s: str, i: int) -> int:
    """End of the bracketed value opening at ``s[i]`` (gjson's parseSquash).

    ``s[i]`` is taken as an opener whatever it is; an unclosed value runs to the end.
    """
    m = _SQUASH_FAST.match(s, i)
    if m is not None:
        return m.end()
    depth = 1
    for tok in _SQUASH_TOKEN.finditer(s, i + 1):
        c = tok.group()
        if c[0] == '"':
            if len(c) == 1:  # unterminated string swallows the rest
                return len(s)
            continue
        if c in "[({":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return tok.end()
    return len(s)


def _squash_text(s: str) -> str:
    """gjson's squash(): the leading bracketed value or string of ``s``."""
    if s[0] == '"':
        m = _STR_RE.match(s)
        return m.group() if m is not None else s
    return s[: _squash_end(s, 0)]


def _string_end(s: str, i: int) -> int:
    """Index just past the string whose opening quote is ``s[i - 1]``; -1 if unterminated."""
    j = s.find('"', i)
    if j < 0:
        return -1
    if s.find("\\", i, j) < 0:
        return j + 1
    m = _STR_RE.match(s, i - 1)
    return m.end() if m is not None else -1


def _number_end(s: str, i: int) -> int:
    """gjson's parseNumber: a number runs to whitespace, ',', ']' or '}'."""
    m = _NUM_RUN.match(s, i + 1)
    return m.end()  # type: ignore[union-attr]  # a '*' pattern always matches


def _literal_end(s: str, i: int) -> int:
    """gjson's parseLiteral: true/false/null run over lowercase letters."""
    m = _LIT_RUN.match(s, i + 1)
    return m.end()  # type: ignore[union-attr]


def _parse_any(s: str, i: int) -> tuple[int, str, str]:
    """gjson's parseAny: the next value at or after ``i`` (junk is skipped).

    Returns (end, type, raw); type is "" when there is none.
    """
    n = len(s)
    while i < n:
        c = s[i]
        if c == "{" or c == "[":
            e = _squash_end(s, i)
            return e, JSON, s[i:e]
        if c <= " ":
            i += 1
            continue
        k = _VALUE_KIND.get(c, 0)
        if k == _K_STR:
            e = _string_end(s, i + 1)
            if e < 0:
                return i + 1, "", ""
            return e, STRING, s[i:e]
        if k == _K_N and i + 1 < n and s[i + 1] != "u":
            k = _K_NUM
        if k == _K_NUM:
            e = _number_end(s, i)
            return e, NUMBER, s[i:e]
        if k:
            e = _literal_end(s, i)
            return e, (TRUE if c == "t" else FALSE if c == "f" else NULL), s[i:e]
        i += 1
    return i, "", ""


def _parse_value(s: str) -> _Val:
    """gjson's Parse: the value a text starts with; objects/arrays take the rest."""
    for i, c in enumerate(s):
        if c == "{" or c == "[":
            return JSON, s[i:]
        if c <= " ":
            continue
        if c in "+-0123456789iIN" or (c == "n" and i + 1 < len(s) and s[i + 1] != "u"):
            m = _TONUM_END.search(s, i + 1)
            return NUMBER, s[i : m.start()] if m is not None else s[i:]
        if c == "n" or c == "t" or c == "f":
            return (NULL if c == "n" else TRUE if c == "t" else FALSE), s[i : _literal_end(s, i)]
        if c == '"':
            e = _string_end(s, i + 1)
            return STRING, s[i:e] if e >= 0 else s[i:]
        return _NONE
    return _NONE


def _for_each(v: _Val) -> list[tuple[str, str, str, str]]:
    """gjson's ForEach as a list of (key raw, key text, value type, value raw)."""
    t, s = v
    if t == NULL and s == "":
        return []
    if t != JSON:
        return [("", "", t, s)]
    n = len(s)
    i = 0
    while i < n:
        c = s[i]
        if c == "{" or c == "[":
            break
        if c > " ":
            return []
        i += 1
    else:
        return []
    is_obj = s[i] == "{"
    i += 1
    out: list[tuple[str, str, str, str]] = []
    key_raw = key = ""
    while i < n:
        if is_obj:
            if s[i] != '"':
                i += 1
                continue
            e = _string_end(s, i + 1)
            if e < 0:
                return out
            key_raw = s[i:e]
            key = _string_body(key_raw)
            i = e
        while i < n and (s[i] <= " " or s[i] == "," or s[i] == ":"):
            i += 1
        i, vt, vraw = _parse_any(s, i)
        if not vt:
            return out
        out.append((key_raw, key, vt, vraw))
        i += 1  # gjson's loop steps over the byte after each value
    return out


# --------------------------------------------------------------------------- text helpers


def _unescape(s: str) -> str:
    """gjson's unescape: lenient, stops at the first control character or bad escape."""
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        if s[i] != "\\":
            j = _PLAIN_RUN.match(s, i).end()  # type: ignore[union-attr]
            out.append(s[i:j])
            i = j
            if i == n or s[i] != "\\":
                break
        i += 1
        if i >= n:
            break
        e = s[i]
        if e == "\\" or e == "/" or e == '"':
            out.append(e)
        elif e in "bfnrt":
            out.append({"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}[e])
        elif e == "u":
            if i + 5 > n:
                break
            r = _hex4(s, i + 1)
            i += 5
            if 0xD800 <= r < 0xE000 and n - i >= 6 and s[i] == "\\" and s[i + 1] == "u":
                r2 = _hex4(s, i + 2)
                i += 6
                if r < 0xDC00 and 0xDC00 <= r2 < 0xE000:
                    r = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00)
                else:
                    r = 0xFFFD
            if 0xD800 <= r < 0xE000:
                r = 0xFFFD
            out.append(chr(r))
            i -= 1
        else:
            break
        i += 1
    return "".join(out)


def _hex4(s: str, i: int) -> int:
    """A \\u escape's code unit; Go's ParseUint gives 0 for bad hex."""
    h = s[i : i + 4]
    return int(h, 16) if _HEX4.fullmatch(h) else 0


def _string_body(raw: str) -> str:
    """The text of a String result (gjson's Result.Str)."""
    body = raw[1:-1] if len(raw) >= 2 and raw[-1] == '"' else raw[1:]
    return _unescape(body) if "\\" in body else body


def _go_float(text: str) -> float:
    """strconv.ParseFloat with the error ignored, as gjson uses it (0 on bad syntax)."""
    try:
        if "_" in text or text != text.strip():
            return 0.0
        return float(text)
    except ValueError:
        if "x" in text.lower() and "p" in text.lower():  # Go hex floats need a 'p' exponent
            try:
                return float.fromhex(text)
            except ValueError:
                return 0.0
        return 0.0


def _number_value(raw: str) -> int | float:
    """Integers stay exact ints; everything else is Go's float reading."""
    return int(raw) if _INT_LITERAL.fullmatch(raw) else _go_float(raw)


def _json_value(raw: str) -> object:
    """Strict JSON via orjson; gjson's lenient reading when the raw text is broken."""
    try:
        if _orjson_loads is not None:
            return _orjson_loads(raw)
        return _stdlib_json.loads(raw)
    except (ValueError, RecursionError):
        return _lenient_value(raw)


def _lenient_value(raw: str) -> object:
    """gjson's Value() for text that is not strict JSON (e.g. a truncated document)."""
    items = _for_each((JSON, raw))
    start = raw.lstrip(" \t\r\n\x0b\x0c")
    if start.startswith("{"):
        obj: dict[str, object] = {}
        for _kr, key, vt, vraw in items:
            obj.setdefault(key, Result(vt, vraw).value())
        return obj
    if start.startswith("["):
        return [Result(vt, vraw).value() for _kr, _k, vt, vraw in items]
    return None


def _json_string(s: str) -> str:
    """gjson's AppendJSONString: quote ``s`` the way gjson writes names and @tostr."""
    m = _JSON_STRING_SAFE.match(s)
    if m is not None and m.end() == len(s):
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        o = ord(ch)
        if o < 0x20:
            out.append({8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t"}.get(o) or f"\\u{o:04x}")
        elif ch in "<>&":
            out.append(f"\\u{o:04x}")
        elif ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch in "\u2028\u2029":
            out.append(f"\\u{o:04x}")
        elif 0xD800 <= o < 0xE000:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _result_string(v: _Val) -> str:
    """gjson's Result.String()."""
    t, raw = v
    if t == STRING:
        return _string_body(raw)
    if t == JSON:
        return raw
    if t == TRUE:
        return "true"
    if t == FALSE:
        return "false"
    if t == NUMBER:
        if _INT_LITERAL.fullmatch(raw):
            return raw
        f = _go_float(raw)
        if f != f:
            return "NaN"
        if f in (float("inf"), float("-inf")):
            return "+Inf" if f > 0 else "-Inf"
        text = format(Decimal(repr(f)), "f")
        return text[:-2] if text.endswith(".0") else text
    return ""


def _truthy(v: _Val) -> bool:
    """gjson's Result.Bool()."""
    t, raw = v
    if t == TRUE:
        return True
    if t == STRING:
        s = _string_body(raw)
        return s in ("1", "t", "T") or s.lower() == "true"
    if t == NUMBER:
        return _go_float(raw) != 0
    return False


def _glob(pattern: str) -> Callable[[str], bool]:
    """tidwall/match: ``*`` any run, ``?`` any one character, ``\\`` escapes."""
    if pattern == "*":
        return lambda _s: True
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\":
            if i + 1 == len(pattern):
                return lambda _s: False
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    rx = re.compile("".join(out), re.DOTALL)
    return lambda s: rx.fullmatch(s) is not None


# --------------------------------------------------------------------------- validity


_V_WS = re.compile(r"[ \t\n\r]*+")
_V_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"')
_V_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?")
_V_KEY = re.compile(r'[ \t\n\r]*+"(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"[ \t\n\r]*+:')


def _valid_slow(s: str) -> bool:
    """RFC 8259 validity without recursion (gjson.Valid accepts any nesting depth)."""
    n = len(s)
    stack: list[str] = []
    i = _V_WS.match(s).end()  # type: ignore[union-attr]
    while True:
        # a value starts at i
        if i >= n:
            return False
        c = s[i]
        if c == "{" or c == "[":
            j = _V_WS.match(s, i + 1).end()  # type: ignore[union-attr]
            if j < n and s[j] == ("}" if c == "{" else "]"):
                i = j + 1
            else:
                if c == "{":
                    m = _V_KEY.match(s, i + 1)
                    if m is None:
                        return False
                    j = _V_WS.match(s, m.end()).end()  # type: ignore[union-attr]
                stack.append(c)
                i = j
                continue
        else:
            if c == '"':
                m = _V_STRING.match(s, i)
            elif c == "-" or "0" <= c <= "9":
                m = _V_NUMBER.match(s, i)
            elif s.startswith("true", i) or s.startswith("null", i):
                m = None
                i += 4
            elif s.startswith("false", i):
                m = None
                i += 5
            else:
                return False
            if m is not None:
                i = m.end()
            elif c == '"' or c == "-" or "0" <= c <= "9":
                return False
        # a value ended at i: close containers / move to the next member
        while True:
            i = _V_WS.match(s, i).end()  # type: ignore[union-attr]
            if not stack:
                return i == n
            if i >= n:
                return False
            c = s[i]
            top = stack[-1]
            if c == ",":
                if top == "{":
                    m = _V_KEY.match(s, i + 1)
                    if m is None:
                        return False
                    i = _V_WS.match(s, m.end()).end()  # type: ignore[union-attr]
                else:
                    i = _V_WS.match(s, i + 1).end()  # type: ignore[union-attr]
                break
            if c == ("}" if top == "{" else "]"):
                stack.pop()
                i += 1
                continue
            return False


def valid(doc: str | bytes) -> bool:
    """gjson.Valid: strict JSON validity of a whole document."""
    if _orjson_loads is not None:
        try:
            _orjson_loads(doc)
            return True
        except ValueError:
            pass  # orjson is stricter on a few corners (depth, huge numbers); decide slowly
    if not isinstance(doc, str):
        doc = bytes(doc).decode("utf-8", "surrogateescape")
    return _valid_slow(doc)


# --------------------------------------------------------------------------- modifiers


def _mod_this(s: str, _arg: str) -> str:
    return s


def _mod_valid(s: str, _arg: str) -> str:
    return s if valid(s) else ""


def _mod_reverse(s: str, _arg: str) -> str:
    """@reverse: array elements or object members in reverse order."""
    v = _parse_value(s)
    if v[0] != JSON:
        return s
    items = _for_each(v)
    items.reverse()
    if v[1][0] == "[":
        return "[" + ",".join(it[3] for it in items) + "]"
    return "{" + ",".join(it[0] + ":" + it[3] for it in items) + "}"


def _arg_flag(arg: str, name: str) -> bool:
    """A boolean option from a modifier argument such as {"deep":true}."""
    flag = False
    for _kr, key, vt, vraw in _for_each(_parse_value(arg)):
        if key == name:
            flag = _truthy((vt, vraw))
    return flag


_CONTROL_AND_SPACE: Final = "".join(chr(c) for c in range(33))


def _unwrap(s: str) -> str:
    """Strip the outer brackets of an array/object text (for @flatten, @join)."""
    s = s.strip(_CONTROL_AND_SPACE)
    if len(s) >= 2 and s[0] in "[{":
        s = s[1:-1]
    return s


def _mod_flatten(s: str, arg: str) -> str:
    """@flatten: splice nested arrays one level (all levels with {"deep":true})."""
    v = _parse_value(s)
    if v[0] != JSON or v[1][0] != "[":
        return s
    deep = bool(arg) and _arg_flag(arg, "deep")
    parts: list[str] = []
    for _kr, _k, vt, vraw in _for_each(v):
        if vt == JSON and vraw[0] == "[":
            vraw = _unwrap(_mod_flatten(vraw, arg) if deep else vraw)
        vraw = vraw.strip()
        if vraw:
            parts.append(vraw)
    return "[" + ",".join(parts) + "]"


def _mod_keys(s: str, _arg: str) -> str:
    """@keys: an object's keys (null per element of anything else)."""
    v = _parse_value(s)
    if v == _NONE:
        return "[]"
    is_obj = v[0] == JSON and v[1][0] == "{"
    return "[" + ",".join(it[0] if is_obj else "null" for it in _for_each(v)) + "]"


def _mod_values(s: str, _arg: str) -> str:
    """@values: an object's values; an array is returned as is."""
    v = _parse_value(s)
    if v == _NONE:
        return "[]"
    if v[0] == JSON and v[1][0] == "[":
        return s
    return "[" + ",".join(it[3] for it in _for_each(v)) + "]"


def _mod_ugly(s: str, _arg: str) -> str:
    """@ugly: drop all whitespace outside strings."""
    return _UGLY_TOKEN.sub(lambda m: m.group(1) or "", s)


def _mod_join(s: str, arg: str) -> str:
    """@join: merge an array of objects, later keys winning unless {"preserve":true}."""
    v = _parse_value(s)
    if v[0] != JSON or v[1][0] != "[":
        return s
    objects = [(vt, vraw) for _kr, _k, vt, vraw in _for_each(v) if vt == JSON and vraw[0] == "{"]
    if arg and _arg_flag(arg, "preserve"):
        return "{" + ",".join(_unwrap(raw) for _t, raw in objects) + "}"
    keys: dict[str, str] = {}
    vals: dict[str, str] = {}
    for obj in objects:
        for kraw, key, _vt, vraw in _for_each(obj):
            keys.setdefault(key, kraw)
            vals[key] = vraw
    return "{" + ",".join(kraw + ":" + vals[key] for key, kraw in keys.items()) + "}"


def _mod_tostr(s: str, _arg: str) -> str:
    """@tostr: the JSON text as a JSON string."""
    return _json_string(s)


def _mod_fromstr(s: str, _arg: str) -> str:
    """@fromstr: the text a JSON string holds."""
    return _result_string(_parse_value(s)) if valid(s) else ""


def _mod_group(s: str, _arg: str) -> str:
    """@group: an object of arrays into an array of objects."""
    v = _parse_value(s)
    if v[0] != JSON or v[1][0] != "{":
        return ""
    rows: list[list[str]] = []
    for kraw, _k, vt, vraw in _for_each(v):
        if vt != JSON or vraw[0] != "[":
            continue
        for idx, item in enumerate(_for_each((vt, vraw))):
            if idx == len(rows):
                rows.append([])
            rows[idx].append(kraw + ":" + item[3])
    return "[" + ",".join("{" + ",".join(row) + "}" for row in rows) + "]"


_MODIFIERS: Final[dict[str, Callable[[str, str], str]]] = {
    "this": _mod_this,
    "reverse": _mod_reverse,
    "flatten": _mod_flatten,
    "values": _mod_values,
    "valid": _mod_valid,
    "keys": _mod_keys,
    "ugly": _mod_ugly,
    "join": _mod_join,
    "tostr": _mod_tostr,
    "fromstr": _mod_fromstr,
    "group": _mod_group,
}


# --------------------------------------------------------------------------- compiled form


class _GetNode:
    """A path as gjson's Get() sees it: modifier, literal, multipath or plain walk."""

    __slots__ = ("arg", "fn", "kind", "literal", "multi", "next", "plain", "sels")

    def __init__(self) -> None:
        self.kind = _PLAIN
        self.plain: _PlainNode | None = None
        self.fn: Callable[[str, str], str] | None = None
        self.arg = ""
        self.literal = ""
        self.multi = ""
        self.sels: list[tuple[str, _GetNode]] = []
        self.next: _GetNode | None = None


_PLAIN, _LINES, _MOD, _STATIC, _MULTI = 0, 1, 2, 3, 4


class _PlainNode:
    """A path walked from inside an object or array; both readings are pre-parsed."""

    __slots__ = ("arr", "obj")

    def __init__(self) -> None:
        self.obj: _ObjSeg
        self.arr: _ArrSeg


class _ObjSeg:
    """A segment read as an object key: name or wildcard, then a child path or a pipe."""

    __slots__ = ("match", "more", "part", "pipe")

    def __init__(self) -> None:
        self.part = ""
        self.match: Callable[[str], bool] | None = None
        self.more: _PlainNode | None = None
        self.pipe: _GetNode | None = None


class _ArrSeg:
    """A segment read against an array: index, '#' count, '#.' map or '#(...)' query."""

    __slots__ = ("alog", "alog_get", "alog_pipe", "arrch", "count", "index", "more", "pipe", "query")

    def __init__(self) -> None:
        self.arrch = False
        self.count = False
        self.index = -1
        self.more: _PlainNode | None = None
        self.pipe: _GetNode | None = None
        self.alog = False
        self.alog_get: _GetNode | None = None
        self.alog_pipe: _GetNode | None = None
        self.query: _Query | None = None


class _Query:
    """A '#(path op value)' query; value text and number are prepared at compile time."""

    __slots__ = ("all", "glob", "more_get", "more_pipe", "node", "num", "op", "path", "tilde", "value")

    def __init__(self) -> None:
        self.path = ""
        self.node: _GetNode | None = None
        self.op = ""
        self.value = ""
        self.num = 0.0
        self.tilde = ""
        self.all = False
        self.glob: Callable[[str], bool] | None = None
        self.more_get: _GetNode | None = None
        self.more_pipe: _GetNode | None = None


def _trim(s: str) -> str:
    """gjson's trim: strip bytes <= ' ' (not Unicode whitespace)."""
    i, j = 0, len(s)
    while i < j and s[i] <= " ":
        i += 1
    while j > i and s[j - 1] <= " ":
        j -= 1
    return s[i:j]


def _is_dot_piper(s: str) -> bool:
    """After a '.', these start a new Get (a pipe) rather than a child key."""
    c = s[0]
    if c == "@":
        i = 1
        while i < len(s) and s[i] not in ".|:":
            i += 1
        return s[1:i] in _MODIFIERS
    return c == "[" or c == "{"


def _split_object_path(p: str) -> tuple[str, bool, str | None, str | None]:
    """gjson's parseObjectPath: (key, has wildcards, rest after '.', rest after pipe)."""
    buf: list[str] | None = None
    wild = False
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == "|" or c == ".":
            part = p[:i] if buf is None else "".join(buf)
            rest = p[i + 1 :]
            if c == "|" or (i < n - 1 and _is_dot_piper(rest)):
                return part, wild, None, rest
            return part, wild, rest, None
        if c == "\\":
            if buf is None:
                buf = [p[:i]]
            if i + 1 < n:
                buf.append(p[i + 1])
            i += 2
            continue
        if c == "*" or c == "?":
            wild = True
        if buf is not None:
            buf.append(c)
        i += 1
    return (p if buf is None else "".join(buf)), wild, None, None


def _parse_query(q: str) -> tuple[str, str, str, int, bool] | None:
    """gjson's parseQuery on text starting '#(' or '#[': (path, op, value, end, escaped)."""
    i, j, depth, esc = 2, 0, 1, False
    n = len(q)
    while i < n:
        c = q[i]
        if depth == 1 and j == 0 and c in "!=<>%":
            j = i
            i += 1
            continue
        if c == "\\":
            i += 1
        elif c == "[" or c == "(":
            depth += 1
        elif c == "]" or c == ")":
            depth -= 1
            if depth == 0:
                break
        elif c == '"':
            i += 1
            while i < n:
                if q[i] == "\\":
                    esc = True
                    i += 1
                elif q[i] == '"':
                    break
                i += 1
        i += 1
    if depth > 0:
        return None
    if j == 0:
        return _trim(q[2:i]), "", "", i + 1, esc
    path = _trim(q[2:j])
    value = _trim(q[j:i])
    size = 0
    if len(value) == 1:
        size = 1
    elif value[:2] in ("!=", "!%", "<=", ">="):
        size = 2
    elif value[:2] == "==":
        value = value[1:]
        size = 1
    elif value[0] in "<>=%":
        size = 1
    return path, value[:size], _trim(value[size:]), i + 1, esc


def _split_possible_pipe(p: str) -> tuple[str, str] | None:
    """gjson's splitPossiblePipe: a top-level '|' inside a ``#.``/query tail path."""
    if "|" not in p:
        return None
    if p[0] == "{":
        squashed = _squash_text(p[1:])
        if len(squashed) < len(p) - 1:
            squashed = p[: len(squashed) + 1]
            remain = p[len(squashed) :]
            if remain[0] == "|":
                return squashed, remain[1:]
        return None
    i, n = 0, len(p)
    while i < n:
        c = p[i]
        if c == "\\":
            i += 1
        elif c == ".":
            if i == n - 1:
                return None
            if p[i + 1] == "#":
                i += 2
                if i == n:
                    return None
                if p[i] == "[" or p[i] == "(":
                    start, end = p[i], ("]" if p[i] == "[" else ")")
                    i += 1
                    depth = 1
                    while i < n:
                        if p[i] == "\\":
                            i += 1
                        elif p[i] == start:
                            depth += 1
                        elif p[i] == end:
                            depth -= 1
                            if depth == 0:
                                break
                        elif p[i] == '"':
                            i += 1
                            while i < n:
                                if p[i] == "\\":
                                    i += 1
                                elif p[i] == '"':
                                    break
                                i += 1
                        i += 1
        elif c == "|":
            return p[:i], p[i + 1 :]
        i += 1
    return None


def _parse_sub_selectors(p: str) -> tuple[list[tuple[str, str]], str] | None:
    """gjson's parseSubSelectors for ``[a,b]`` / ``{a,"n":b}``: ((name, path)...), rest."""
    sels: list[tuple[str, str]] = []
    modifier = colon = 0
    depth = start = i = 1
    n = len(p)
    while i < n:
        c = p[i]
        if c == "\\":
            i += 1
        elif c == "@":
            if modifier == 0 and p[i - 1] in ".|":
                modifier = i
        elif c == ":":
            if modifier == 0 and colon == 0 and depth == 1:
                colon = i
        elif c == "," or ((c == "]" or c == ")" or c == "}") and depth == 1):
            if depth == 1:
                sels.append(("", p[start:i]) if colon == 0 else (p[start:colon], p[colon + 1 : i]))
                colon = modifier = 0
                start = i + 1
                if c != ",":
                    return sels, p[i + 1 :]
        elif c == '"':
            i += 1
            while i < n:
                if p[i] == "\\":
                    i += 1
                elif p[i] == '"':
                    break
                i += 1
        elif c in "[({":
            depth += 1
        elif c in "])}":
            depth -= 1
        i += 1
    return None


def _name_of_last(p: str) -> str:
    """The last path component, which names an unnamed multipath member."""
    for i in range(len(p) - 1, -1, -1):
        if (p[i] == "|" or p[i] == ".") and not (i > 0 and p[i - 1] == "\\"):
            return p[i + 1 :]
    return p


def _is_simple_name(s: str) -> bool:
    """Whether a component can stand as a key name (else gjson uses '_')."""
    return not any(c < " " or c in "[]{}()#|!" for c in s)


class _Compiler:
    """Builds the segment tree once; equal sub-paths share one node."""

    def __init__(self) -> None:
        self.gets: dict[str, _GetNode] = {}
        self.plains: dict[str, _PlainNode] = {}

    def get_node(self, p: str) -> _GetNode:
        node = self.gets.get(p)
        if node is None:
            node = self.gets[p] = _GetNode()
            self._fill_get(node, p)
        return node

    def plain_node(self, p: str) -> _PlainNode:
        node = self.plains.get(p)
        if node is None:
            node = self.plains[p] = _PlainNode()
            node.obj = self._obj_seg(p)
            node.arr = self._arr_seg(p)
        return node

    def _tail(self, node: _GetNode, rest: str) -> None:
        """What follows a modifier/literal/multipath: '|' or '.' continues with a new Get."""
        if rest and rest[0] in "|.":
            node.next = self.get_node(rest[1:])

    def _fill_get(self, node: _GetNode, p: str) -> None:
        if len(p) > 1:
            c = p[0]
            if c == "@" and self._fill_modifier(node, p):
                return
            if c == "!" and self._fill_static(node, p):
                return
            if c == "[" or c == "{":
                parsed = _parse_sub_selectors(p)
                if parsed is None:
                    p = ""
                else:
                    sels, rest = parsed
                    if not rest or rest[0] in "|.":
                        node.kind = _MULTI
                        node.multi = c
                        node.sels = [(self._sel_key(c, name, sp), self.get_node(sp)) for name, sp in sels]
                        self._tail(node, rest)
                        return
                    p = rest
        if len(p) >= 2 and p[0] == "." and p[1] == ".":
            node.kind = _LINES
            node.plain = self.plain_node(p[2:])
        else:
            node.kind = _PLAIN
            node.plain = self.plain_node(p)

    @staticmethod
    def _sel_key(kind: str, name: str, sub_path: str) -> str:
        if kind != "{":
            return ""
        if name:
            return name if name[0] == '"' and valid(name) else _json_string(name)
        last = _name_of_last(sub_path)
        return _json_string(last if _is_simple_name(last) else "_")

    def _fill_modifier(self, node: _GetNode, p: str) -> bool:
        name, rest, has_args = p[1:], "", False
        for i in range(1, len(p)):
            c = p[i]
            if c == ":":
                name, rest = p[1:i], p[i + 1 :]
                has_args = bool(rest)
                break
            if c == "|" or c == ".":
                name, rest = p[1:i], p[i:]
                break
        fn = _MODIFIERS.get(name)
        if fn is None:
            return False
        arg = ""
        if has_args:
            if rest[0] in '{["' and _parse_value(rest) != _NONE:
                arg = _squash_text(rest)
                rest = rest[len(arg) :]
            else:
                i = 0
                while i < len(rest) and rest[i] != "|":
                    if rest[i] in '{["(':
                        i += len(_squash_text(rest[i:])) - 1
                    i += 1
                arg, rest = rest[:i], rest[i:]
        node.kind = _MOD
        node.fn = fn
        node.arg = arg
        self._tail(node, rest)
        return True

    def _fill_static(self, node: _GetNode, p: str) -> bool:
        name, rest = p[1:], ""
        if name[0] in '{["+-0123456789':
            literal = name[: _squash_end(name, 0)]
            rest = name[len(literal) :]
        else:
            for i in range(1, len(p)):
                if p[i] == "|" or p[i] == ".":
                    name, rest = p[1:i], p[i:]
                    break
            if name.lower() not in ("true", "false", "null", "nan", "inf"):
                return False
            literal = name
        node.kind = _STATIC
        node.literal = literal
        self._tail(node, rest)
        return True

    def _obj_seg(self, p: str) -> _ObjSeg:
        seg = _ObjSeg()
        part, wild, more, pipe = _split_object_path(p)
        seg.part = part
        seg.match = _glob(part) if wild else None
        seg.more = self.plain_node(more) if more is not None else None
        seg.pipe = self.get_node(pipe) if pipe is not None else None
        return seg

    def _arr_seg(self, p: str) -> _ArrSeg:
        """gjson's parseArrayPath, resolved ahead of time."""
        seg = _ArrSeg()
        part: str = p
        more: str | None = None
        pipe: str | None = None
        alogkey: str | None = None
        query: _Query | None = None
        i, n = 0, len(p)
        while i < n:
            c = p[i]
            if c == "|":
                part, pipe = p[:i], p[i + 1 :]
                break
            if c == ".":
                part = p[:i]
                rest = p[i + 1 :]
                if not seg.arrch and i < n - 1 and _is_dot_piper(rest):
                    pipe = rest
                else:
                    more = rest
                break
            if c == "#":
                seg.arrch = True
                if i == 0 and n > 1:
                    if p[1] == ".":
                        alogkey = p[2:]
                    elif p[1] == "[" or p[1] == "(":
                        query = _Query()
                        parsed = _parse_query(p)
                        if parsed is None:  # unbalanced: gjson runs an empty query
                            query.node = self.get_node("")
                            part = p
                            break
                        query.path, query.op, value, end, esc = parsed
                        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                            value = value[1:-1]
                            if esc:
                                value = _unescape(value)
                        query.value = value
                        i = end - 1
                        if i + 1 < n and p[i + 1] == "#":
                            query.all = True
            i += 1
        seg.count = seg.arrch and part == "#"
        if not seg.arrch and _UINT.fullmatch(part):
            seg.index = int(part)
        seg.more = self.plain_node(more) if more is not None else None
        seg.pipe = self.get_node(pipe) if pipe is not None else None
        if alogkey is not None:
            seg.alog = True
            split = _split_possible_pipe(alogkey)
            seg.alog_get = self.get_node(split[0] if split else alogkey)
            seg.alog_pipe = self.get_node(split[1]) if split else None
        if query is not None:
            if query.node is None:
                query.node = self.get_node(query.path)
            self._finish_query(query, more)
            seg.query = query
        return seg

    def _finish_query(self, q: _Query, more: str | None) -> None:
        value = q.value
        if value[:1] == "~":
            q.tilde = value[1:] if value[1:] in ("*", "null", "true", "false") else "?"
        q.num = _go_float(value)
        if q.op in ("%", "!%"):
            q.glob = _glob(value)
        if more is not None:
            split = _split_possible_pipe(more)
            q.more_get = self.get_node(split[0] if split else more)
            q.more_pipe = self.get_node(split[1]) if split else None


_CLOSERS: Final = {"(": ")", "[": "]", "{": "}"}


def _check_syntax(path: str) -> None:
    """Reject what gjson would only misread: empty paths, unbalanced brackets/quotes."""
    if not isinstance(path, str):
        raise TypeError(f"GJSON path must be str, not {type(path).__name__}")
    if path == "":
        raise GJSONSyntaxError("empty GJSON path")
    stack: list[tuple[str, int]] = []
    i, n = 0, len(path)
    while i < n:
        c = path[i]
        if c == "\\":
            if i + 1 >= n:
                raise GJSONSyntaxError(f"dangling escape '\\' at offset {i} in GJSON path {path!r}")
            i += 2
            continue
        if c == '"':
            j = i + 1
            while j < n and path[j] != '"':
                j += 2 if path[j] == "\\" else 1
            if j >= n:
                raise GJSONSyntaxError(f"unterminated string starting at offset {i} in GJSON path {path!r}")
            i = j + 1
            continue
        if c in "([{":
            stack.append((c, i))
        elif c in ")]}":
            if not stack:
                raise GJSONSyntaxError(f"unexpected {c!r} at offset {i} in GJSON path {path!r}: nothing to close")
            opener, at = stack.pop()
            if _CLOSERS[opener] != c:
                raise GJSONSyntaxError(
                    f"mismatched {c!r} at offset {i} in GJSON path {path!r}: "
                    f"{opener!r} opened at offset {at} needs {_CLOSERS[opener]!r}"
                )
        i += 1
    if stack:
        opener, at = stack[-1]
        raise GJSONSyntaxError(
            f"unbalanced {opener!r} at offset {at} in GJSON path {path!r}: missing {_CLOSERS[opener]!r}"
        )


# --------------------------------------------------------------------------- evaluation
# A context is [type, raw, pipe]: the value found so far and the pipe to apply to it,
# shared by the nested object/array walks of one Get (gjson's parseContext).


def _get(node: _GetNode, s: str) -> _Val:
    """gjson's Get on pre-parsed path: returns (type, raw), ("Null", "") for nothing."""
    kind = node.kind
    if kind == _PLAIN:
        plain = node.plain
        assert plain is not None
        ctx: list[Any] = [NULL, "", None]
        c = s[:1]
        if c == "{":
            _walk_object(ctx, s, 1, plain.obj)
        elif c == "[":
            _walk_array(ctx, s, 1, plain.arr)
        else:
            m = _ROOT.search(s)  # gjson starts at the first bracket, whatever precedes it
            if m is None:
                return _NONE
            if m.group() == "{":
                _walk_object(ctx, s, m.end(), plain.obj)
            else:
                _walk_array(ctx, s, m.end(), plain.arr)
        if ctx[2] is not None:
            return _get(ctx[2], ctx[1])
        return ctx[0], ctx[1]
    if kind == _MOD:
        assert node.fn is not None
        out = node.fn(s, node.arg)
        return _get(node.next, out) if node.next is not None else _parse_value(out)
    if kind == _STATIC:
        return _get(node.next, node.literal) if node.next is not None else _parse_value(node.literal)
    if kind == _MULTI:
        parts: list[str] = []
        for key, sub in node.sels:
            t, raw = _get(sub, s)
            if raw or t != NULL:
                parts.append(key + ":" + (raw or "null") if key else (raw or "null"))
        built = "{" + ",".join(parts) + "}" if node.multi == "{" else "[" + ",".join(parts) + "]"
        return _get(node.next, built) if node.next is not None else (JSON, built)
    # _LINES: the document is a newline-separated sequence walked as one array
    assert node.plain is not None
    ctx = [NULL, "", None]
    _walk_array(ctx, s, 0, node.plain.arr)
    if ctx[2] is not None:
        return _get(ctx[2], ctx[1])
    return ctx[0], ctx[1]


def _walk_object(ctx: list[Any], s: str, i: int, seg: _ObjSeg) -> tuple[int, bool]:
    """gjson's parseObject: find ``seg.part`` among the keys of the object open before i."""
    more = seg.more
    if more is None and seg.pipe is not None:
        ctx[2] = seg.pipe
    part = seg.part
    match = seg.match
    n = len(s)
    get_kind = _VALUE_KIND.get
    while i < n:
        if s[i] != '"':
            if s[i] == "," and i + 1 < n and s[i + 1] == '"':
                i += 1
            else:
                m = _KEY_OR_CLOSE.search(s, i)
                if m is None:
                    return n, False
                i = m.start()
                if s[i] == "}":
                    return i + 1, False
        # key
        j = s.find('"', i + 1)
        if j < 0:
            return n, False
        if s.find("\\", i + 1, j) >= 0:
            e = _string_end(s, i + 1)
            if e < 0:
                return n, False
            key = _unescape(s[i + 1 : e - 1])
            j = e - 1
        else:
            key = s[i + 1 : j]
        i = j + 1
        pmatch = match(key) if match is not None else key == part
        # value: gjson skips anything until a value starts
        while i < n:
            k = get_kind(s[i], 0)
            if k:
                break
            i += 1
        else:
            return n, False
        hit = pmatch and more is None
        if k == _K_STR:
            e = _string_end(s, i + 1)
            if e < 0:
                return n, False
            if hit:
                ctx[0] = STRING
                ctx[1] = s[i:e]
                return e, True
            i = e
        elif k == _K_OBJ or k == _K_ARR:
            if pmatch and more is not None:
                if k == _K_OBJ:
                    i, found = _walk_object(ctx, s, i + 1, more.obj)
                else:
                    i, found = _walk_array(ctx, s, i + 1, more.arr)
                if found:
                    return i, True
            else:
                e = _squash_end(s, i)
                if hit:
                    ctx[0] = JSON
                    ctx[1] = s[i:e]
                    return e, True
                i = e
        else:
            c = s[i]
            if k == _K_NUM or (k == _K_N and i + 1 < n and s[i + 1] != "u"):
                e = _number_end(s, i)
                t = NUMBER
            else:
                e = _literal_end(s, i)
                t = TRUE if c == "t" else FALSE if c == "f" else NULL
            if hit:
                ctx[0] = t
                ctx[1] = s[i:e]
                return e, True
            i = e
    return i, False


def _walk_array(ctx: list[Any], s: str, i: int, seg: _ArrSeg) -> tuple[int, bool]:
    """gjson's parseArray: index, count, ``#.`` map or query over the array open before i."""
    more = seg.more
    if more is None and seg.pipe is not None:
        ctx[2] = seg.pipe
    q = seg.query
    index = seg.index
    alog: list[int] | None = [] if seg.alog else None
    multires: list[str] | None = [] if q is not None and q.all else None
    n = len(s)
    get_kind = _ELEMENT_KIND.get
    h = 0
    pmatch = hit = False
    while i <= n:
        if index >= 0:
            pmatch = index == h
            hit = pmatch and more is None
        h += 1
        if alog is not None:
            alog.append(i)
        while i < n:
            k = get_kind(s[i], 0)
            if k:
                break
            i += 1
        else:
            k = _K_END  # the end of the text closes the array
        if k == _K_END:
            if seg.count:
                if alog is not None:
                    return i + 1, _map_elements(ctx, s, alog, seg)
                ctx[0] = NUMBER
                ctx[1] = str(h - 1)
                return i + 1, True
            if multires is not None and ctx[0] == NULL and ctx[1] == "":
                ctx[0] = JSON
                ctx[1] = "[" + ",".join(multires) + "]"
            return i + 1, False
        if k == _K_STR:
            e = _string_end(s, i + 1)
            if e < 0:
                return n, False
            t = STRING
        elif k == _K_OBJ or k == _K_ARR:
            if pmatch and more is not None:
                if k == _K_OBJ:
                    i, found = _walk_object(ctx, s, i + 1, more.obj)
                else:
                    i, found = _walk_array(ctx, s, i + 1, more.arr)
                if found:
                    return i, True
                continue
            e = _squash_end(s, i)
            t = JSON
        else:
            c = s[i]
            if k == _K_NUM or (k == _K_N and i + 1 < n and s[i + 1] != "u"):
                e = _number_end(s, i)
                t = NUMBER
            else:
                e = _literal_end(s, i)
                t = TRUE if c == "t" else FALSE if c == "f" else NULL
        if q is not None:
            if _query_element(ctx, q, t, s[i:e], multires):
                return e, True
        elif hit:
            ctx[0] = t
            ctx[1] = s[i:e]
            return e, True
        i = e
    return i, False


def _map_elements(ctx: list[Any], s: str, starts: list[int], seg: _ArrSeg) -> bool:
    """``#.path``: apply the path to every element and collect what exists."""
    if seg.alog_pipe is not None:
        ctx[2] = seg.alog_pipe
    sub = seg.alog_get
    assert sub is not None
    out: list[str] = []
    n = len(s)
    for idx in starts:
        while idx < n and s[idx] in " \t\r\n":
            idx += 1
        if idx < n and s[idx] != "]":
            _e, t, raw = _parse_any(s, idx)
            if t:
                _rt, rraw = _get(sub, raw)
                if rraw:
                    out.append(rraw)
    ctx[0] = JSON
    ctx[1] = "[" + ",".join(out) + "]"
    return True


def _query_element(ctx: list[Any], q: _Query, t: str, raw: str, multires: list[str] | None) -> bool:
    """One element against ``#(...)``; True when a first-match query is done."""
    if t == JSON:
        assert q.node is not None
        rt, rraw = _get(q.node, raw)
    elif q.path:
        return False
    else:
        rt, rraw = t, raw
    if not _query_matches(q, rt, rraw):
        return False
    if q.more_get is not None:
        if q.more_pipe is not None:
            ctx[2] = q.more_pipe
        rt, rraw = _get(q.more_get, raw)
    else:
        rt, rraw = t, raw
    if multires is None:
        ctx[0] = rt
        ctx[1] = rraw
        return True
    if rraw:
        multires.append(rraw)
    return False


def _query_matches(q: _Query, t: str, raw: str) -> bool:
    """gjson's queryMatches: compare by the selected value's type."""
    rpv = q.value
    if q.tilde:
        if q.tilde == "?":
            return False
        tilde = q.tilde
        if tilde == "*":
            ish = raw != "" or t != NULL
        elif tilde == "null":
            ish = t == NULL
        elif tilde == "true":
            ish = (
                t == TRUE
                or (t == NUMBER and _go_float(raw) != 0)
                or (t == STRING and _string_body(raw).lower() in ("1", "t", "true"))
            )
        else:
            ish = (
                t == NULL
                or t == FALSE
                or (t == NUMBER and _go_float(raw) == 0)
                or (t == STRING and _string_body(raw).lower() in ("0", "f", "false"))
            )
        rpv = "true"
        t = TRUE if ish else FALSE
        raw = ""
    elif t == NULL and raw == "":
        return False
    op = q.op
    if not op:
        return True
    if t == STRING:
        sv = _string_body(raw)
        if op == "=":
            return sv == rpv
        if op == "!=":
            return sv != rpv
        if op == "<":
            return sv < rpv
        if op == "<=":
            return sv <= rpv
        if op == ">":
            return sv > rpv
        if op == ">=":
            return sv >= rpv
        if op == "%":
            assert q.glob is not None
            return q.glob(sv)
        if op == "!%":
            assert q.glob is not None
            return not q.glob(sv)
        return False
    if t == NUMBER:
        num = _go_float(raw)
        if op == "=":
            return num == q.num
        if op == "!=":
            return num != q.num
        if op == "<":
            return num < q.num
        if op == "<=":
            return num <= q.num
        if op == ">":
            return num > q.num
        if op == ">=":
            return num >= q.num
        return False
    if t == TRUE:
        return (
            (op == "=" and rpv == "true")
            or (op == "!=" and rpv != "true")
            or (op == ">" and rpv == "false")
            or op == ">="
        )
    if t == FALSE:
        return (
            (op == "=" and rpv == "false")
            or (op == "!=" and rpv != "false")
            or (op == "<" and rpv == "true")
            or op == "<="
        )
    return False


# --------------------------------------------------------------------------- public API


def _text(doc: str | bytes) -> str:
    """Bytes are decoded losslessly so invalid UTF-8 scans as gjson's bytes would."""
    if isinstance(doc, str):
        return doc
    return bytes(doc).decode("utf-8", "surrogateescape")


class Path:
    """A compiled GJSON path: parse once at graph load, evaluate per request."""

    __slots__ = ("_node", "source")

    def __init__(self, source: str, node: _GetNode) -> None:
        self.source = source
        self._node = node

    def get(self, doc: str | bytes) -> Result:
        """Select from ``doc`` exactly as gjson.Get would."""
        t, raw = _get(self._node, doc if isinstance(doc, str) else _text(doc))
        if t == NULL and raw == "":
            return _EMPTY_RESULT
        return _make_result(t, raw)

    def exists(self, doc: str | bytes) -> bool:
        """gjson.Get(doc, path).Exists(), without building a Result."""
        t, raw = _get(self._node, doc if isinstance(doc, str) else _text(doc))
        return raw != "" or t != NULL

    def __repr__(self) -> str:
        return f"Path({self.source!r})"


def compile_path(path: str) -> Path:
    """Parse a GJSON path once; raises GJSONSyntaxError when it is malformed."""
    _check_syntax(path)
    try:
        node = _Compiler().get_node(path)
    except RecursionError:
        raise GJSONSyntaxError(f"GJSON path nests too deeply to compile: {path[:80]!r}") from None
    return Path(path, node)


@functools.lru_cache(maxsize=1024)
def _cached(path: str) -> Path:
    """Compiled paths for get(), keyed by path text."""
    return compile_path(path)


def get(doc: str | bytes, path: str) -> Result:
    """gjson.Get for one-off use; compiled paths are cached.

    An empty path selects nothing (gjson would look for an empty key), so it returns
    the non-existent result rather than raising like compile_path.
    """
    if path == "":
        return _EMPTY_RESULT
    return _cached(path).get(doc)
