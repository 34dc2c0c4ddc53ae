# cython: annotation_typing=False
"""Framing rules shared by the request and the response side (RFC 9110, RFC 9112)."""

from __future__ import annotations

import re

# Hop-by-hop fields (RFC 9110 §7.6.1): meaningful for one connection only, so never
# forwarded, plus the framing fields a proxy recomputes for its own message.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def body_allowed(status: int) -> bool:
    """Whether an answer with this status may carry content (RFC 9110 §6.4.1).

    1xx, 204 and 304 answers never do, whatever their headers say.
    """
    return not (status < 200 or status == 204 or status == 304)


# Host = uri-host [ ":" port ] (RFC 9112 §3.2, RFC 3986 §3.2.2): a reg-name of unreserved,
# pct-encoded and sub-delims characters, an IPv4 address, or a bracketed IP literal. An
# empty value is allowed (a target without authority).
_HOST = re.compile(
    rb"(?:\[[0-9A-Fa-f:.vV]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?"
)


def valid_host(value: bytes) -> bool:
    """Whether a Host field value is well formed; a server answers 400 otherwise (RFC 9112 §3.2)."""
    return _HOST.fullmatch(value) is not None


def connection_options(value: str) -> list[str]:
    """The lower-cased field names listed in one ``Connection`` header value (RFC 9110 §7.6.1)."""
    return [token.strip().lower() for token in value.split(",") if token.strip()]


# Bytes allowed in a field name: tchar (RFC 9110 §5.6.2).
TOKEN = bytes(
    1 if chr(c).isascii() and (chr(c).isalnum() or chr(c) in "!#$%&'*+-.^_`|~") else 0 for c in range(256)
)


class FieldName:
    """Field names tested on raw bytes, without making objects: the one-pass reads' helper."""

    @staticmethod
    def equals(p: bytes, start: int, lowercase: bytes, size: int) -> bool:
        """Whether the ``size`` bytes of ``p`` at ``start`` are ``lowercase``, in any case.

        OR-ing 0x20 lowercases a letter; over printable ASCII only an uppercase letter
        becomes a lowercase one, and ``-`` stays itself: exact for names of letters and ``-``.
        """
        for k in range(size):
            if (p[start + k] | 0x20) != lowercase[k]:
                return False
        return True


class FieldLine:
    """One field line read in place by the one-pass reads: where its name and value lie.

    ``scan`` takes only the plain shape (RFC 9110 §5.1, §5.5): a token name, ``:`` with
    no space before it, optional whitespace, a value of printable ASCII and tabs, CRLF,
    and no obs-fold after it. Anything else makes the caller hand the message to llhttp.
    """

    def __init__(self) -> None:
        self.name_end = 0
        self.value_start = 0
        self.value_end = 0  # trailing whitespace excluded (RFC 9110 §5.5)

    def scan(self, p: bytes, i: int, n: int) -> int:
        """Read the field line starting at ``i`` of ``p[:n]``; the index after it, or -1."""
        token = TOKEN
        start = i
        while i < n and token[p[i]]:
            i += 1
        if i == start or i >= n or p[i] != 58:  # a name, then ":"
            return -1
        self.name_end = i
        i += 1
        while i < n and (p[i] == 32 or p[i] == 9):
            i += 1
        self.value_start = i
        while i < n and (p[i] == 9 or 32 <= p[i] <= 126):
            i += 1
        if i + 1 >= n or p[i] != 13 or p[i + 1] != 10:
            return -1  # a control byte, obs-text, a bare LF, or the head goes on past this read
        end = i
        while end > self.value_start and (p[end - 1] == 32 or p[end - 1] == 9):
            end -= 1
        self.value_end = end
        i += 2
        if i < n and (p[i] == 32 or p[i] == 9):
            return -1  # obs-fold (RFC 9112 §5.2)
        return i

    def number(self, p: bytes) -> int:
        """The value as a plain decimal of at most 15 digits (a Content-Length); -1 if it is not one."""
        start = self.value_start
        end = self.value_end
        if end == start or end - start > 15:
            return -1
        value = 0
        for k in range(start, end):
            if not 48 <= p[k] <= 57:
                return -1
            value = value * 10 + (p[k] - 48)
        return value


class HeadMeter:
    """Counts a message head's bytes while they arrive, so a limit is enforced at once.

    llhttp reports a header only when its line ends; a peer streaming one endless line
    would otherwise be buffered (and re-concatenated) without bound. The meter counts
    every byte fed while the head is incomplete. The read that began the message is
    not counted (part of it may belong to the previous message), so a head is cut off
    within ``limit`` plus one read: linear work, whatever the peer sends.
    """

    __slots__ = ("limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0

    def reset(self) -> None:
        self.seen = 0

    def add(self, n: int) -> bool:
        """Count ``n`` more head bytes; True when the head is now over the limit."""
        self.seen += n
        return self.seen > self.limit
