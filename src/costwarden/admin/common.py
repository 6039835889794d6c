"""What every admin module shares: reading a request body, and the answer to every error.

Bodies: at most :data:`MAX_BODY_BYTES` are read (413 past that, refused on the
``Content-Length`` header alone when it says so); the JSON may nest at most
:data:`MAX_JSON_DEPTH` arrays and objects deep (400), which also keeps the standard library's
recursive parser far from Python's recursion limit (a 1,000-deep array was a RecursionError,
so a 500). Numbers with a fraction or exponent are read as :class:`~decimal.Decimal`, so an
amount is exactly what the operator typed.

Errors: :func:`exception_handlers` is the admin app's one table from exception to JSON
answer ``{"error": {"type", "message"}}``. A database that cannot answer (SQLAlchemy's
``DBAPIError`` family -- ``OperationalError``, ``InterfaceError`` --, a pool timeout,
costwarden's ``StorageError``) is a 503 with ``Retry-After`` and one warning line without a
traceback or anything of the database URL; of that family, a value the database cannot take
(``DataError``, e.g. NUL in a PostgreSQL text) is a 400 and a race lost to another writer
(``IntegrityError``) a 409. Redis (the budget counters the live status reads) down or too
slow is a 503 the same way. A 405 names every method of the path in
``Allow``, not only those of the first route that matched it.
"""

from __future__ import annotations

import json
import logging
import re
from decimal import Decimal
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ExceptionHandler

from costwarden.core.errors import (
    AdminApiOff,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    NotSignedIn,
    RequestTooLarge,
    StorageError,
)

logger = logging.getLogger(__name__)

# Who a write through the admin API is audited as (unless the request names an actor).
ACTOR = "admin-api"
MAX_BODY_BYTES = 1024 * 1024
# Admin bodies nest three deep at most (a tier: scope -> limit -> amount).
MAX_JSON_DEPTH = 32
RETRY_AFTER_SECONDS = 5

# A JSON string literal (escapes included), and any run of characters that is no bracket.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


# ------------------------------------------------------------------ bodies


async def read_body(request: Request) -> bytes:
    """The request body, at most MAX_BODY_BYTES; RequestTooLarge past that, read no further."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> RequestTooLarge:
    return RequestTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _too_deep(text: str) -> bool:
    """Whether ``text`` nests arrays and objects more than MAX_JSON_DEPTH deep (brackets in
    strings do not count; malformed text is left to the parser to refuse)."""
    depth = 0
    for ch in _NOT_BRACKETS.sub("", _STRING.sub("", text)):
        if ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def parse_json_object(raw: bytes, *, allowed: set[str] | None = None) -> dict[str, Any]:
    """The JSON object in ``raw`` (UTF-8); decimals stay exact. ``allowed``: its only fields."""
    try:
        text = raw.decode("utf-8")
        if _too_deep(text):
            raise InvalidInput(f"request body is nested more than {MAX_JSON_DEPTH} levels deep")
        data = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except ValueError:  # bad UTF-8 or JSON, or an integer of more digits than Python reads
        raise InvalidInput("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    if allowed is not None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise InvalidInput(
                f"unknown field(s) {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(sorted(allowed))})"
            )
    return data


def count_param(raw: str | None, name: str, *, default: int, most: int) -> int:
    """A query parameter that counts things (a page size, the top n): a whole number from 1
    to ``most``, ``default`` when absent; InvalidInput naming ``name`` otherwise."""
    if raw is None:
        return default
    text = raw.strip()
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise InvalidInput(f"{name} must be a whole number from 1 to {most}")
    return int(text)


async def body_json(request: Request, *, allowed: set[str] | None = None) -> dict[str, Any]:
    """The request's JSON object body (see :func:`read_body`, :func:`parse_json_object`)."""
    return parse_json_object(await read_body(request), allowed=allowed)


# ------------------------------------------------------------------ errors


async def _on_invalid(request: Request, exc: Exception) -> Response:
    return error(400, "invalid_request_error", str(exc))


async def _on_not_signed_in(request: Request, exc: Exception) -> Response:
    return error(401, "authentication_error", str(exc))


async def _on_forbidden(request: Request, exc: Exception) -> Response:
    return error(403, "permission_error", str(exc))


async def _on_admin_off(request: Request, exc: Exception) -> Response:
    return error(403, "admin_disabled", str(exc))


async def _on_not_found(request: Request, exc: Exception) -> Response:
    return error(404, "not_found", str(exc))


async def _on_conflict(request: Request, exc: Exception) -> Response:
    return error(409, "conflict", str(exc))


async def _on_too_large(request: Request, exc: Exception) -> Response:
    return error(413, "request_too_large", str(exc))


def _database_cause(exc: Exception) -> str:
    """What went wrong, for the log: class names only for driver errors, whose text can
    carry the host, database and user (and SQLAlchemy's the statement and parameters)."""
    if isinstance(exc, StorageError):
        return str(exc)  # written by costwarden, never with a URL or secret
    orig = getattr(exc, "orig", None)
    if orig is not None:
        return f"{type(exc).__name__}: {type(orig).__module__}.{type(orig).__name__}"
    return type(exc).__name__


async def _on_database(request: Request, exc: Exception) -> Response:
    logger.warning(
        "admin %s %s answered 503: database unavailable (%s)",
        request.method,
        request.url.path,
        _database_cause(exc),
    )
    return error(
        503,
        "service_unavailable",
        "the database is unavailable; nothing was changed, try again shortly",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )


async def _on_counters(request: Request, exc: Exception) -> Response:
    # Redis (the budget counters) down or too slow: the live status reads it. Its errors'
    # text can carry the host, so the log line names the class only.
    logger.warning(
        "admin %s %s answered 503: budget counters (Redis) unavailable (%s)",
        request.method,
        request.url.path,
        type(exc).__name__,
    )
    return error(
        503,
        "service_unavailable",
        "the budget counters are unavailable; nothing was changed, try again shortly",
        headers={"retry-after": str(RETRY_AFTER_SECONDS)},
    )


async def _on_data(request: Request, exc: Exception) -> Response:
    # A value the database cannot store or compare (PostgreSQL text cannot hold NUL).
    return error(400, "invalid_request_error", "the database cannot take a value given here")


async def _on_integrity(request: Request, exc: Exception) -> Response:
    # Another writer got there first (e.g. created the same org at the same moment).
    return error(409, "conflict", "a concurrent change conflicts with this one; try again")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of this path serves (a path can have one route per method)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is not Match.NONE:
                methods |= route.methods
    return sorted(methods)


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["allow"] = ", ".join(_allowed_methods(request))
        headers.pop("Allow", None)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return error(exc.status_code, kind, message, headers=headers or None)


def exception_handlers() -> dict[Any, ExceptionHandler]:
    """The admin app's answer to every error it expects (anything else stays a 500)."""
    return {
        InvalidInput: _on_invalid,
        NotFound: _on_not_found,
        NotSignedIn: _on_not_signed_in,
        Forbidden: _on_forbidden,
        AdminApiOff: _on_admin_off,
        Conflict: _on_conflict,
        RequestTooLarge: _on_too_large,
        DBAPIError: _on_database,  # OperationalError, InterfaceError, ...
        DataError: _on_data,
        IntegrityError: _on_integrity,
        PoolTimeout: _on_database,
        StorageError: _on_database,
        RedisError: _on_counters,
        HTTPException: _on_http,
    }
