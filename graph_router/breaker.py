"""Circuit breaking per service: stop calling a service that keeps failing, probe it later.

A service (scheme, host, port) that fails ``threshold`` times in a row (transport
errors, or 502/503/504 answers) is *open* for ``cooldown`` seconds: its calls fail at
once with 503 instead of piling up behind timeouts. After the cooldown one call is let
through (*half-open*); its success closes the circuit, its failure opens it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BREAKING_STATUSES = frozenset({502, 503, 504})


@dataclass(slots=True)
class _State:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class CircuitBreakers:
    """The breakers of every service one process calls; ``threshold`` 0 turns them off."""

    def __init__(self, threshold: int, cooldown: float, clock: Callable[[], float]) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._states: dict[object, _State] = {}

    def allow(self, key: object) -> bool:
        """Whether a call to ``key`` may go out now."""
        state = self._states.get(key)
        if state is None or state.failures < self.threshold or self.threshold == 0:
            return True
        if self._clock() < state.open_until or state.probing:
            return False
        state.probing = True  # half-open: this call is the probe
        return True

    def record(self, key: object, ok: bool) -> None:
        """The outcome of a call that was allowed."""
        if self.threshold == 0:
            return
        state = self._states.get(key)
        if ok:
            if state is not None:
                state.failures = 0
                state.probing = False
            return
        if state is None:
            state = self._states[key] = _State()
        state.failures += 1
        state.probing = False
        if state.failures >= self.threshold:
            state.open_until = self._clock() + self.cooldown

    def is_open(self, key: object) -> bool:
        """Whether calls to ``key`` would fail fast now (read-only: claims no probe)."""
        state = self._states.get(key)
        if state is None or self.threshold == 0 or state.failures < self.threshold:
            return False
        return self._clock() < state.open_until or state.probing

    def retry_after(self, key: object) -> float:
        """Seconds until the circuit of ``key`` lets a probe through."""
        state = self._states.get(key)
        return max(0.0, state.open_until - self._clock()) if state is not None else 0.0
