"""``X-Graph-Explain``: the path a request took, as compact JSON in a response header.

The executor records the path (nodes entered, conditions tested, Splitter draws,
steps run with status and milliseconds) when handed a list; this module only decides
whether a request asked for it and writes the header value.

Header values must be Latin-1 without line breaks, so the JSON is pure ASCII
(``ensure_ascii``: a step name in any script survives as ``\\uXXXX``). Clients and
proxies bound a header line or the whole header block (aiohttp 8 KiB a line, nginx's
proxy buffer one 4 KiB page for all headers), so a long path is cut at
``MAX_HEADER_CHARS`` and ends with ``{"truncated": N}``, N entries left out. Explain requests are rare, so this
uses the standard json module, which is slower but can escape to ASCII.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

REQUEST_HEADER = "x-graph-explain"
RESPONSE_HEADER = "X-Graph-Explain"
MAX_HEADER_CHARS = 3 * 1024
_YES = frozenset({"1", "true", "yes", "on"})


def wanted(value: str) -> bool:
    """Whether an ``X-Graph-Explain`` request header value asks for the path."""
    return value.strip().lower() in _YES


def header_value(entries: Sequence[dict[str, object]], limit: int = MAX_HEADER_CHARS) -> str:
    """The recorded path as one line of ASCII JSON, at most ``limit`` characters."""
    text = _dumps(entries)
    if len(text) <= limit:
        return text
    # Drop entries from the end until the rest plus the truncation marker fits.
    low, high = 0, len(entries)
    while low < high:  # the largest prefix that fits
        mid = (low + high + 1) // 2
        if len(_dumps([*entries[:mid], {"truncated": len(entries) - mid}])) <= limit:
            low = mid
        else:
            high = mid - 1
    return _dumps([*entries[:low], {"truncated": len(entries) - low}])


def _dumps(entries: Sequence[dict[str, object]]) -> str:
    return json.dumps(list(entries), ensure_ascii=True, separators=(",", ":"), default=str)
