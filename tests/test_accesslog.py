"""The access log: one preformatted ``graph request`` line per request, written in batches.

The line must be what the logging formatter would have written for the same record
(fields, key order, ``time``), one valid JSON object per line; lines go out once per
event-loop iteration, in order with other records, and none is lost at shutdown.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import echo, wait_ready
from hypothesis import given, settings
from hypothesis import strategies as st
from test_logs import free_port, spec_for

from graph_router.telemetry import Telemetry
from graph_router.telemetry.accesslog import BATCH_BYTES, AccessLog
from graph_router.telemetry.logs import FIELDS, JSONFormatter, TextFormatter

KEYS = ["time", "level", "logger", "message", "graph", "status", "duration_ms", "router_ms", "request_id", "trace_id"]
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RECORDER = "graph_router.telemetry.recorder"


class CountingStream(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


_counter = iter(range(1_000_000))


def isolated_logger(formatter: logging.Formatter, level: int = logging.INFO,
                    handler: logging.Handler | None = None) -> tuple[logging.Logger, CountingStream]:
    """A fresh logger of its own (not propagating) with one stream handler using ``formatter``."""
    stream = CountingStream()
    logger = logging.getLogger(f"test_accesslog.{next(_counter)}")
    logger.propagate = False
    logger.setLevel(level)
    handler = handler if handler is not None else logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    return logger, stream


def formatted(formatter: logging.Formatter, logger: logging.Logger, warning: bool, fields: dict[str, Any],
              now: float) -> str:
    """What ``formatter`` writes for the record the generic path makes, as if made at ``now``."""
    record = logger.makeRecord(logger.name, logging.WARNING if warning else logging.INFO, __file__, 0,
                               "graph request", (), None, extra={FIELDS: fields})
    record.created = now
    record.msecs = int((now - int(now)) * 1000) + 0.0
    return formatter.format(record)


def fields_of(graph: str, status: int | None, total: float, own: float, request_id: str | None,
              trace_id: str | None, cause: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "graph": graph, "status": status, "duration_ms": round(total * 1000, 3), "router_ms": round(own * 1000, 3),
        "request_id": request_id, "trace_id": trace_id,
    }
    if cause is not None:
        fields["cause"] = cause
    return fields


JSON_LOGGER = isolated_logger(JSONFormatter())[0]
JSON_ACCESS = AccessLog(JSON_LOGGER)
TEXT_LOGGER = isolated_logger(TextFormatter())[0]
TEXT_ACCESS = AccessLog(TEXT_LOGGER)
any_text = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["req-1", 'a"b', "a\\b", "x\ny", "é", "\x7f"]))
statuses = st.one_of(st.none(), st.integers(100, 599))
seconds = st.floats(min_value=0, max_value=3600, allow_nan=False)
LINE_ARGS: dict[str, st.SearchStrategy[Any]] = {
    "warning": st.booleans(), "graph": st.text(min_size=1, max_size=20), "status": statuses, "total": seconds,
    "own": seconds, "request_id": any_text, "trace_id": any_text, "cause": any_text,
    "now": st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False),
}


@settings(max_examples=400, deadline=None)
@given(**LINE_ARGS)
def test_json_line_is_what_the_json_formatter_writes(warning: bool, graph: str, status: int | None, total: float,
                                                     own: float, request_id: str | None, trace_id: str | None,
                                                     cause: str | None, now: float) -> None:
    """Byte for byte: same keys in the same order, same time, same number and string encodings."""
    logger, access = JSON_LOGGER, JSON_ACCESS
    assert access.writer is not None
    line = access.line(warning, graph, status, total, own, request_id, trace_id, cause, now)
    fields = fields_of(graph, status, total, own, request_id, trace_id, cause)
    assert line == formatted(JSONFormatter(), logger, warning, fields, now)
    assert "\n" not in line
    doc = orjson.loads(line)
    assert list(doc) == KEYS + (["cause"] if cause is not None else [])
    assert TIME.match(doc["time"])


@settings(max_examples=200, deadline=None)
@given(**LINE_ARGS)
def test_text_line_is_what_the_text_formatter_writes(warning: bool, graph: str, status: int | None, total: float,
                                                     own: float, request_id: str | None, trace_id: str | None,
                                                     cause: str | None, now: float) -> None:
    logger, access = TEXT_LOGGER, TEXT_ACCESS
    assert access.writer is not None and not access.json
    line = access.line(warning, graph, status, total, own, request_id, trace_id, cause, now)
    fields = fields_of(graph, status, total, own, request_id, trace_id, cause)
    assert line == formatted(TextFormatter(), logger, warning, fields, now)


def test_line_time_is_now() -> None:
    """``request`` stamps the line with the wall clock, as a record's ``created`` would be."""
    logger, stream = isolated_logger(JSONFormatter())
    access = AccessLog(logger)
    before = time.time()
    access.request(False, "g", 200, 0.001, 0.0005, None, None, None)  # no event loop: written at once
    after = time.time()
    doc = orjson.loads(stream.getvalue())
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(before)))
    assert doc["time"][:19] >= stamp and doc["time"][:19] <= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(after))
    assert (doc["level"], doc["logger"], doc["message"]) == ("INFO", logger.name, "graph request")


async def test_lines_of_one_iteration_share_one_write() -> None:
    logger, stream = isolated_logger(JSONFormatter())
    access = AccessLog(logger)
    for i in range(5):
        access.request(False, "g", 200, 0.001, 0.0005, f"r{i}", None, None)
    assert stream.writes == []  # queued, not written yet
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(stream.writes) == 1
    lines = stream.getvalue().splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == [f"r{i}" for i in range(5)]
    assert stream.getvalue().endswith("\n")


async def test_a_batch_stays_under_pipe_buf_and_holds_whole_lines() -> None:
    """Each write is at most PIPE_BUF bytes of whole lines: atomic in a pipe that --workers share."""
    logger, stream = isolated_logger(JSONFormatter())
    access = AccessLog(logger)
    for i in range(200):
        access.request(False, "g", 200, 0.001, 0.0005, f"r{i}", "é" * (i % 7), None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(stream.writes) > 1
    for chunk in stream.writes:
        assert len(chunk.encode()) <= BATCH_BYTES and chunk.endswith("\n")
    assert [orjson.loads(line)["request_id"] for line in stream.getvalue().splitlines()] == [
        f"r{i}" for i in range(200)]


async def test_other_records_come_after_the_lines_queued_before_them() -> None:
    logger, stream = isolated_logger(JSONFormatter())
    access = AccessLog(logger)
    access.request(False, "g", 200, 0.001, 0.0005, "first", None, None)
    access.request(False, "g", 200, 0.001, 0.0005, "second", None, None)
    logger.warning("step failed", extra={FIELDS: {"graph": "g"}})  # the generic path, at once
    access.request(True, "g", 500, 0.001, 0.0005, "third", None, "boom")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    docs = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(d["message"], d.get("request_id")) for d in docs] == [
        ("graph request", "first"), ("graph request", "second"), ("step failed", None), ("graph request", "third")]
    assert docs[3]["level"] == "WARNING" and docs[3]["cause"] == "boom"


def test_warning_level_formats_nothing() -> None:
    logger, _ = isolated_logger(JSONFormatter(), level=logging.WARNING)
    access = AccessLog(logger)
    assert not access.enabled(False) and access.enabled(True)
    telemetry_logger = logging.getLogger(RECORDER)
    old = telemetry_logger.level
    telemetry_logger.setLevel(logging.WARNING)
    try:
        assert not Telemetry().log_requests
    finally:
        telemetry_logger.setLevel(old)


def test_setups_it_does_not_reproduce_go_through_logging() -> None:
    """A custom formatter, a handler subclass, a filter or two handlers: the generic record, as before."""

    class Subclass(logging.StreamHandler):  # type: ignore[type-arg]
        pass

    cases: list[tuple[logging.Logger, io.StringIO]] = [isolated_logger(logging.Formatter("%(message)s"))]
    subclassed = Subclass(CountingStream())
    cases.append((isolated_logger(JSONFormatter(), handler=subclassed)[0], subclassed.stream))
    logger, stream = isolated_logger(JSONFormatter())
    logger.handlers[0].addFilter(lambda record: True)
    cases.append((logger, stream))
    logger, stream = isolated_logger(JSONFormatter())
    logger.addHandler(logging.StreamHandler(io.StringIO()))
    cases.append((logger, stream))
    for case_logger, case_stream in cases:
        access = AccessLog(case_logger)
        assert access.writer is None
        access.request(False, "g", 200, 0.001, 0.0005, "req", None, None)
        assert "req" in case_stream.getvalue()


def test_a_broken_stream_never_breaks_the_request(capsys: pytest.CaptureFixture[str]) -> None:
    """As with logging: the error is reported on stderr, the caller goes on."""
    logger, stream = isolated_logger(JSONFormatter())
    access = AccessLog(logger)
    stream.close()
    access.request(False, "g", 200, 0.001, 0.0005, None, None, None)
    assert "--- Logging error ---" in capsys.readouterr().err


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


def test_serve_logging_setup_takes_the_fast_path() -> None:
    """What `graph-router serve` configures (basicConfig at INFO, then our JSON formatter) is reproduced."""
    out = run_python("""
        import logging
        from graph_router.telemetry import Telemetry
        from graph_router.telemetry.logs import configure
        logging.basicConfig(level=logging.INFO)
        for fmt in ("json", "text"):
            configure(fmt)
            access = Telemetry().access
            print(fmt, access.writer is not None, access.json, access.info)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["json True True True", "text True False True"]


def test_lines_still_queued_at_exit_are_written() -> None:
    """The loop stops before its flush callback runs: the atexit hook writes the lines."""
    out = run_python("""
        import asyncio, logging
        from graph_router.telemetry import Telemetry
        from graph_router.telemetry.logs import configure
        logging.basicConfig(level=logging.INFO)
        configure("json")
        access = Telemetry().access
        loop = asyncio.new_event_loop()
        def answer():
            for i in range(3):
                access.request(False, "g", 200, 0.001, 0.0005, f"r{i}", None, None)
            loop.stop()
        loop.call_soon(answer)
        loop.run_forever()
        assert access.writer._lines, "the flush callback must still be pending here"
    """)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert [orjson.loads(line)["request_id"] for line in lines] == ["r0", "r1", "r2"]


async def serve_and_load(tmp_path: Path, spec: dict[str, Any], count: int, concurrency: int,
                         *args: str) -> list[str]:
    """Serve ``spec`` from the CLI, send ``count`` requests ``concurrency`` at a time, SIGTERM at once."""
    graph = tmp_path / "graph.json"
    graph.write_bytes(orjson.dumps(spec))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph", str(graph), "--name", "logged", "--host",
        "127.0.0.1", "--port", str(port), "--drain-seconds", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
            await wait_ready(session, url)

            async def one(i: int) -> None:
                headers = {"X-Request-Id": f'id-{i} "quoted"\\'} if i % 3 == 0 else {}
                async with session.post(url, json={"i": i}, headers=headers) as resp:
                    assert resp.status == 200
                    await resp.read()

            await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    return err.decode().splitlines()


async def test_serve_writes_one_json_line_per_request_none_lost_at_shutdown(start_service: Any,
                                                                          tmp_path: Path) -> None:
    """Every request's line arrives, whole and valid, before the stop line; SIGTERM right after the last answer."""
    svc = await start_service({"/m": echo})
    count = 600
    lines = await serve_and_load(tmp_path, spec_for(svc.url("/m")), count, 32)
    docs = [orjson.loads(line) for line in lines]  # each line is exactly one JSON object
    requests = [d for d in docs if d["message"] == "graph request"]
    assert len(requests) == count
    for d in requests:
        assert list(d) == KEYS
        assert TIME.match(d["time"])
        assert (d["level"], d["logger"], d["graph"], d["status"]) == ("INFO", RECORDER, "logged", 200)
        assert isinstance(d["duration_ms"], float) and d["duration_ms"] >= d["router_ms"]
    quoted = sorted(d["request_id"] for d in requests if d["request_id"] is not None)
    assert quoted == sorted(f'id-{i} "quoted"\\' for i in range(0, count, 3))
    messages = [d["message"] for d in docs]
    assert messages[-1] == "graph-router stopped"
    stopping = next(i for i, m in enumerate(messages) if m.startswith("stopping"))
    assert stopping > max(i for i, m in enumerate(messages) if m == "graph request")


async def test_serve_text_format_lines_none_lost(start_service: Any, tmp_path: Path) -> None:
    svc = await start_service({"/m": echo})
    lines = await serve_and_load(tmp_path, spec_for(svc.url("/m")), 200, 16, "--log-format", "text")
    requests = [line for line in lines if " graph request " in line]
    assert len(requests) == 200
    pattern = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO graph_router\.telemetry\.recorder graph request "
                         r"graph=logged status=200 duration_ms=[\d.]+ router_ms=[\d.]+( request_id=.+)?$")
    assert all(pattern.match(line) for line in requests), requests[:3]
