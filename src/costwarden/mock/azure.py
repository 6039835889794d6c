"""Azure OpenAI's paths on the mock: the OpenAI handlers behind Azure's URL shape, with the
checks Azure makes before it answers (an api-version, a credential)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

# (request, state, call) -> response: the mock's OpenAI handlers.
Inner = Callable[[web.Request, Any, Any], Awaitable[web.StreamResponse]]

PREFIX = "/openai/deployments/{deployment}"


def _error(status: int, code: str, message: str) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(body=body, status=status, content_type="application/json")


def _checked(inner: Inner) -> Inner:
    async def handler(request: web.Request, state: Any, call: Any) -> web.StreamResponse:
        if not request.query.get("api-version"):
            return _error(404, "404", "Resource not found")  # what Azure answers
        if not request.headers.get("api-key") and not request.headers.get(
            "authorization", ""
        ).startswith("Bearer "):
            return _error(
                401,
                "401",
                "Access denied due to missing subscription key. Make sure to include "
                "subscription key when making requests to an API.",
            )
        return await inner(request, state, call)

    return handler


def routes(chat: Inner, embeddings: Inner, models: Inner) -> list[tuple[str, str, str, Inner]]:
    """(method, path, error format, handler) for each Azure OpenAI endpoint."""
    return [
        ("POST", PREFIX + "/chat/completions", "openai", _checked(chat)),
        ("POST", PREFIX + "/embeddings", "openai", _checked(embeddings)),
        ("GET", "/openai/models", "openai", _checked(models)),
    ]
