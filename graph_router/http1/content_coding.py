"""Undoing ``Content-Encoding`` for bodies the router must read, with bounded work.

A body the router only relays keeps its coding and its header; a body it must look
into (conditions, templates, merges, the next step's request) is decoded here first.
Decoding never holds more than ``limit`` decoded bytes plus one step: a small gzip
bomb fails with :class:`DecodedTooLarge` instead of inflating to gigabytes.

RFC 9110 §8.4: the codings are listed in the order they were applied, so they are
undone last first; ``identity`` means nothing was applied. §8.4.1.3: ``gzip`` (and
``x-gzip``) is RFC 1952, whose members may follow one another (all are decoded);
§8.4.1.2: ``deflate`` is the zlib format (RFC 1950), though some servers send a raw
deflate stream, which is accepted too. Any other coding (``br``, ``zstd``,
``compress``...) is :class:`UnsupportedCoding`, naming it.
"""

from __future__ import annotations

import zlib

__all__ = ["CodingError", "CorruptBody", "DecodedTooLarge", "UnsupportedCoding", "codings", "decode"]

# Decoded bytes produced per decompress call: the bound on overshoot past the limit.
STEP = 256 * 1024


class CodingError(Exception):
    """A body that cannot be decoded; the message says why, naming the coding."""


class UnsupportedCoding(CodingError):
    """A content coding the router cannot undo."""


class CorruptBody(CodingError):
    """Bytes that are not what their coding says."""


class DecodedTooLarge(CodingError):
    """The decoded body would be over the limit."""


def codings(value: str | None) -> list[str]:
    """The codings a Content-Encoding value lists, lower-cased, ``identity`` left out."""
    if not value:
        return []
    found = []
    for token in value.split(","):
        coding = token.strip().lower()
        if coding and coding != "identity":
            found.append(coding)
    return found


def decode(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` with every coding in ``encoding`` undone, at most ``limit`` bytes at any step."""
    listed = codings(encoding)
    if not listed:
        return body
    for coding in reversed(listed):  # applied in order, so undone last first
        if coding != "gzip" and coding != "x-gzip" and coding != "deflate":
            raise UnsupportedCoding(f"the answer's Content-Encoding {coding!r} cannot be decoded by the router")
    for coding in reversed(listed):
        if not body:
            break  # nothing was encoded (an empty body has no gzip header to read)
        if coding == "deflate":
            # zlib-wrapped (RFC 1950) when the two-byte header checks out, else raw deflate.
            wbits = 15 if len(body) > 1 and body[0] & 0x0F == 8 and (body[0] * 256 + body[1]) % 31 == 0 else -15
            body = _inflate(body, wbits, limit, coding, False)
        else:
            body = _inflate(body, 47, limit, coding, True)  # 47: gzip, or a zlib stream mislabelled
    return body


def _inflate(data: bytes, wbits: int, limit: int, coding: str, members: bool) -> bytes:
    """Inflate ``data`` in steps of at most STEP output bytes; ``members``: gzip members may follow."""
    out: list[bytes] = []
    size = 0
    pending = data
    inflater = zlib.decompressobj(wbits)
    while True:
        try:
            piece = inflater.decompress(pending, STEP)
        except zlib.error as exc:
            raise CorruptBody(f"the answer's {coding} body is corrupt ({exc})") from None
        size += len(piece)
        if size > limit:
            raise DecodedTooLarge(f"the answer's {coding} body decodes to over the {limit}-byte limit")
        if piece:
            out.append(piece)
        pending = inflater.unconsumed_tail
        if inflater.eof:
            rest = inflater.unused_data
            if not rest:
                break
            if not members or rest[:2] != b"\x1f\x8b":
                raise CorruptBody(f"the answer's {coding} body has bytes after its end")
            inflater = zlib.decompressobj(wbits)  # the next gzip member (RFC 1952 §2.2)
            pending = rest
        elif not pending and len(piece) < STEP:
            # Every byte was read and the stream did not end: it was cut short.
            raise CorruptBody(f"the answer's {coding} body is truncated")
    return out[0] if len(out) == 1 else b"".join(out)
