"""Reading an OpenAI chat-completions event stream as its bytes arrive.

Bytes are fed in whatever pieces the network delivers; complete server-sent events
come out as the text they add to the answer. Only ``data:`` fields matter to this
API (comments, ``event:``, ``id:`` and ``retry:`` are skipped), an event ends at a
blank line, and ``data: [DONE]`` ends the stream.
"""

from __future__ import annotations

from typing import Any

import orjson


class StreamError(Exception):
    """The stream carried an error event, or an event that is not a chat chunk."""


class ChatStream:
    """Incremental parser: :meth:`feed` bytes, get the answer's new text pieces back."""

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []
        self.done = False
        self.events = 0
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, data: bytes) -> list[str]:
        """The content pieces completed by ``data``, in order."""
        pieces: list[str] = []
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line.rstrip(b"\r"), pieces)
        return pieces

    def close(self) -> list[str]:
        """End of input: an event left without its blank line still counts."""
        pieces: list[str] = []
        if self._pending:
            self._line(self._pending.rstrip(b"\r"), pieces)
            self._pending = b""
        self._dispatch(pieces)
        return pieces

    def _line(self, line: bytes, pieces: list[str]) -> None:
        if not line:
            self._dispatch(pieces)
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)

    def _dispatch(self, pieces: list[str]) -> None:
        if not self._data:
            return
        data = b"\n".join(self._data)
        self._data = []
        if self.done:
            return
        if data.strip() == b"[DONE]":
            self.done = True
            return
        self.events += 1
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise StreamError(f"event {self.events} is not JSON: {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise StreamError(f"event {self.events} is not a JSON object")
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise StreamError(f"the model reported an error: {message}")
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                pieces.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
