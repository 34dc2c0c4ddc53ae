"""List-then-watch of one kind of resource, kept as an in-memory cache.

The loop: list, then watch from the listed resourceVersion. Every event, BOOKMARK
included, moves the resourceVersion on; a watch that ends normally resumes from there.
410 Gone lists again. A dropped connection or an API error reconnects after a capped,
jittered backoff, resuming from the last resourceVersion when it has one. A full relist
every ``resync_seconds`` catches anything missed.

The client is synchronous, so each watch request runs in its own thread, which hands
events to the asyncio loop through a queue; lists run through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .kube import ApiError, ConnectionLost, KubeClient, KubeError, Resource, ResourceGone, WatchStream
from .settings import WatchSettings

logger = logging.getLogger(__name__)

# A watch that ends normally this soon with no event is treated like an error for backoff:
# otherwise a server that closes every watch at once would be polled in a tight loop.
MIN_QUIET_WATCH_SECONDS = 1.0


def backoff_delay(attempt: int, settings: WatchSettings, rng: random.Random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): doubling, capped, half of it jittered."""
    cap = min(settings.backoff_max, settings.backoff_initial * float(1 << min(attempt, 30)))
    return cap / 2 + rng.uniform(0, cap / 2)


@dataclass(frozen=True, slots=True)
class _StreamEnd:
    """Posted by a watch thread when its request is over; ``error`` if it failed."""

    error: BaseException | None


def object_key(obj: dict[str, Any]) -> str | None:
    name = (obj.get("metadata") or {}).get("name")
    return name if isinstance(name, str) else None


class Watcher:
    """Keeps ``objects`` (name -> object) in step with the API server and says when it changes.

    ``synced`` turns True after the first successful list: only then does an absent name
    mean the object does not exist. ``on_change(name)`` is called on the loop after every
    event that adds, changes or deletes an object, and ``on_change(None)`` after a list.
    """

    def __init__(self, kube: KubeClient, resource: Resource, namespace: str, settings: WatchSettings,
                 on_change: Callable[[str | None], None], *, field_selector: str | None = None,
                 rng: random.Random | None = None) -> None:
        self._kube = kube
        self._resource = resource
        self._namespace = namespace
        self._settings = settings
        self._on_change = on_change
        self._field_selector = field_selector
        self._rng = rng or random.Random()
        self.objects: dict[str, dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.synced = False
        self.lists = 0
        self.watches = 0
        self._threads: set[threading.Thread] = set()

    def __repr__(self) -> str:
        return f"Watcher({self._resource} in {self._namespace!r})"

    async def run(self) -> None:
        """Run until cancelled; never returns otherwise and never raises KubeError."""
        loop = asyncio.get_running_loop()
        failures = 0
        recently_gone = False
        next_resync = 0.0
        try:
            while True:
                try:
                    if self.resource_version is None or loop.time() >= next_resync:
                        await self._relist()
                        next_resync = loop.time() + self._settings.resync_seconds
                        failures = 0
                    started = loop.time()
                    budget = max(1, min(self._settings.watch_timeout_seconds,
                                        int(next_resync - loop.time()) + 1))
                    events = await self._watch(budget)
                    recently_gone = False
                    if events == 0 and loop.time() - started < MIN_QUIET_WATCH_SECONDS:
                        failures += 1
                        await asyncio.sleep(backoff_delay(failures - 1, self._settings, self._rng))
                    else:
                        failures = 0
                except ResourceGone:
                    # The server answered, so it is healthy: relist at once, unless the
                    # version from a fresh list is already gone too (then back off).
                    logger.info("%r: resourceVersion %s is gone (410); listing again", self, self.resource_version)
                    self.resource_version = None
                    if recently_gone:
                        await asyncio.sleep(backoff_delay(failures, self._settings, self._rng))
                        failures += 1
                    else:
                        failures = 0
                    recently_gone = True
                except KubeError as exc:
                    delay = backoff_delay(failures, self._settings, self._rng)
                    failures += 1
                    logger.warning("%r: %s; retrying in %.2fs", self, exc, delay)
                    await asyncio.sleep(delay)
                except Exception:
                    # A bug here (or in the client) must not stop the sidecar for good.
                    delay = backoff_delay(failures, self._settings, self._rng)
                    failures += 1
                    logger.exception("%r: unexpected error; retrying in %.2fs", self, delay)
                    await asyncio.sleep(delay)
        finally:
            await self._join_threads()

    async def _relist(self) -> None:
        result = await asyncio.to_thread(self._kube.list, self._resource, self._namespace, self._field_selector)
        objects = {}
        for obj in result.items:
            key = object_key(obj)
            if key is not None:
                objects[key] = obj
        self.objects = objects
        self.resource_version = result.resource_version
        self.synced = True
        self.lists += 1
        logger.debug("%r: listed %d object(s) at resourceVersion %s", self, len(objects), self.resource_version)
        self._on_change(None)

    async def _watch(self, timeout_seconds: int) -> int:
        """One watch request from ``resource_version``; returns how many events it carried."""
        assert self.resource_version is not None
        stream = self._kube.watch(
            self._resource, self._namespace, resource_version=self.resource_version,
            field_selector=self._field_selector, timeout_seconds=timeout_seconds,
            read_timeout=timeout_seconds + self._settings.read_grace_seconds,
        )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | _StreamEnd] = asyncio.Queue()
        self._threads = {t for t in self._threads if t.is_alive()}
        thread = threading.Thread(target=_pump, args=(stream, loop, queue),
                                  name=f"watch-{self._resource.plural}", daemon=True)
        self._threads.add(thread)
        thread.start()
        self.watches += 1
        count = 0
        try:
            # The server ends the watch after timeout_seconds; the client-side bound is a
            # backstop for one that does not.
            async with asyncio.timeout(timeout_seconds + self._settings.read_grace_seconds):
                while True:
                    item = await queue.get()
                    if isinstance(item, _StreamEnd):
                        if item.error is not None:
                            raise item.error
                        return count
                    count += 1
                    self._apply(item)
        except TimeoutError:
            raise ConnectionLost(f"watch of {self._resource} outlived its timeout") from None
        finally:
            stream.stop()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            logger.warning("%r: %s event without an object; skipped", self, kind)
            return
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            message = str(obj.get("message") or obj.get("reason") or "watch error")
            raise (ResourceGone(code, message) if code == 410 else ApiError(code, message))
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK"):
            logger.warning("%r: unknown watch event type %r; skipped", self, kind)
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if isinstance(rv, str) and rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return
        key = object_key(obj)
        if key is None:
            logger.warning("%r: %s event for an object without a name; skipped", self, kind)
            return
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self._on_change(key)

    async def _join_threads(self) -> None:
        """Wait briefly for watch threads to notice their socket was shut down."""
        for thread in list(self._threads):
            with contextlib.suppress(RuntimeError):
                await asyncio.shield(asyncio.to_thread(thread.join, 2.0))
        self._threads = {t for t in self._threads if t.is_alive()}


def _pump(stream: WatchStream, loop: asyncio.AbstractEventLoop,
          queue: asyncio.Queue[dict[str, Any] | _StreamEnd]) -> None:
    """Thread body: move events from the blocking stream onto the loop's queue."""
    end = _StreamEnd(None)
    try:
        for event in stream:
            loop.call_soon_threadsafe(queue.put_nowait, event)
    except BaseException as exc:  # handed to the loop, which decides
        end = _StreamEnd(exc)
    with contextlib.suppress(RuntimeError):  # the loop may be closed already
        loop.call_soon_threadsafe(queue.put_nowait, end)
