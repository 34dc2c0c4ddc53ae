"""Which incoming headers reach the steps: KServe's ``PROPAGATE_HEADERS`` rules.

KServe matches each comma-separated regular expression (unanchored, case-sensitive,
no trimming) against Go's *canonical* header name, and forwards every value of every
matching header. Unset means nothing is forwarded; set but empty is one empty pattern,
which matches everything. An invalid pattern is logged and skipped.

Hop-by-hop and framing headers are never forwarded, whatever the patterns say (a
deliberate difference from KServe: forwarding ``Connection`` or ``Content-Length``
breaks the step call), and neither is any header the request's ``Connection`` header
names (RFC 9110 §7.6.1): a client may mark any field as meant for this hop only.

The W3C trace context (``traceparent``, ``tracestate``) always reaches the steps, as
OpenTelemetry's propagation does without an SDK: with tracing off the caller's context
passes through unchanged; with tracing on each step call carries its own span instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

from multidict import CIMultiDict

from .http1.rules import HOP_BY_HOP, connection_options

logger = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

NEVER_FORWARDED = HOP_BY_HOP | {"host", "content-length", "expect"}
TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})


_NONE: CIMultiDict[str] = CIMultiDict()


def canonical_name(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``x-request-id`` becomes ``X-Request-Id``.

    Names with characters outside the HTTP token set are returned unchanged, as Go does.
    """
    if not _TOKEN.match(name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class HeaderPropagator:
    """Compiled ``PROPAGATE_HEADERS``: decides once per distinct header name, then caches."""

    _CACHE_LIMIT = 4096

    def __init__(self, patterns: str | None) -> None:
        self._patterns: tuple[re.Pattern[str], ...] = tuple(self._compile(patterns))
        self._decisions: dict[str, bool] = {}

    @staticmethod
    def _compile(patterns: str | None) -> Iterable[re.Pattern[str]]:
        if patterns is None:
            return
        for raw in patterns.split(","):
            try:
                yield re.compile(raw)
            except re.error as exc:
                logger.error("PROPAGATE_HEADERS pattern %r is invalid and is skipped: %s", raw, exc)

    @property
    def enabled(self) -> bool:
        return bool(self._patterns)

    def wanted(self, name: str) -> bool:
        """Whether a header of this (raw, as received) name is forwarded to steps."""
        decision = self._decisions.get(name)
        if decision is None:
            lname = name.lower()
            if lname in NEVER_FORWARDED:
                decision = False
            elif lname in TRACE_CONTEXT:
                decision = True
            else:
                canon = canonical_name(name)
                decision = any(p.search(canon) for p in self._patterns)
            if len(self._decisions) >= self._CACHE_LIMIT:
                self._decisions.clear()
            self._decisions[name] = decision
        return decision

    def select(self, incoming: Mapping[str, str] | Iterable[tuple[str, str]]) -> CIMultiDict[str]:
        """The headers to send to a step: every value of every wanted header, in order.

        Callers must not modify the result: with no patterns it is one shared empty dict.
        """
        if not self._patterns:
            return _trace_context(incoming)
        out: CIMultiDict[str] = CIMultiDict()
        items = incoming if type(incoming) is list else list(
            incoming.items() if isinstance(incoming, Mapping) else incoming)
        named: list[str] | None = None
        for name, value in items:
            if len(name) == 10 and name.lower() == "connection":
                named = (named or []) + connection_options(value)
        for name, value in items:
            if self.wanted(name) and (named is None or name.lower() not in named):
                out.add(name, value)
        return out


def _trace_context(incoming: Mapping[str, str] | Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """Only the W3C trace context headers (the common case: no PROPAGATE_HEADERS)."""
    out: CIMultiDict[str] | None = None
    # A request's headers are a list: tested first, because isinstance() against the
    # Mapping ABC runs interpreted code (abc.__instancecheck__) before the first byte.
    pairs = incoming if type(incoming) is list else incoming.items() if isinstance(incoming, Mapping) else incoming
    for name, value in pairs:
        n = len(name)
        if (n == 11 or n == 10) and name.lower() in TRACE_CONTEXT:
            if out is None:
                out = CIMultiDict()
            out.add(name, value)
    return _NONE if out is None else out
