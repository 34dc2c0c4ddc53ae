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
