"""``serve --reload``: follow a graph file and swap each new valid graph into the router.

The file is polled (stat every ``interval`` seconds, then a content hash when the stat
changed) rather than watched with inotify: polling sees every way the file can be
replaced — the controller's rename, a ConfigMap's symlink swap, an emptyDir on any
filesystem — and costs one stat per half second. A new graph is compiled off the event
loop and swapped in as one reference (``Router.swap``), so requests in flight finish on
the plan they started with. A file that does not compile is logged and the old plan
stays; so does a file that disappears.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from .errors import GraphError
from .loader import load_graph_text
from .plan import GraphPlan, compile_graph

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.5

# What identifies a file version cheaply: device, inode, size, mtime (ns).
_Stamp = tuple[int, int, int, int]


class PlanTarget(Protocol):
    """Where new plans go: ``server.Router`` is one."""

    def swap(self, plan: GraphPlan) -> None: ...

    def reload_failed(self) -> None: ...


class GraphFileReloader:
    """Loads ``path`` into plans; ``run(router)`` keeps the router on the file's latest valid graph.

    name, services: as for ``serve`` (graph name override, serviceName -> URL map).
    interval: seconds between polls.
    """

    def __init__(self, path: str | Path, *, name: str | None = None,
                 services: Mapping[str, str] | None = None, interval: float = DEFAULT_INTERVAL) -> None:
        self.path = Path(path)
        self._name = name
        self._services = dict(services or {})
        self.interval = interval
        self._stamp: _Stamp | None = None
        self._digest: bytes | None = None
        self._missing_logged = False
        self.swaps = 0
        self.rejected = 0

    def load_initial(self) -> GraphPlan | None:
        """The plan to start with, or None (logged) when the file is missing or invalid."""
        plan = self._poll()
        if plan is None and self._digest is None:
            logger.warning("%s: no valid graph yet; /readyz answers 503 until there is one", self.path)
        return plan

    async def run(self, target: PlanTarget) -> None:
        """Poll until cancelled, swapping each new valid plan into ``target``."""
        logger.info("reloading %s every %.1fs", self.path, self.interval)
        while True:
            await asyncio.sleep(self.interval)
            rejected = self.rejected
            try:
                plan = await asyncio.to_thread(self._poll)
            except Exception:  # a bug must not end reloading for the life of the pod
                logger.exception("%s: reload check failed; keeping the current graph", self.path)
                continue
            if self.rejected != rejected:
                target.reload_failed()
            if plan is not None:
                target.swap(plan)
                self.swaps += 1
                logger.info("%s: now serving graph %r", self.path, plan.name)

    def _poll(self) -> GraphPlan | None:
        """A plan when the file holds new, valid content; None otherwise. Blocking."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self._missing_logged and self._digest is not None:
                logger.warning("%s: file is gone; keeping the current graph", self.path)
            self._missing_logged = True
            self._stamp = None
            return None
        except OSError as exc:
            logger.error("%s: cannot stat graph file: %s; keeping the current graph", self.path, exc)
            return None
        self._missing_logged = False
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return None
        try:
            content = self.path.read_bytes()
        except OSError as exc:
            logger.error("%s: cannot read graph file: %s; keeping the current graph", self.path, exc)
            return None
        self._stamp = stamp
        digest = hashlib.sha256(content).digest()
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            text = content.decode("utf-8")
            return compile_graph(load_graph_text(text, origin=str(self.path), name=self._name), self._services)
        except (GraphError, UnicodeDecodeError) as exc:
            self.rejected += 1
            logger.error("%s: new content is not a valid graph; keeping the current graph:\n%s", self.path, exc)
            return None
