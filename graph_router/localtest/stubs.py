"""Stub services: a real HTTP server on loopback that answers as the suite says and records.

The graph under test calls stubs exactly as it calls models in a cluster, through the
real upstream client over TCP, so what a case checks is what crossed the wire. All
stubs of a run share one server, each under its own path; ``configure`` swaps in a
case's stubs and forgets what the previous case recorded.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

import orjson
from aiohttp import web

from .suite import Answer, StubSpec

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One request a stub received, as it arrived."""

    service: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    at: float

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive)."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


class _Stub:
    """One configured stub: its answers and how many it has given."""

    def __init__(self, name: str, spec: StubSpec) -> None:
        self.name = name
        self.answers: tuple[Answer, ...] = tuple(spec.sequence) if spec.sequence else (spec,)
        self.repeat = spec.sequence is None
        self.given = 0

    def next_answer(self) -> Answer | None:
        """The answer for this call; None once a sequence has run out."""
        index = self.given
        self.given += 1
        if self.repeat:
            return self.answers[0]
        return self.answers[index] if index < len(self.answers) else None


class StubServer:
    """Every stub of a run on one loopback HTTP server; create, ``start``, ``close``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._runner: web.ServerRunner | None = None
        self._base = ""
        self._refuser: socket.socket | None = None
        self._stubs: dict[str, _Stub] = {}
        self._started = time.monotonic()
        self.calls: list[RecordedCall] = []
        self.problems: list[str] = []

    async def start(self) -> None:
        self._runner = web.ServerRunner(
            # A delayed answer whose caller gave up (timeout, cancelled case) stops at once.
            web.Server(self._handle, access_log=None, handler_cancellation=True),
            handle_signals=False,
            shutdown_timeout=1,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._base = f"http://{self._host}:{port}"
        # A socket bound but never listening: connecting to it is refused, and holding it
        # keeps another process from taking the port while the run lasts.
        self._refuser = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._refuser.bind((self._host, 0))

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._refuser is not None:
            self._refuser.close()
            self._refuser = None

    async def __aenter__(self) -> StubServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def configure(self, specs: Mapping[str, StubSpec]) -> dict[str, str]:
        """Serve these stubs from now on, with empty records; returns name -> URL to call."""
        if self._refuser is None:
            raise RuntimeError("StubServer.start() was not awaited")
        self._stubs = {name: _Stub(name, spec) for name, spec in specs.items() if spec.is_stub}
        self.calls = []
        self.problems = []
        self._started = time.monotonic()
        refused_port = self._refuser.getsockname()[1]
        urls = {}
        for name, spec in specs.items():
            if spec.url is not None:
                urls[name] = spec.url
            elif spec.fail == "refuse":
                urls[name] = f"http://{self._host}:{refused_port}/{quote(name, safe='')}"
            else:
                urls[name] = f"{self._base}/{quote(name, safe='')}"
        return urls

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        name = _name_of(request.raw_path)
        stub = self._stubs.get(name)
        self.calls.append(
            RecordedCall(
                service=name,
                method=request.method,
                path=request.path_qs,
                headers=tuple((k, v) for k, v in request.headers.items()),
                body=body,
                at=round(time.monotonic() - self._started, 6),
            )
        )
        if stub is None:
            self.problems.append(f"a call to {request.path!r} reached no stub")
            missing = web.Response(status=404, body=orjson.dumps({"error": f"no stub at {request.path}"}))
            missing.force_close()
            return missing
        answer = stub.next_answer()
        if answer is None:
            self.problems.append(
                f"stub {name!r} was called {stub.given} times; its sequence has {len(stub.answers)} answers"
            )
            spent = web.Response(
                status=500, body=orjson.dumps({"error": f"stub {name!r} has no answers left"}), content_type=JSON
            )
            spent.force_close()
            return spent
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.fail == "reset":
            _reset(request)
            raise asyncio.CancelledError  # the connection is gone: nothing is written
        return _response(answer, request, body)


def _name_of(raw_path: str) -> str:
    """The stub a path is for: its first segment, unquoted (a URL-named stub has slashes)."""
    return unquote(raw_path.split("?", 1)[0].lstrip("/").split("/", 1)[0])


def _response(answer: Answer, request: web.BaseRequest, body: bytes) -> web.Response:
    headers = dict(answer.headers)
    if answer.echo:
        payload = body
        headers.setdefault("Content-Type", request.headers.get("Content-Type", JSON))
    elif answer.text is not None:
        payload = answer.text.encode()
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    elif answer.given("body"):
        payload = orjson.dumps(answer.body)
        headers.setdefault("Content-Type", JSON)
    else:
        payload = b""
    response = web.Response(status=answer.status, body=payload, headers=headers)
    # Each call on a new connection: a kept-alive connection that a later stub resets is
    # retried once by the upstream client, and a case's recorded calls would then depend
    # on which connection the pool happened to pick.
    response.force_close()
    return response


def _reset(request: web.BaseRequest) -> None:
    """Drop the connection with a TCP reset, as a crashed service does."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
