# cython: annotation_typing=False, boundscheck=False, wraparound=False
"""Is a body JSON? The syntax check of Go's ``json.Valid``, without building any value.

KServe's router labels a graph's answer ``application/json`` exactly when
``json.Valid`` accepts it. Parsing the answer to find out (``orjson.loads``) builds
every dict, list and number only to throw them away, which was one of the larger
costs of a small request. This is the same decision made by one pass over the bytes:

- RFC 8259's grammar: objects, arrays, strings, numbers, ``true``, ``false``,
  ``null``, separated by space, tab, CR and LF;
- inside strings, bytes below 0x20 are refused and escapes must be one of
  ``\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX``; other bytes are not checked as UTF-8 (Go's
  scanner does not either, so invalid UTF-8 or a lone surrogate escape is valid);
- at most 10,000 levels of nesting, Go's limit.

``tests/data/json_valid_vectors.jsonl`` holds answers produced by Go's ``json.Valid``
itself; ``tests/test_jsonsyntax.py`` checks every one.
"""

from __future__ import annotations

MAX_DEPTH = 10_000
_DEPTH_LIMIT = MAX_DEPTH  # a C integer when compiled

# Parser states: what may come next.
_VALUE = 0  # a value
_FIRST_ITEM = 1  # after "[": a value or "]"
_FIRST_KEY = 2  # after "{": a key or "}"
_KEY = 3  # after "," in an object: a key
_COLON = 4  # after a key: ":"
_AFTER = 5  # after a value: ",", a closing bracket, or the end


def valid(data: bytes) -> bool:
    """True when ``data`` is one JSON value, surrounded by whitespace at most."""
    return _walk(data, False) != _INVALID


def _string_end(data: bytes, i: int, n: int) -> int:
    """Past the closing quote of the string whose content starts at ``i``; -1 if invalid."""
    while i < n:
        c = data[i]
        if c == 34:  # "
            return i + 1
        if c < 32:
            return -1  # a control character must be escaped
        if c == 92:  # backslash
            if i + 1 >= n:
                return -1
            e = data[i + 1]
            if e == 117:  # \uXXXX
                if i + 5 >= n:
                    return -1
                for k in range(i + 2, i + 6):
                    h = data[k]
                    if not (48 <= h <= 57 or 65 <= h <= 70 or 97 <= h <= 102):
                        return -1
                i += 6
            elif e == 34 or e == 92 or e == 47 or e == 98 or e == 102 or e == 110 or e == 114 or e == 116:
                i += 2  # \" \\ \/ \b \f \n \r \t
            else:
                return -1
        else:
            i += 1
    return -1  # no closing quote


def _number_end(data: bytes, i: int, n: int) -> int:
    """Past the number starting at ``i``: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; -1 if none."""
    if data[i] == 45:  # -
        i += 1
        if i >= n:
            return -1
    c = data[i]
    if c == 48:  # a leading 0 stands alone
        i += 1
    elif 49 <= c <= 57:
        i += 1
        while i < n and 48 <= data[i] <= 57:
            i += 1
    else:
        return -1
    if i < n and data[i] == 46:  # .
        i += 1
        start = i
        while i < n and 48 <= data[i] <= 57:
            i += 1
        if i == start:
            return -1
    if i < n and (data[i] == 101 or data[i] == 69):  # e E
        i += 1
        if i < n and (data[i] == 43 or data[i] == 45):  # + -
            i += 1
        start = i
        while i < n and 48 <= data[i] <= 57:
            i += 1
        if i == start:
            return -1
    return i


# stream_flag's answers (the underscored copies are C integers when compiled).
STREAM_TRUE = _TRUE = 1  # a JSON object whose (last) top-level "stream" member is true
STREAM_NOT = _NOT = 0  # valid JSON, but no such member
STREAM_INVALID = _INVALID = -1  # not JSON
STREAM_UNSURE = _UNSURE = 2  # valid JSON a full parser might still refuse (deep, huge or exponent numbers)


def stream_flag(data: bytes) -> int:
    """Whether ``data`` is a JSON object that asks to stream, decided in one pass.

    Why: an OpenAI step's request is checked before every streamed call
    (:func:`graph_router.llm.sse.ask_for_usage`), and building the whole document
    with ``orjson.loads`` to read one member cost several µs with cold caches.

    STREAM_TRUE: an object whose top-level ``stream`` is ``true`` (the last of repeated
    keys wins, as in orjson) and that has no top-level ``stream_options``. The answer
    agrees with ``orjson.loads`` wherever it is not STREAM_UNSURE, which this scan
    hands back rather than judge what orjson alone refuses or reads otherwise: a
    backslash escape (a key may spell ``stream`` with one; ``\\ud800`` is refused),
    a byte above 0x7F (orjson checks UTF-8), nesting past 64 levels (orjson stops at
    1024), a number with an exponent or over 15 characters (out of a double's range).
    """
    return _walk(data, True)


def _walk(data: bytes, as_orjson: bool) -> int:
    """The one scan behind ``valid`` and ``stream_flag``: _INVALID, or what ``data`` holds.

    ``as_orjson``: answer for ``stream_flag`` (track the top-level ``stream`` and
    ``stream_options`` members; hand back _UNSURE where orjson alone might refuse).
    Otherwise Go's ``json.Valid`` rules: any string bytes, 10,000 levels.
    """
    n = len(data)
    p = data  # compiled: a pointer to the bytes, indexed in C
    i = 0
    depth = 0
    state = _VALUE
    # Which open containers are objects: bit k of ``shallow`` for the first 64 levels
    # (no allocation for any ordinary document), one byte each in ``deep`` beyond.
    shallow = 0
    deep: bytearray | None = None
    is_object = False
    flag = _NOT
    key_is_stream = False
    member = False  # the value being read is that of a top-level "stream"
    stream_options = False
    while True:
        while i < n:
            c = p[i]
            if c != 32 and c != 10 and c != 13 and c != 9:  # space, LF, CR, tab
                break
            i += 1
        if i >= n:
            if state != _AFTER or depth != 0:
                return _INVALID
            return flag if is_object and not stream_options else _NOT
        c = p[i]
        if state == _AFTER:
            if depth == 0:
                return _INVALID  # something after the value
            if depth <= 64:
                in_object = (shallow >> (depth - 1)) & 1
            else:
                assert deep is not None
                in_object = deep[depth - 65]
            if c == 44:  # ,
                state = _KEY if in_object else _VALUE
            elif (c == 125 and in_object) or (c == 93 and not in_object):  # } ]
                depth -= 1
            else:
                return _INVALID
            i += 1
        elif state == _COLON:
            if c != 58:  # :
                return _INVALID
            state = _VALUE
            member = key_is_stream
            i += 1
        elif state == _FIRST_KEY or state == _KEY:
            if c == 125 and state == _FIRST_KEY:  # {}
                depth -= 1
                state = _AFTER
                i += 1
            elif c == 34:  # "
                start = i + 1
                i = _plain_string_end(p, start, n) if as_orjson else _string_end(p, start, n)
                if i < 0:
                    return _INVALID if i == -1 else _UNSURE
                if as_orjson:  # every key, at any depth, decides whether its value is "the" stream member
                    key_is_stream = depth == 1 and i - start == 7 and data.startswith(b'stream"', start)
                    if depth == 1 and i - start == 15 and data.startswith(b'stream_options"', start):
                        stream_options = True
                state = _COLON
            else:
                return _INVALID
        else:  # a value is wanted
            if member:
                member = False
                flag = _TRUE if c == 116 else _NOT  # "t": true, or not JSON (refused below)
            if c == 93 and state == _FIRST_ITEM:  # []
                depth -= 1
                state = _AFTER
                i += 1
            elif c == 123 or c == 91:  # { [
                if depth == 0:
                    is_object = c == 123
                if depth == _DEPTH_LIMIT:
                    return _INVALID
                if depth < 64:
                    bit = 1
                    bit <<= depth  # a 64-bit shift when compiled
                    if c == 123:
                        shallow |= bit
                    else:
                        shallow &= ~bit
                elif as_orjson:
                    return _UNSURE  # orjson refuses past 1024 levels: not judged here
                else:
                    if deep is None:
                        deep = bytearray()
                    k = depth - 64
                    if k == len(deep):
                        deep.append(c == 123)
                    else:
                        deep[k] = c == 123
                depth += 1
                state = _FIRST_KEY if c == 123 else _FIRST_ITEM
                i += 1
            elif c == 34:  # "
                i = _plain_string_end(p, i + 1, n) if as_orjson else _string_end(p, i + 1, n)
                if i < 0:
                    return _INVALID if i == -1 else _UNSURE
                state = _AFTER
            elif c == 45 or 48 <= c <= 57:  # - 0-9
                start = i
                i = _number_end(p, i, n)
                if i < 0:
                    return _INVALID
                if as_orjson:
                    if i - start > 15:
                        return _UNSURE  # may be out of a double's range for orjson
                    for k in range(start, i):
                        if p[k] == 101 or p[k] == 69:  # e E: 1e400 is refused by orjson
                            return _UNSURE
                state = _AFTER
            elif c == 116 and data.startswith(b"true", i):
                i += 4
                state = _AFTER
            elif c == 102 and data.startswith(b"false", i):
                i += 5
                state = _AFTER
            elif c == 110 and data.startswith(b"null", i):
                i += 4
                state = _AFTER
            else:
                return _INVALID


def _plain_string_end(data: bytes, i: int, n: int) -> int:
    """Past the closing quote of the string whose content starts at ``i``; -1 for a control
    byte or no closing quote (not JSON), -2 for an escape or a non-ASCII byte (unsure)."""
    while i < n:
        c = data[i]
        if c == 34:  # "
            return i + 1
        if c < 32:
            return -1  # a control character must be escaped
        if c == 92 or c > 127:
            return -2
        i += 1
    return -1
