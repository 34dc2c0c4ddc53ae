"""The annotation's security sections (``headers``, ``tls``, ``logger``), checked at load.

They live here rather than in extensions.py so that module stays a list of fields.
"""

from __future__ import annotations

import re
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from ..http1.rules import HOP_BY_HOP


class _Strict(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


def _regexes(patterns: list[str]) -> list[str]:
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"{p!r} is not a regular expression: {exc}") from None
    return patterns


class HeaderPolicy(_Strict):
    """Which headers reach this graph's steps (kserve#2693).

    ``propagate`` adds patterns to ``PROPAGATE_HEADERS``; ``drop`` wins over both (and
    over the trace context); ``set`` adds fixed headers to every step call, a value
    ``@/path`` being the file's content (a service token), reread when it changes.
    Patterns match the canonical header name (``X-Request-Id``), unanchored, as KServe's.
    """

    propagate: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    set: dict[str, str] = Field(default_factory=dict)

    _check_propagate = pydantic.field_validator("propagate")(_regexes)
    _check_drop = pydantic.field_validator("drop")(_regexes)

    @pydantic.field_validator("set")
    @classmethod
    def _settable(cls, values: dict[str, str]) -> dict[str, str]:
        for name, value in values.items():
            if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
                raise ValueError(f"{name!r} is not a header name")
            if name.lower() in HOP_BY_HOP | {"host", "content-length", "content-type", "expect"}:
                raise ValueError(f"{name!r} is managed by the router and cannot be set")
            if value.startswith("@") and len(value) < 2:
                raise ValueError(f"{name}: '@' must be followed by a file path")
            if any(c in value for c in "\r\n\0"):
                raise ValueError(f"{name}: a header value cannot hold CR, LF or NUL")
        return values


class TLSSpec(_Strict):
    """How the router calls an https:// step: a private CA, a client certificate (mTLS), SNI."""

    ca_file: str | None = Field(default=None, alias="caFile")
    cert_file: str | None = Field(default=None, alias="certFile")
    key_file: str | None = Field(default=None, alias="keyFile")
    server_name: str | None = Field(default=None, alias="serverName")
    insecure_skip_verify: bool = Field(default=False, alias="insecureSkipVerify")

    @pydantic.model_validator(mode="after")
    def _pair(self) -> TLSSpec:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both certFile and keyFile (or neither)")
        return self


class LoggerSpec(_Strict):
    """Payload logging (kserve#2722): each selected step's request and answer as CloudEvents."""

    url: str
    mode: Literal["all", "request", "response", "failures"] = "all"
    sample: float = Field(default=1.0, ge=0, le=1)

    @pydantic.field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return url
