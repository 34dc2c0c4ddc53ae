"""Tenant budgets: a token bucket for requests per second, a per-minute allowance of LLM tokens.

Counting lives in this process only (see the README): under ``--workers N`` each
worker keeps its own counts, so a tenant can reach N times its limits on one pod,
and M replicas multiply that again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from .config import BudgetsConfig, TenantLimits

DEFAULT_TENANT = "default"
OTHER_TENANT = "other"  # the metrics label of tenants not named in the configuration
MAX_TENANTS = 10_000  # tenants kept at once; idle ones are forgotten past this


class Rejection:
    """Why a tenant's request is turned away, and when to come back (whole seconds)."""

    __slots__ = ("cause", "label", "limit", "retry_after", "tenant")

    def __init__(self, tenant: str, label: str, limit: str, retry_after: int, cause: str) -> None:
        self.tenant = tenant
        self.label = label
        self.limit = limit
        self.retry_after = retry_after
        self.cause = cause


class _Tenant:
    __slots__ = ("limits", "minute", "refilled", "spent", "tokens")

    def __init__(self, limits: TenantLimits, now: float) -> None:
        self.limits = limits
        rate = limits.requests_per_second
        self.tokens = max(1.0, rate) if rate is not None else 0.0  # a bucket holds one second's requests
        self.refilled = now
        self.minute = -1
        self.spent = 0


class Budgets:
    """The graph's budgets; ``admit`` before running a request, ``charge`` when its usage is known."""

    def __init__(self, config: BudgetsConfig, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.header = config.tenant_header.lower()
        self._config = config
        self._clock = clock
        self._wall = wall
        self._tenants: dict[str, _Tenant] = {}

    def tenant_of(self, headers: Iterable[tuple[str, str]]) -> str:
        """The request's tenant: its tenant header, else ``default``."""
        want = self.header
        for name, value in headers:
            if len(name) == len(want) and name.lower() == want:
                return value.strip() or DEFAULT_TENANT
        return DEFAULT_TENANT

    def label(self, tenant: str) -> str:
        """The metrics label: configured tenants by name, every other one as ``other`` (bounded)."""
        if tenant == DEFAULT_TENANT or tenant in self._config.tenants:
            return tenant
        return OTHER_TENANT

    def _state(self, tenant: str, now: float) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            if len(self._tenants) >= MAX_TENANTS:
                self._forget(now)
            limits = self._config.tenants.get(tenant, self._config.default)
            state = self._tenants[tenant] = _Tenant(limits, now)
        return state

    def _forget(self, now: float) -> None:
        """Drop tenants whose bucket is full again and who spent nothing this minute."""
        minute = int(self._wall() // 60)
        for name, state in list(self._tenants.items()):
            if now - state.refilled > 60 and state.minute != minute:
                del self._tenants[name]
        if len(self._tenants) >= MAX_TENANTS:
            self._tenants.clear()

    def admit(self, tenant: str) -> Rejection | None:
        """Take one request from the tenant's budget; a Rejection when there is none left."""
        now = self._clock()
        state = self._state(tenant, now)
        limits = state.limits
        per_minute = limits.tokens_per_minute
        if per_minute is not None:
            wall = self._wall()
            minute = int(wall // 60)
            if state.minute == minute and state.spent >= per_minute:
                wait = max(1, math.ceil((minute + 1) * 60 - wall))
                return Rejection(tenant, self.label(tenant), "tokensPerMinute", wait,
                                 f"tenant {tenant!r} spent its {per_minute} tokens for this minute "
                                 f"(tokensPerMinute)")
        rate = limits.requests_per_second
        if rate is not None:
            capacity = max(1.0, rate)
            tokens = min(capacity, state.tokens + (now - state.refilled) * rate)
            state.refilled = now
            if tokens < 1.0:
                state.tokens = tokens
                wait = max(1, math.ceil((1.0 - tokens) / rate))
                return Rejection(tenant, self.label(tenant), "requestsPerSecond", wait,
                                 f"tenant {tenant!r} is over its {rate:g} requests per second "
                                 f"(requestsPerSecond)")
            state.tokens = tokens - 1.0
        return None

    def charge(self, tenant: str, tokens: int) -> None:
        """Count ``tokens`` against the tenant's current minute."""
        state = self._state(tenant, self._clock())
        minute = int(self._wall() // 60)
        if state.minute != minute:
            state.minute = minute
            state.spent = 0
        state.spent += tokens
