"""Adding up the metrics of ``serve --workers N`` processes without touching the disk.

Each worker listens on a Linux *abstract* unix socket (a name in the network
namespace, not a file: the root filesystem stays read-only) and answers every
connection with its current metrics snapshot, as JSON, then closes. The worker that
receives ``GET /metrics`` asks all its siblings at once, adds their snapshots to its
own and renders the sum, so any worker answers for the whole pod.

Why not a shared-memory file or prometheus_client's multiprocess mode: both write
files (the pod's root filesystem is read-only, and an emptyDir would be one more
thing to configure). Why not the parent process: it would have to serve HTTP itself,
and a scrape routed by SO_REUSEPORT lands on a worker anyway.

Socket names carry a token drawn by the supervisor before it starts the workers, so two routers in
one network namespace (host networking, tests) never answer for each other. A sibling
that does not answer within the timeout (restarting, stuck) is left out of that
scrape; ``graph_router_scrape_workers`` says how many were added up.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson

logger = logging.getLogger(__name__)

ENV = "GRAPH_ROUTER_WORKER"

# Snapshots are small (a few KiB per graph); this bounds what a sibling may send.
MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkerGroup:
    """Which worker this process is, of how many, and the group's shared token.

    The supervisor draws one with :meth:`new` and hands each worker process its place
    through the environment (:meth:`environ`, read back by :meth:`from_env`).
    timeout: seconds a scrape waits for each sibling's snapshot.
    """

    token: str
    index: int
    size: int
    timeout: float = 2.0

    @classmethod
    def new(cls, size: int) -> WorkerGroup:
        return cls(secrets.token_hex(8), 0, size)

    def worker(self, index: int) -> WorkerGroup:
        return WorkerGroup(self.token, index, self.size, self.timeout)

    def environ(self, index: int) -> dict[str, str]:
        """The variables that tell worker ``index`` its place (``ENV``: ``token:index:size``)."""
        return {ENV: f"{self.token}:{index}:{self.size}"}

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerGroup | None:
        """This process's place, when a supervisor started it; None for a lone router."""
        value = env.get(ENV)
        if not value:
            return None
        try:
            token, index, size = value.split(":")
            group = cls(token, int(index), int(size))
        except ValueError:
            logger.error("%s=%r is not token:index:size; metrics cover this worker only", ENV, value)
            return None
        return group if 0 <= group.index < group.size else None

    def address(self, index: int) -> str:
        """The abstract socket name of worker ``index`` (the leading NUL makes it abstract)."""
        return f"\0graph-router/{self.token}/{index}"

    @property
    def siblings(self) -> list[int]:
        return [i for i in range(self.size) if i != self.index]


class SnapshotExchange:
    """This worker's side of the exchange: answer siblings, and ask them when scraped."""

    def __init__(self, group: WorkerGroup, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.group = group
        self._snapshot = snapshot
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        # Sockets are bound and connected by hand: uvloop rejects abstract names given as paths.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(self.group.address(self.group.index))
            sock.listen(64)
            self._server = await asyncio.start_unix_server(self._answer, sock=sock)
        except OSError as exc:
            sock.close()
            logger.error("cannot answer sibling workers' scrapes (%s): /metrics of the others will miss "
                         "this worker", exc)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with suppress(Exception):
                await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(orjson.dumps(self._snapshot()))
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def gather(self) -> list[dict[str, Any]]:
        """The snapshots of every sibling that answers in time (own snapshot not included)."""
        answers = await asyncio.gather(*(self._ask(i) for i in self.group.siblings))
        return [a for a in answers if a is not None]

    async def _ask(self, index: int) -> dict[str, Any] | None:
        writer = None
        try:
            async with asyncio.timeout(self.group.timeout):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    sock.connect(self.group.address(index))  # immediate on a listening unix socket
                except OSError:
                    sock.close()
                    raise
                reader, writer = await asyncio.open_unix_connection(sock=sock)
                data = await reader.read(MAX_SNAPSHOT_BYTES)
                while chunk := await reader.read(MAX_SNAPSHOT_BYTES):
                    data += chunk
                    if len(data) > MAX_SNAPSHOT_BYTES:
                        raise ValueError("snapshot too large")
            snap = orjson.loads(data)
            if not isinstance(snap, dict):
                raise ValueError("snapshot is not an object")
            return snap
        except (OSError, TimeoutError, ValueError) as exc:
            logger.warning("metrics of worker %d left out of this scrape: %s", index, exc or type(exc).__name__)
            return None
        finally:
            if writer is not None:
                writer.close()
