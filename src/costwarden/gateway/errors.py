"""Rendering errors per wire format (the error contract: docs/errors.md)."""

from __future__ import annotations

from typing import Any

import orjson

from costwarden.core.errors import GatewayError


def error_body(wire: str, exc: GatewayError) -> bytes:
    if wire == "anthropic":
        error: dict[str, Any] = {"type": exc.type, "message": exc.message}
        error.update(exc.extra)
        return orjson.dumps({"type": "error", "error": error})
    body: dict[str, Any] = {
        "message": exc.message,
        "type": exc.type,
        "param": exc.param,
        "code": exc.code,
    }
    body.update(exc.extra)
    return orjson.dumps({"error": body})
