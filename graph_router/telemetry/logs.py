"""Log formats: one JSON object per line, or text with ``key=value`` fields.

Structured fields travel on the record as ``extra={"fields": {...}}``: the JSON
format writes them as keys of the line's object (with orjson: one call, no
json.dumps), the text format appends them as ``key=value``. The router logs one line
per graph request and one per failed step call; neither carries a body. The request
line does not go through ``logging``'s records: :mod:`.accesslog` writes, for a setup
made by :func:`configure`, exactly what these formatters would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

import orjson

FIELDS = "fields"  # the LogRecord attribute carrying a line's structured fields

LogFormat = Literal["json", "text"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def fields_of(record: logging.LogRecord) -> Mapping[str, Any] | None:
    fields = getattr(record, FIELDS, None)
    return fields if isinstance(fields, Mapping) else None


class JSONFormatter(logging.Formatter):
    """``{"time","level","logger","message", ...fields}``, one object per line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = fields_of(record)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """The usual text line, then the structured fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = fields_of(record)
        if fields:
            line += " " + " ".join(f"{k}={text_value(v)}" for k, v in fields.items() if v is not None)
        return line


def text_value(value: object) -> str:
    """A field as the text format writes it: quoted (JSON) when it has a space or a quote, or is empty."""
    text = str(value)
    return orjson.dumps(text).decode() if (" " in text or '"' in text or not text) else text


def _utc(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JSONFormatter() if fmt == "json" else TextFormatter()


def configure(fmt: LogFormat) -> None:
    """Use ``fmt`` on every handler of the root logger, and skip record fields we never print.

    Thread, process and caller lookups cost several microseconds per record and no
    line of ours shows them (the logging HOWTO's "Optimization" knobs).
    """
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig()
    for handler in root.handlers:
        handler.setFormatter(formatter(fmt))
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
