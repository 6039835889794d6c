"""The admission stages of the request path, in order, before any upstream is called.

A stage is a callable over the :class:`~costwarden.gateway.state.RequestState`: it reads
what the stages before it left, adds its part, and refuses the request by raising a
``GatewayError`` (the pipeline records and answers it). A stage that must wait returns an
awaitable; most return None and cost one call. :func:`admission` builds the list once, at
startup; a capability that acts on requests before the upstream (the prompt scan, the
response cache) is one more stage in that list, not an edit of the handler.

After admission the proxy runs the call stages: route/failover (limits and the budget
reservation for each candidate, breakers, retries, fallbacks), relay, settle, record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from costwarden.core.errors import AuthenticationFailed, ModelNotFound
from costwarden.gateway.asgi import read_body
from costwarden.gateway.auth import KeyCache, key_from_headers
from costwarden.gateway.state import RequestState
from costwarden.gateway.switches import SwitchBoard
from costwarden.gateway.validate import principal_fields, validate_payload
from costwarden.routing.chains import Route

Stage = Callable[[RequestState], Awaitable[None] | None]


class Authenticate:
    """The virtual key -> the request's org, project and key. An unknown key is refused
    without a ledger row (there is no one to bill); a revoked one with one; a honeypot
    exactly as an unknown one."""

    __slots__ = ("_keys",)

    def __init__(self, keys: KeyCache) -> None:
        self._keys = keys

    def __call__(self, state: RequestState) -> None:
        token = key_from_headers(state.headers)
        if token is None:
            raise AuthenticationFailed(
                "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
            )
        key = self._keys.lookup(token)
        if key is None:
            raise AuthenticationFailed("invalid API key")
        if key.honeypot:
            # Answered exactly as an unknown key (no row, the same error), its use handed
            # to the trap without I/O or await (gateway/honeypot.py).
            if (trap := self._keys.trap) is not None:
                trap.caught(
                    key, state.scope, state.headers, state.endpoint, state.record.request_id,
                    state.receive,
                )  # fmt: skip
            raise AuthenticationFailed("invalid API key")
        record = state.record
        record.org_id = key.org_id
        record.project_id = key.project_id
        record.key_id = key.id
        state.key = key
        state.known = True
        if key.revoked:
            record.status = "auth_error"
            raise AuthenticationFailed("this API key has been revoked")


class ReadBody:
    """The whole body, within ``max_body_bytes`` (413 as soon as it is known to be over)."""

    __slots__ = ("_limit",)

    def __init__(self, max_body_bytes: int) -> None:
        self._limit = max_body_bytes

    async def __call__(self, state: RequestState) -> None:
        state.body = await read_body(state.receive, state.headers, self._limit)


def validate(state: RequestState) -> None:
    """The payload (400 for what the gateway relies on) and who pays: end user, session, tags."""
    payload = state.payload = validate_payload(state.endpoint, state.body)
    record = state.record
    record.end_user, record.session_id, record.tags = principal_fields(
        state.endpoint, payload, state.headers
    )
    record.requested_model = payload["model"]
    stream = state.stream = state.endpoint != "embeddings" and payload.get("stream") is True
    record.streamed = stream


class Switches:
    """The kill switch and feature toggles (503 with the operator's message)."""

    __slots__ = ("_board",)

    def __init__(self, board: SwitchBoard) -> None:
        self._board = board

    def __call__(self, state: RequestState) -> None:
        off = self._board.refusal(state.record.org_id, state.endpoint, state.stream)
        if off is not None:
            state.record.status = "blocked"
            raise off


class Resolve:
    """The public model name -> its route (404 naming the models served)."""

    __slots__ = ("_routes",)

    def __init__(self, routes: dict[str, Route]) -> None:
        self._routes = routes  # updated in place by the route table

    def __call__(self, state: RequestState) -> None:
        model = state.payload["model"]
        route = self._routes.get(model)
        if route is None:
            available = sorted(self._routes)
            raise ModelNotFound(
                f"model {model!r} is not served by this gateway; available: "
                + ", ".join(available),
                param="model",
                extra={"available": available},
            )
        state.route = route


def admission(
    keys: KeyCache,
    switches: SwitchBoard,
    routes: dict[str, Route],
    max_body_bytes: int,
    sessions: Stage | None = None,
    security: Stage | None = None,
    cache: Stage | None = None,
) -> list[Stage]:
    """The admission stages, in the order a request meets them (``sessions``: the agent
    sessions' gate, when the app has a session board; ``security``: the prompt scan, when
    it is on; ``cache``: the response cache, which needs the route and answers a hit)."""
    return [
        Authenticate(keys),
        ReadBody(max_body_bytes),
        validate,
        Switches(switches),
        *([sessions] if sessions is not None else []),
        *([security] if security is not None else []),
        Resolve(routes),
        *([cache] if cache is not None else []),
    ]
