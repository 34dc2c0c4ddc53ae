"""The extensions annotation's LLM fields: ``openai`` and ``fallback`` per step, ``budgets`` on top."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class Fallback(_Strict):
    """One alternative target, tried when the one before failed before its first byte."""

    service_url: str = Field(alias="serviceUrl")
    request: Any = None


class TenantLimits(_Strict):
    """A tenant's limits; an absent limit is no limit."""

    requests_per_second: float | None = Field(default=None, alias="requestsPerSecond", gt=0)
    tokens_per_minute: int | None = Field(default=None, alias="tokensPerMinute", gt=0)


class BudgetsConfig(_Strict):
    """Top-level ``budgets``: per-tenant request rate and tokens per minute."""

    tenant_header: str = Field(default="X-Tenant", alias="tenantHeader", min_length=1)
    default: TenantLimits = Field(default_factory=TenantLimits)
    tenants: dict[str, TenantLimits] = Field(default_factory=dict)
