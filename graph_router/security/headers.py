"""A graph's header policy (the annotation's ``headers``) on top of ``PROPAGATE_HEADERS``.

Built once per plan; a graph without a policy gets the plain
:class:`~graph_router.headers.HeaderPropagator`, so its request path is unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping

from multidict import CIMultiDict

from ..headers import HeaderPropagator, canonical_name
from .models import HeaderPolicy

logger = logging.getLogger(__name__)


class FileValue:
    """A header value read from a file (a mounted token), reread when the file changes.

    The file's identity is looked at most every ``check_seconds``; a file that cannot be
    read keeps the last value (and is logged), so a rotation never empties the header.
    """

    def __init__(self, path: str, *, check_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.check_seconds = check_seconds
        self._clock = clock
        self._identity: tuple[int, int, int] | None = None
        self._value = ""
        self._checked = float("-inf")
        self.get()  # an unreadable file is logged; the header is left out until it can be read

    def get(self) -> str:
        now = self._clock()
        if now - self._checked < self.check_seconds:
            return self._value
        self._checked = now
        try:
            st = os.stat(self.path)
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
            if identity != self._identity:
                with open(self.path, encoding="utf-8") as f:
                    value = f.read().strip()
                if any(c in value for c in "\r\n\0"):
                    raise ValueError("the value holds CR, LF or NUL")
                self._value, self._identity = value, identity
        except (OSError, ValueError) as exc:
            logger.warning("header value file %s unusable, keeping the last value: %s", self.path, exc)
        return self._value


class PolicyPropagator(HeaderPropagator):
    """``PROPAGATE_HEADERS`` plus the graph's ``propagate``, minus its ``drop``, plus its ``set``."""

    def __init__(self, patterns: str | None, policy: HeaderPolicy) -> None:
        super().__init__(patterns)
        self._patterns = self._patterns + tuple(re.compile(p) for p in policy.propagate)
        self._drop = tuple(re.compile(p) for p in policy.drop)
        self._fixed: list[tuple[str, str]] = []
        self._files: list[tuple[str, FileValue]] = []
        for name, value in policy.set.items():
            if value.startswith("@"):
                self._files.append((name, FileValue(value[1:])))
            else:
                self._fixed.append((name, value))

    def wanted(self, name: str) -> bool:
        decision = self._decisions.get(name)
        if decision is None:
            if self._drop and any(d.search(canonical_name(name)) for d in self._drop):
                decision = False
                self._decisions[name] = False
            else:
                decision = super().wanted(name)
        return decision

    def select(self, incoming: Mapping[str, str] | Iterable[tuple[str, str]]) -> CIMultiDict[str]:
        selected = super().select(incoming)
        out: CIMultiDict[str] = CIMultiDict()
        for name, value in selected.items():
            # The trace-context-only path skipped drop rules. (str(): compiled, wanted takes exactly str.)
            if self._patterns or self.wanted(str(name)):
                out.add(name, value)
        for name, value in self._fixed:
            out[name] = value
        for name, file in self._files:
            value = file.get()
            if value:
                out[name] = value
        return out


def graph_propagator(patterns: str | None, policy: HeaderPolicy | None) -> HeaderPropagator:
    """The propagator for one graph: the plain one when it has no header policy."""
    if policy is None:
        return HeaderPropagator(patterns)
    return PolicyPropagator(patterns, policy)
