"""The access log: one preformatted line per graph request, written in batches.

The generic :mod:`logging` path costs about 14 µs per line (a ``LogRecord``, the
handler's lock, a formatter, a ``write`` and a ``flush`` system call per line): half
the router's own CPU on a one-step graph. The access log does what nginx's does, and
what structlog advises: decide everything once at start, then per request build one
line and append it to a buffer.

- :class:`AccessLog` is made once per :class:`~.recorder.Telemetry`. It looks at the
  logging configuration as it stands then: the levels enabled for the request
  logger, and where a record would go. When that is one plain ``StreamHandler`` (or
  ``FileHandler``) with our :class:`~.logs.JSONFormatter` or :class:`~.logs.TextFormatter`
  and no filters (what ``serve`` sets up), it formats the line itself, byte for byte
  what the formatter would have written (same keys in the same order, same ``time``),
  and hands it to the handler's :class:`LineWriter`. Any other setup (several handlers,
  a custom formatter, pytest's capture) gets the generic ``logging`` record, as before.
- :class:`LineWriter` (one per handler) keeps the lines of one event-loop iteration and
  writes them in one ``write`` from a ``call_soon`` callback, under the handler's lock:
  the requests finished in one iteration share one system call. A batch stays under
  ``PIPE_BUF`` (4096 bytes), so a write into a pipe shared by ``--workers`` processes
  is atomic and lines never interleave. It sits on the handler as a filter too, so any
  generic record on that handler (a step failure, a reload) first writes the lines
  buffered before it: the log keeps its order. Lines are written at the latest when
  the telemetry closes (server shutdown), and by an ``atexit`` hook for anything later.
  Lines come from the event loop's thread; a record logged from another thread may
  flush them from there (compiled, the buffer swap holds the GIL throughout).

With ``--log-level WARNING`` nothing is formatted for successful requests: the
recorder asks :meth:`AccessLog.enabled` first, a flag read.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
import traceback
from asyncio import get_running_loop
from typing import Any

import orjson

from .logs import FIELDS, JSONFormatter, TextFormatter, text_value

INFO = logging.INFO
WARNING = logging.WARNING
BATCH_BYTES = 4096  # PIPE_BUF on Linux: a write up to this size into a pipe is atomic
MESSAGE = "graph request"


class LineWriter:
    """Preformatted lines for one handler's stream, written once per event-loop iteration."""

    def __init__(self, handler: logging.StreamHandler[Any]) -> None:
        self.handler = handler
        self.terminator: str = handler.terminator
        self._lines: list[str] = []
        self._size = 0
        self._loop: object = None  # the loop a flush is scheduled on, None when none is
        self._flush_soon_cb = self._flush_soon

    def write(self, line: str) -> None:
        """Queue one line (without its terminator); it is written by the end of this loop iteration."""
        size = len(line) + 1 if line.isascii() else 4 * len(line) + 1  # UTF-8 bytes, at most
        if self._size + size > BATCH_BYTES and self._lines:
            self.flush()
        self._lines.append(line)
        self._size += size
        try:
            loop = get_running_loop()
        except RuntimeError:  # no event loop: write it now
            self.flush()
            return
        if loop is not self._loop:
            loop.call_soon(self._flush_soon_cb)
            self._loop = loop

    def _flush_soon(self) -> None:
        self._loop = None
        self.flush()

    def flush(self) -> None:
        """Write the queued lines now, in one ``write``."""
        if not self._lines:
            return
        lines = self._lines
        self._lines = []
        self._size = 0
        terminator = self.terminator
        text = terminator.join(lines) + terminator
        handler = self.handler
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(text)
            stream.flush()
        except RecursionError:
            raise
        except Exception:  # a closed or broken stream: report it as logging would, never raise
            _report_error()
        finally:
            handler.release()

    def filter(self, record: logging.LogRecord) -> bool:
        """As the handler's filter: a generic record goes out after the lines queued before it."""
        if self._lines:
            self.flush()
        return True


def _report_error() -> None:
    """``Handler.handleError``'s report, without a record: the traceback on stderr, if it works."""
    if logging.raiseExceptions and sys.stderr:
        try:
            sys.stderr.write("--- Logging error ---\n")
            traceback.print_exc(file=sys.stderr)
        except OSError:
            pass


_WRITERS: dict[logging.Handler, LineWriter] = {}


def writer_for(handler: logging.StreamHandler[Any]) -> LineWriter:
    """The handler's one :class:`LineWriter` (installed as its filter on first use)."""
    writer = _WRITERS.get(handler)
    if writer is None:
        writer = _WRITERS[handler] = LineWriter(handler)
        handler.addFilter(writer)
    return writer


def flush_all() -> None:
    """Write every queued line (at exit; the server's shutdown already did, normally)."""
    for writer in list(_WRITERS.values()):
        writer.flush()


atexit.register(flush_all)


def plain_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The one handler a record of ``logger`` reaches, if the access log can write for it.

    That is: exactly one handler on the way up (as ``Logger.callHandlers`` walks it), a
    plain ``StreamHandler`` or ``FileHandler`` with an open stream, one of our two
    formatters, and no filters on the handler or the loggers (other than our writer).
    """
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        handlers += current.handlers
        current = current.parent if current.propagate else None
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if type(handler) not in (logging.StreamHandler, logging.FileHandler):
        return None
    assert isinstance(handler, logging.StreamHandler)
    if type(handler.formatter) not in (JSONFormatter, TextFormatter) or handler.stream is None:
        return None
    if any(f is not _WRITERS.get(handler) for f in handler.filters):
        return None
    return handler


class AccessLog:
    """The ``graph request`` lines of one process: decided once at start, then one line per request.

    ``logger`` is the recorder's logger (its name goes in each line). ``writer`` is None
    when the logging setup is not one we reproduce: lines then go through ``logging``.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        handler = plain_handler(logger)
        self.writer: LineWriter | None = None
        self.json = False
        self.formatter: logging.Formatter | None = None
        self.info = logger.isEnabledFor(logging.INFO)
        self.warning = logger.isEnabledFor(logging.WARNING)
        self._second = -1
        self._stamp = ""
        self._graph: str | None = None
        self._graph_value = ""
        self._info_head = ""
        self._warning_head = ""
        if handler is not None:
            self.writer = writer_for(handler)
            self.formatter = formatter = handler.formatter
            self.json = type(formatter) is JSONFormatter
            self.info = self.info and handler.level <= logging.INFO
            self.warning = self.warning and handler.level <= logging.WARNING
            self._info_head = self._head(logging.INFO)
            self._warning_head = self._head(logging.WARNING)

    def _head(self, level: int) -> str:
        """What follows the time: level, logger and message (and, in JSON, the "graph" key)."""
        name = logging.getLevelName(level)
        if self.json:
            return "".join((
                '","level":', _json(name), ',"logger":', _json(self.logger.name), ',"message":', _json(MESSAGE),
                ',"graph":',
            ))
        return f" {name} {self.logger.name} {MESSAGE}"

    def enabled(self, warning: bool) -> bool:
        """Whether a line at WARNING (``warning``), else at INFO, is written."""
        if self.writer is None:
            return self.logger.isEnabledFor(WARNING if warning else INFO)
        return self.warning if warning else self.info

    def request(self, warning: bool, graph: str, status: object, total: float, own: float,
                request_id: object, trace_id: object, cause: object, endpoint: object = None) -> None:
        """One graph request's line (at WARNING or INFO): ``total`` and ``own`` (the router's time) in seconds."""
        writer = self.writer
        if writer is None:
            fields: dict[str, object] = {
                "graph": graph, "status": status, "duration_ms": round(total * 1000, 3),
                "router_ms": round(own * 1000, 3), "request_id": request_id, "trace_id": trace_id,
            }
            if endpoint is not None:
                fields["endpoint"] = endpoint
            if cause is not None:
                fields["cause"] = cause
            self.logger.log(WARNING if warning else INFO, MESSAGE, extra={FIELDS: fields})
            return
        writer.write(self.line(warning, graph, status, total, own, request_id, trace_id, cause, time.time(),
                               endpoint))

    def line(self, warning: bool, graph: str, status: object, total: float, own: float,
             request_id: object, trace_id: object, cause: object, now: float, endpoint: object = None) -> str:
        """The line, without its terminator, as the handler's formatter would write a record made at ``now``."""
        head = self._warning_head if warning else self._info_head
        if not self.json:
            return self._text_line(head, graph, status, total, own, request_id, trace_id, cause, now, endpoint)
        second = int(now)
        if second != self._second:
            self._stamp = '{"time":"' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        if graph is not self._graph:
            self._graph_value = _json(graph)
            self._graph = graph
        line = (
            f'{self._stamp}{_MILLIS[int((now - second) * 1000)]}{head}{self._graph_value}'
            f',"status":{_json(status)},"duration_ms":{_millis(total)},"router_ms":{_millis(own)}'
            f',"request_id":{_json(request_id)},"trace_id":{_json(trace_id)}'
        )
        if endpoint is not None:  # the endpoint a step with several chose (graph_router/endpoints.py)
            line += ',"endpoint":' + _json(endpoint)
        if cause is not None:
            return line + ',"cause":' + _json(cause) + "}"
        return line + "}"

    def _text_line(self, head: str, graph: str, status: object, total: float, own: float,
                   request_id: object, trace_id: object, cause: object, now: float, endpoint: object = None) -> str:
        """``TextFormatter``'s line: asctime as ``Formatter.formatTime`` writes it, then ``key=value``."""
        formatter = self.formatter
        assert formatter is not None
        second = int(now)
        if second != self._second:
            self._stamp = time.strftime(formatter.default_time_format, formatter.converter(now))
            self._second = second
        msec_format = formatter.default_msec_format
        stamp = msec_format % (self._stamp, int((now - second) * 1000) + 0.0) if msec_format else self._stamp
        parts = [stamp + head]
        for key, value in (("graph", graph), ("status", status), ("duration_ms", round(total * 1000, 3)),
                           ("router_ms", round(own * 1000, 3)), ("request_id", request_id),
                           ("trace_id", trace_id), ("endpoint", endpoint), ("cause", cause)):
            if value is not None:
                parts.append(f"{key}={text_value(value)}")
        return " ".join(parts)

    def request_with(self, fields: list[tuple[str, object]], warning: bool, graph: str, status: object,
                     total: float, own: float, request_id: object, trace_id: object, cause: object,
                     endpoint: object = None) -> None:
        """``request``'s line with ``fields`` after the usual ones (the LLM figures, graph_router/llm)."""
        writer = self.writer
        if writer is None:
            record: dict[str, object] = {
                "graph": graph, "status": status, "duration_ms": round(total * 1000, 3),
                "router_ms": round(own * 1000, 3), "request_id": request_id, "trace_id": trace_id,
            }
            if endpoint is not None:
                record["endpoint"] = endpoint
            if cause is not None:
                record["cause"] = cause
            record.update(fields)
            self.logger.log(WARNING if warning else INFO, MESSAGE, extra={FIELDS: record})
            return
        line = self.line(warning, graph, status, total, own, request_id, trace_id, cause, time.time(), endpoint)
        if self.json:
            line = line[:-1] + "".join(f",{_json(k)}:{_json(v)}" for k, v in fields) + "}"
        else:
            line = " ".join([line, *(f"{k}={text_value(v)}" for k, v in fields)])
        writer.write(line)

    def flush(self) -> None:
        """Write the lines still queued (the server is stopping)."""
        if self.writer is not None:
            self.writer.flush()


_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]  # the end of the "time" value


def _millis(seconds: float) -> str:
    """``round(seconds * 1000, 3)`` as orjson writes it, for less than 1e16 ms.

    ``%.3f`` rounds exactly as ``round`` does (both take the decimal digits of the exact
    binary value); the shortest form of the result then drops the trailing zeros. This
    costs half of ``repr(round(...))``.
    """
    text = f"{seconds * 1000:.3f}".rstrip("0")
    return text + "0" if text[-1] == "." else text


def _json(value: object) -> str:
    """``value`` as orjson writes it inside a line (a string needing no escape is just quoted)."""
    if value is None:
        return "null"
    if type(value) is int:
        return str(value)
    if type(value) is str and value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return '"' + value + '"'
    return orjson.dumps(value, default=str).decode()
