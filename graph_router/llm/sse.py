"""Reading token usage and content timing out of OpenAI answers, plain and streamed.

Per streamed event the work is a few ``bytes.find`` calls: an event is a content
event when its ``"content"`` (chat) or ``"text"`` (completions) holds a non-empty
string, and only the one event whose ``"usage"`` is an object is parsed as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Any, Protocol

import orjson

from ..jsonsyntax import STREAM_TRUE, STREAM_UNSURE, stream_flag
from ..upstream import StepStream

MAX_TAIL = 1 << 20  # an unfinished event larger than this stops the scan (the bytes still flow)
MAX_PLAIN = 16 << 20  # a chunked plain answer is kept up to this for its usage


class Tally(Protocol):
    """Where a scanned answer's figures go (see :class:`graph_router.llm.step.StepTally`)."""

    def content(self, at: float) -> None: ...
    def usage(self, prompt: int, completion: int) -> None: ...
    def ended(self) -> None: ...


def _skip(event: bytes, i: int) -> int:
    """The index of the first byte at or after ``i`` that is neither a space nor a colon."""
    n = len(event)
    while i < n:
        c = event[i]
        if c != 32 and c != 58:  # integer tests: ``in b" :"`` cost a sequence search per byte
            break
        i += 1
    return i


def has_content(event: bytes) -> bool:
    """Whether a chunk event carries generated text (a non-empty ``content`` or ``text`` string)."""
    i = event.find(b'"content"')
    if i >= 0:
        i = _skip(event, i + 9)
    else:
        i = event.find(b'"text"')
        if i < 0:
            return False
        i = _skip(event, i + 6)
    return i + 1 < len(event) and event[i] == 34 and event[i + 1] != 34  # '"', then not an empty string


def _counts(usage: Any) -> tuple[int, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion


def event_usage(event: bytes) -> tuple[int, int] | None:
    """``(prompt, completion)`` when the event's ``usage`` is an object; None otherwise (no parse)."""
    i = event.find(b'"usage"')
    if i < 0:
        return None
    i = _skip(event, i + 7)
    if i >= len(event) or event[i] != 123:  # '{'; "usage": null on every other chunk
        return None
    start = event.find(b"{")
    try:
        doc = orjson.loads(event[start:])
    except orjson.JSONDecodeError:
        return None
    return _counts(doc.get("usage")) if isinstance(doc, dict) else None


def plain_usage(body: bytes) -> tuple[int, int] | None:
    """``(prompt, completion)`` from a whole JSON answer's ``usage``."""
    if b'"usage"' not in body:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return _counts(doc.get("usage")) if isinstance(doc, dict) else None


# Appended before a request's closing brace: the rest stays as the client wrote it.
_USAGE_MEMBER = b',"stream_options":{"include_usage":true}}'


def ask_for_usage(body: bytes) -> bytes | None:
    """The request with ``stream_options.include_usage`` added, when it streams and the client
    set no ``stream_options`` of its own; None otherwise (the request goes as it is)."""
    # The common request is decided in one pass over its bytes, with no document built
    # (this runs before every streamed call's first byte); orjson decides the rest.
    flag = stream_flag(body)
    if flag == STREAM_TRUE:
        return body.rstrip()[:-1] + _USAGE_MEMBER
    if flag != STREAM_UNSURE or b'"stream"' not in body:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or doc.get("stream") is not True or "stream_options" in doc:
        return None
    end = body.rstrip()
    if end.endswith(b"}"):  # the object's last byte: add the member there, the rest as the client wrote it
        return end[:-1] + _USAGE_MEMBER
    doc["stream_options"] = {"include_usage": True}
    return orjson.dumps(doc)


def _is_usage_only(event: bytes) -> bool:
    """The chunk the router asked for: usage and an empty ``choices`` list."""
    i = event.find(b'"choices"')
    if i < 0:
        return True
    i = _skip(event, i + 9)
    return event[i:i + 1] == b"[" and event[_skip(event, i + 1):_skip(event, i + 1) + 1] == b"]"


class UsageStream(StepStream):
    """A streamed OpenAI answer, passed through while its events are tallied.

    ``strip``: the router asked for usage, so the usage-only event is taken out and
    the client receives exactly the bytes it would have had. Only then are bytes held
    back, and only those of an event not yet complete (a client cannot act on half an
    event anyway); otherwise every chunk is handed on as it arrives.
    """

    # Made for every streamed OpenAI answer before its first byte goes on: no instance dict.
    __slots__ = ("_ended", "_inner", "_later", "_plain", "_scan", "_sep", "_size", "_sse", "_strip", "_tail",
                 "_tally")

    def __init__(self, inner: StepStream, tally: Tally, strip: bool, sse: bool) -> None:
        self._inner = inner
        self._tally = tally
        self._strip = strip
        self._sse = sse
        self._tail = b""
        self._sep = b""  # b"\n\n" or b"\r\n\r\n", from the first line's end
        self._plain: list[bytes] | None = None if sse else []
        self._size = 0
        self._scan = True
        self._ended = False
        self._later: list[tuple[bytes, float]] = []  # events handed on, tallied before the next read

    async def __anext__(self) -> bytes:
        while True:
            if self._later:
                self._tally_later()
            try:
                chunk = await self._inner.__anext__()
            except StopAsyncIteration:
                rest = self._tail
                if rest and self._strip and self._scan:
                    self._tail = b""
                    if event_usage(rest) is None or not _is_usage_only(rest):
                        if has_content(rest):
                            self._tally.content(perf_counter())
                        return rest
                self._end()
                raise
            except BaseException:
                self._end()
                raise
            if not self._scan:
                return chunk
            if not self._sse:
                return self._keep(chunk)
            out = self._events(chunk)
            if out:
                return out

    def ready(self) -> bytes | None:
        """What has arrived already, tallied as ``__anext__`` would (None: nothing to hand on yet)."""
        if self._later:
            self._tally_later()
        chunk = self._inner.ready()
        if chunk is None or not self._scan:
            return chunk
        if not self._sse:
            return self._keep(chunk)
        return self._events(chunk) or None

    def _keep(self, chunk: bytes) -> bytes:
        """A streamed plain (JSON) answer: kept, bounded, for its usage at the end."""
        plain = self._plain
        assert plain is not None
        self._size += len(chunk)
        if self._size > MAX_PLAIN:
            self._scan = False
            self._plain = None
        else:
            plain.append(chunk)
        return chunk

    def _events(self, chunk: bytes) -> bytes:
        """Tally the events this chunk completes; what to hand on (b"": nothing yet)."""
        data = self._tail + chunk if self._tail else chunk
        sep = self._sep
        if not sep:  # by the first line's end, once one is in (one byte to find: memchr)
            lf = data.find(b"\n")
            if lf >= 0:
                sep = self._sep = b"\r\n\r\n" if lf > 0 and data[lf - 1] == 13 else b"\n\n"
        cut = data.rfind(sep) if sep else -1
        if cut < 0:
            if len(data) > MAX_TAIL:
                self._scan = False
                self._tail = b""
                return data if self._strip else chunk
            self._tail = data
            return b"" if self._strip else chunk
        end = cut + len(sep)
        self._tail = data[end:]
        complete = data[:cut]
        # find(), not ``in``: bytes' ``in`` first tries its operand as an integer, and the
        # TypeError it raises and clears costs more than the search over a short event.
        if not self._strip or complete.find(b'"usage"') < 0:
            # Nothing to take out: the bytes go on first, the tally (arrival time kept) after.
            self._later.append((complete, perf_counter()))
            return data[:end] if self._strip else chunk
        events = complete.split(sep)
        dropped = self._tally_events(events, perf_counter())
        if dropped < 0:
            return data[:end]
        del events[dropped]
        return b"".join([e + sep for e in events])

    def _tally_later(self) -> None:
        later = self._later
        self._later = []
        sep = self._sep
        for complete, stamp in later:
            self._tally_events(complete.split(sep), stamp)

    def _tally_events(self, events: Sequence[bytes], stamp: float) -> int:
        """Count content and usage in complete events that arrived at ``stamp``; the index of
        the usage-only event to take out (-1: none)."""
        dropped = -1
        tally = self._tally
        for i, event in enumerate(events):
            if has_content(event):
                tally.content(stamp)
            elif event.find(b'"usage"') >= 0:
                counts = event_usage(event)
                if counts is not None:
                    tally.usage(*counts)
                    if self._strip and _is_usage_only(event):
                        dropped = i
        return dropped

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._later:
            self._tally_later()
        if self._plain:
            counts = plain_usage(b"".join(self._plain))
            if counts is not None:
                self._tally.usage(*counts)
        self._tally.ended()

    async def aclose(self) -> None:
        self._end()
        await self._inner.aclose()


__all__ = ["UsageStream", "ask_for_usage", "event_usage", "has_content", "plain_usage"]
