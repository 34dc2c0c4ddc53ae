"""The OpenAI wire conventions the demo services share: JSON bodies in, error objects out.

Every demo service answers a failure the way OpenAI-compatible servers (vLLM among
them) do, ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx status,
so a client written for those servers reads our errors too. Handlers raise
:class:`BadRequest`; one middleware writes the body.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BadRequest(Exception):
    """The request cannot be served as sent: the status and the message the client gets."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


def error_response(status: int, message: str, param: str | None = None) -> web.Response:
    """An OpenAI-style error body."""
    kind = "invalid_request_error" if status < 500 else "internal_server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """BadRequest and aiohttp's own 404/405 become OpenAI-style JSON errors."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return error_response(exc.status, exc.message, exc.param)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, f"{request.method} {request.path}: {exc.reason}")


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; anything else is a 400 that says what was wrong."""
    raw = await request.read()
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(doc).__name__}")
    return doc


def new_app() -> web.Application:
    """An application with the shared error middleware installed."""
    return web.Application(middlewares=[error_middleware])
