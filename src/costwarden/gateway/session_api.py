"""``GET /v1/costwarden/session/{id}``: an agent's own view of its session, with its virtual
key (no admin token), so an agent UI can bootstrap after a reload: state, budget_pct,
wake_at, its budgets, usage and open escalation (``storage.session_view``: the admin API's
view, the same figures).

A session is read only with the key that runs it: another key, of the same org or not, gets
the 404 an unknown session gets (whether a session exists is not told to other tenants). A
session id is what the ``x-costwarden-session`` header can carry (1 to 200 characters, no
control characters): anything else is a 400.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import orjson
from sqlalchemy.exc import SQLAlchemyError

from costwarden.budgets.enforcer import Enforcer
from costwarden.core.errors import AuthenticationFailed, BadRequest, GatewayError, InvalidInput
from costwarden.gateway.asgi import JSON, Scope, Send, send_bytes
from costwarden.gateway.auth import KeyCache
from costwarden.gateway.errors import error_body
from costwarden.sessions.lifecycle import clean_session_id
from costwarden.storage.db import Bind
from costwarden.storage.session_view import session_view

PREFIX = "/v1/costwarden/session/"
logger = logging.getLogger(__name__)


class SessionNotFound(GatewayError):
    status = 404
    type = "not_found"
    code = "session_not_found"


class Unavailable(GatewayError):
    status = 503
    type = "service_unavailable"
    code = "database_unavailable"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


async def serve(
    scope: Scope,
    send: Send,
    *,
    keys: KeyCache,
    engine: Bind,
    enforcer: Enforcer,
    timezone: str,
    clock: Callable[[], float],
) -> None:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    try:
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET", headers={"allow": "GET, HEAD"})
        key = keys.from_headers(headers, scope, "session")
        if key is None:
            raise AuthenticationFailed("invalid or missing API key")
        try:
            session_id = clean_session_id(scope["path"][len(PREFIX) :])
        except InvalidInput as exc:
            raise BadRequest(str(exc), param="session_id") from None
        try:
            view = await session_view(
                engine, enforcer.book, enforcer.store, timezone, key.org_id, session_id, clock()
            )
        except SQLAlchemyError as exc:
            logger.warning("session view: the database cannot answer (%s)", type(exc).__name__)
            raise Unavailable(
                "the database cannot be reached; retry shortly", headers={"retry-after": "5"}
            ) from None
        if view is None or view.key_id != key.id:
            raise SessionNotFound(f"no session {session_id!r} of this key")
    except GatewayError as exc:
        extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
        await send_bytes(
            send, exc.status, error_body("openai", exc), [(b"content-type", JSON), *extra]
        )
        return
    await send_bytes(send, 200, orjson.dumps(view.to_json()), [(b"content-type", JSON)])
