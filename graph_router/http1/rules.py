"""Framing rules shared by the request and the response side (RFC 9110, RFC 9112)."""

from __future__ import annotations

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


def connection_options(value: str) -> list[str]:
    """The lower-cased field names listed in one ``Connection`` header value (RFC 9110 §7.6.1)."""
    return [token.strip().lower() for token in value.split(",") if token.strip()]


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
