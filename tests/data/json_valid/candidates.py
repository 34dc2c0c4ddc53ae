"""Candidate bodies for tests/data/json_valid_vectors.jsonl, one base64 line each.

Edge cases by hand, then generated documents and mutations of them (fixed seed).
Regenerate the vectors with Go (stdlib only, no network):

    python3 tests/data/json_valid/candidates.py > /tmp/cands.txt
    GO111MODULE=off go run tests/data/json_valid/valid.go < /tmp/cands.txt > tests/data/json_valid_vectors.jsonl
"""

from __future__ import annotations

import base64
import json
import random
from typing import Any

rng = random.Random(20261201)
ALPHABET = b'{}[]:,"\\ \t\r\n0123456789.-+eEtrufalsn/bfu\x00\x1f\x7f\xc3\xa9\xff"aZ'
DEEP = 10_000  # Go's nesting limit

EDGES = [
    b"", b" ", b"1", b" 1 ", b"01", b"-", b"-0", b"-01", b"1.", b"1.0", b".5", b"1e", b"1e+", b"1E-2", b"1e400",
    b"-1e-400", b"tru", b"true", b"truex", b"null", b"nul", b"false", b"[", b"]", b"[]", b"{}", b"[,]", b"[1,]",
    b"{,}", b'{"a"}', b'{"a":}', b'{"a":1,}', b'{"a":1 "b":2}', b"{1:2}", b'"', b'""', b'"\\"', b'"\\u"',
    b'"\\u12"', b'"\\u123g"', b'"\\u1234"', b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\x"', b'"\\/"', b'"\x00"',
    b'"\x1f"', b'"\x7f"', b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"', b"\xef\xbb\xbf{}", b"{}\x00", b"1 2", b"[1 2]",
    b"\t\r\n[\t\r\n]\t\r\n", b"\x0b1", b"\x0c1", b"+1", b"0x10", b"NaN", b"Infinity", b"-Infinity", b"[1]]",
    b"[[1]", b'{"a":[1,{"b":null}]}', b"[" * DEEP + b"]" * DEEP, b"[" * (DEEP + 1) + b"]" * (DEEP + 1),
    b'{"a":' * DEEP + b"1" + b"}" * DEEP, b'{"a":' * (DEEP + 1) + b"1" + b"}" * (DEEP + 1), b"[" * DEEP,
    b"1" * 5000, b"00", b'"' + "é".encode() * 100 + b'"', b"[1e1,1E1,1e-1,1e+1,-0.0e0]", b"[-]", b"[-a]",
    b"[1.e1]", b"[1e.1]",
]


def value(depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice([0, -1, 1.5, -0.0, 1e300, 12345678901234567890, 3.25e-7])
    if kind == 1:
        chars = ["a", "é", "\u2028", '"', "\\", "\n", "\t", "\x01", "😀", "/", " "]
        return "".join(rng.choice(chars) for _ in range(rng.randrange(6)))
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.randrange(-10**6, 10**6)
    if kind == 4:
        return rng.random() * 10 ** rng.randrange(-8, 8)
    if kind in (5, 6):
        return [value(depth + 1) for _ in range(rng.randrange(4))]
    return {f"k{i}": value(depth + 1) for i in range(rng.randrange(4))}


def dump(v: Any) -> bytes:
    ensure_ascii = rng.random() < 0.5
    separators = rng.choice([(",", ":"), (", ", ": ")])
    return json.dumps(v, ensure_ascii=ensure_ascii, separators=separators,
                      indent=rng.choice([None, None, 2])).encode()


def mutate(body: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(3)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            del b[min(pos, len(b) - 1)]
        elif op == 1:
            b.insert(pos, rng.choice(ALPHABET))
        elif b:
            b[min(pos, len(b) - 1)] = rng.choice(ALPHABET)
    return bytes(b)


def main() -> None:
    cases = EDGES + [dump(value()) for _ in range(1500)] + [mutate(dump(value())) for _ in range(2500)]
    for case in dict.fromkeys(cases):
        print(base64.b64encode(case).decode())


if __name__ == "__main__":
    main()
