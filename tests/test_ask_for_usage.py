"""ask_for_usage's one-pass decision against the full parse it replaces.

The reference is the function as it was, orjson deciding (a JSON object whose ``stream`` is
``true`` and that has no ``stream_options``; the member appended before the closing
brace). Every body, hand-picked or mutated at random, must get the same bytes back
from both, so the scan can never send a request the parse would have left alone, or
the reverse.
"""

from __future__ import annotations

import random

import orjson
import pytest

from graph_router import jsonsyntax
from graph_router.llm.sse import ask_for_usage

MEMBER = b',"stream_options":{"include_usage":true}}'


def reference(body: bytes) -> bytes | None:
    """ask_for_usage before the scan: the same byte test first, then orjson decides."""
    if b'"stream"' not in body:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("stream") is not True or "stream_options" in doc:
        return None
    end = body.rstrip()
    assert end.endswith(b"}")
    return end[:-1] + MEMBER


CASES = [
    b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}',
    b'{"stream":true}',
    b' \r\n\t{ "stream" : true } \n',
    b'{"stream":false}',
    b'{"stream":"true"}',
    b'{"stream":1}',
    b'{"stream":null}',
    b'{"stream":true,"stream":false}',
    b'{"stream":false,"stream":true}',
    b'{"stream":true,"stream_options":{"include_usage":false}}',
    b'{"stream":true,"stream_options":null}',
    b'{"stream_options":{},"stream":true}',
    b'{"a":{"stream_options":{}},"stream":true}',
    b'{"stream":true,"a":"stream_options"}',
    b'{"stream":{"k":true}}',  # a nested true is not the top-level member
    b'{"stream":[true],"x":{"y":true}}',
    b'{"a":{"stream":true}}',
    b'{"a":{"stream":true},"stream":false}',
    b'{"a":[{"stream":true}]}',
    b'[{"stream":true}]',
    b'"stream"',
    b'{"streams":true}',
    b'{"strea":true,"x":"stream"}',
    b'{"x":"\\"stream\\":true"}',
    b'{"stre\\u0061m":true}',
    b'{"stream":true,"x":"caf\xc3\xa9"}',
    b'{"stream":true,"x":"\xff"}',
    b'{"stream":true,"x":"\\ud800"}',
    b'{"stream":true}{}',
    b'{"stream":true}x',
    b'{"stream":true,}',
    b'{"stream":tru}',
    b'{"stream":true',
    b'{"stream" true}',
    b'{"stream":true,"n":1e400}',
    b'{"stream":true,"n":1e3}',
    b'{"stream":true,"n":123456789012345678901234567890}',
    b'{"stream":true,"n":-0.5}',
    b'{"stream":true,"n":1' + b"0" * 400 + b"}",  # no exponent, still past a double's range
    b'{"stream":true,"n":0.' + b"0" * 400 + b"1}",
    b'{"stream":true,"n":01}',
    b'{"stream":true,"n":[' + b"[" * 70 + b"]" * 70 + b"]}",
    b'{"stream":true,"n":' + b"[" * 1100 + b"]" * 1100 + b"}",
    b'{"stream":true,"x":"\x01"}',
    b'\xef\xbb\xbf{"stream":true}',
    b'{"stream":true}\x0b',
    b"",
    b"{}",
]


@pytest.mark.parametrize("body", CASES)
def test_cases(body: bytes) -> None:
    assert ask_for_usage(body) == reference(body)


def test_the_common_request_is_decided_by_the_scan() -> None:
    body = CASES[0]
    assert jsonsyntax.stream_flag(body) == jsonsyntax.STREAM_TRUE
    assert ask_for_usage(body) == body[:-1] + MEMBER
    assert jsonsyntax.stream_flag(b'{"stream":true,"n":1e3}') == jsonsyntax.STREAM_UNSURE
    assert jsonsyntax.stream_flag(b'{"stream":tru}') == jsonsyntax.STREAM_INVALID
    assert jsonsyntax.stream_flag(b'[{"stream":true}]') == jsonsyntax.STREAM_NOT
    assert jsonsyntax.stream_flag(b'{"stream":true,"stream_options":{}}') == jsonsyntax.STREAM_NOT
    assert jsonsyntax.stream_flag(b'{"stream":true,"x":"\\n"}') == jsonsyntax.STREAM_UNSURE
    assert jsonsyntax.stream_flag(b'{"stream":true,"x":"\xc3\xa9"}') == jsonsyntax.STREAM_UNSURE


ALPHABET = b'{}[]:," \nstreamtrufalsn0123456789.-e\\x'


def test_mutations_agree() -> None:
    rng = random.Random(15)
    seeds = [c for c in CASES if c] + [
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"temperature":0.5}',
        b'{"a":{"b":[1,2,{"stream":false}]},"stream":true,"c":null}',
    ]
    checked = 0
    for _ in range(20000):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            kind = rng.randrange(3)
            at = rng.randrange(len(body) + 1)
            if kind == 0:
                body[at:at] = bytes([rng.choice(ALPHABET)])
            elif kind == 1 and body:
                del body[min(at, len(body) - 1)]
            elif body:
                body[min(at, len(body) - 1)] = rng.choice(ALPHABET)
        data = bytes(body)
        assert ask_for_usage(data) == reference(data), data
        checked += reference(data) is not None
    assert checked > 500  # the mutations do keep many bodies that ask to stream
