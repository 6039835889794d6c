"""The service's status as a client app sees it, for its degradation banner (issue 19).

- ``GET /v1/costwarden/status``: with the app's virtual key (``Authorization: Bearer`` or
  ``x-api-key``, as the proxy takes it): ``{"status": "ok" | "degraded" | "disabled",
  "message", "reasons", "budget", "checked_at"}``, the policy of
  :mod:`costwarden.budgets.client_status` applied to the key's org's switches, every
  deployment's breaker and the key's budgets. No key, an unknown, revoked or honeypot key:
  the proxy's 401.
- ``GET /v1/costwarden/status/events``: the same as server-sent events: an ``event: status``
  frame at once, then one whenever it changes. Changes are seen on the event bus
  (``switch_changed``, ``breaker_changed``, ``limit_threshold_crossed`` of the key's own org
  or platform-wide; another org's events are not even looked at), and the status is also
  recomputed with each keep-alive comment (every :data:`KEEPALIVE_SECONDS`), which catches a
  window's reset or a limit edited. A closed connection ends the subscription.
- ``GET /v1/costwarden/banner.js``: the ``<costwarden-banner>`` web component (no key;
  cacheable).

Browsers on another origin may call the first two (a key, never a cookie, authenticates):
they answer CORS preflights and carry ``access-control-allow-origin: *``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from costwarden.budgets.client_status import (
    FEATURES,
    SHOWN_SCOPES,
    ClientStatus,
    client_status,
    tightest_budget,
)
from costwarden.budgets.enforcer import Enforcer
from costwarden.budgets.limits import Principal
from costwarden.budgets.policy import checks_for
from costwarden.budgets.status import LimitStatus, statuses_of
from costwarden.budgets.windows import iso
from costwarden.core.errors import AuthenticationFailed, GatewayError
from costwarden.core.event_kinds import BreakerChanged, Event, LimitThresholdCrossed, SwitchChanged
from costwarden.core.events import EventBus
from costwarden.core.records import KeyRecord
from costwarden.gateway.asgi import JSON, Receive, Scope, Send, send_bytes
from costwarden.gateway.auth import KeyCache, key_from_headers
from costwarden.gateway.errors import error_body
from costwarden.gateway.switches import SwitchBoard
from costwarden.routing.breakers import BreakerBoard

PATH = "/v1/costwarden/status"
EVENTS_PATH = PATH + "/events"
BANNER_PATH = "/v1/costwarden/banner.js"
ROUTES = frozenset({PATH, EVENTS_PATH, BANNER_PATH})

# Read per stream (tests lower them).
KEEPALIVE_SECONDS = 15.0
WRITE_TIMEOUT_SECONDS = 10.0
# After a change is seen, how long (and how often) the status is looked at again: another
# process's switch write reaches this one's switch board within its refresh interval.
SETTLE_SECONDS = 3.0
SETTLE_STEP_SECONDS = 0.5

KINDS = frozenset({SwitchChanged.kind, BreakerChanged.kind, LimitThresholdCrossed.kind})
_CORS = [
    (b"access-control-allow-origin", b"*"),
    (b"vary", b"origin"),
]
_PREFLIGHT = [
    *_CORS,
    (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
    (b"access-control-allow-headers", b"authorization, x-api-key, anthropic-version"),
    (b"access-control-max-age", b"600"),
]
_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    *_CORS,
]

logger = logging.getLogger(__name__)


class Sources(Protocol):
    """What the handlers read (the app holds each)."""

    @property
    def keys(self) -> KeyCache: ...
    @property
    def switches(self) -> SwitchBoard: ...
    @property
    def breakers(self) -> BreakerBoard: ...
    @property
    def enforcer(self) -> Enforcer: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def clock(self) -> Callable[[], float]: ...


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


async def serve(scope: Scope, receive: Receive, send: Send, src: Sources) -> None:
    path = scope["path"]
    method = scope["method"]
    if method == "OPTIONS":
        await send_bytes(send, 204, b"", list(_PREFLIGHT))
        return
    headers: dict[bytes, bytes] = dict(scope["headers"])
    wire = "anthropic" if b"anthropic-version" in headers else "openai"
    try:
        if method not in ("GET", "HEAD"):
            raise MethodNotAllowed("use GET", headers={"allow": "GET, HEAD"})
        if path == BANNER_PATH:
            await _banner(send)
            return
        key = authenticate(src.keys, headers, scope)
    except GatewayError as exc:
        extra = [(k.encode(), v.encode()) for k, v in exc.headers.items()]
        body = error_body(wire, exc)
        await send_bytes(send, exc.status, body, [(b"content-type", JSON), *_CORS, *extra])
        return
    if path == EVENTS_PATH:
        if method == "HEAD":  # the stream's headers, no stream
            await send_bytes(send, 200, b"", list(_SSE))
        else:
            await _stream(receive, send, src, key)
        return
    body = orjson.dumps(await _current(src, key))
    await send_bytes(
        send, 200, body, [(b"content-type", JSON), (b"cache-control", b"no-store"), *_CORS]
    )


def authenticate(keys: KeyCache, headers: dict[bytes, bytes], scope: Scope) -> KeyRecord:
    """The live key of the request, or the proxy's own 401 (honeypots: as unknown keys)."""
    key = keys.from_headers(headers, scope, "status")
    if key is not None:
        return key
    token = key_from_headers(headers)
    if token is None:
        raise AuthenticationFailed(
            "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        )
    found = keys.lookup(token)
    if found is not None and found.revoked and not found.honeypot:
        raise AuthenticationFailed("this API key has been revoked")
    raise AuthenticationFailed("invalid API key")


# ---------------------------------------------------------------------- the status


async def status_of(src: Sources, key: KeyRecord) -> ClientStatus:
    refusals: dict[str, str | None] = {}
    for feature in FEATURES:
        stream = feature == "streaming"
        endpoint = "chat.completions" if stream else feature
        off = src.switches.refusal(key.org_id, endpoint, stream)
        refusals[feature] = None if off is None else off.message
    breakers = src.breakers
    states = [breakers.state(d) for d in breakers.deployments]
    return client_status(refusals, states, await _budget(src, key))


async def _budget(src: Sources, key: KeyRecord) -> LimitStatus | None:
    """The key's tightest budget, from the counters the gateway enforces with (as the admin
    API's live status reads them); None when none applies or the counters cannot be read."""
    enforcer = src.enforcer
    principal = Principal(key.org_id, key.project_id, key.id)
    limits = [
        lim
        for lim in enforcer.book.applicable(principal)
        if lim.scope in SHOWN_SCOPES and lim.metric == "usd" and not lim.rolling
    ]
    if not limits:
        return None
    now = src.clock()
    checks = checks_for(limits, now, enforcer.tz)
    try:
        views = await enforcer.store.views(checks, now)
    except Exception as exc:  # the status still answers, without its budget
        logger.warning("status: budget counters unreadable (%s)", type(exc).__name__)
        return None
    return tightest_budget(statuses_of(checks, views))


async def _current(src: Sources, key: KeyRecord) -> dict[str, Any]:
    status = await status_of(src, key)
    return status.to_json(iso(src.clock()) or "")


# ---------------------------------------------------------------------- the stream


def concerns(event: Event, org_id: str) -> bool:
    """Whether an event can change the status of ``org_id``'s keys: its own org's or a
    platform-wide one (breakers, platform switches)."""
    return event.payload.org_id is None or event.payload.org_id == org_id


def _frame(status: dict[str, Any]) -> bytes:
    return b"event: status\ndata: %s\n\n" % orjson.dumps(status)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _stream(receive: Receive, send: Send, src: Sources, key: KeyRecord) -> None:
    # A background subscription of the three kinds: they are delivered at once, and a
    # banner's stream does not make every request's event cost an early log write.
    subscription = src.events.subscribe(kinds=KINDS, background=True)
    gone = asyncio.create_task(_disconnected(receive))
    try:
        await send({"type": "http.response.start", "status": 200, "headers": list(_SSE)})
        sent = await _current(src, key)
        await _write(send, _frame(sent))
        loop = asyncio.get_running_loop()
        ping_at = loop.time() + KEEPALIVE_SECONDS
        settle_until = 0.0
        while True:
            now = loop.time()
            wait = ping_at - now
            if settle_until > now:
                wait = min(wait, SETTLE_STEP_SECONDS)
            got = asyncio.ensure_future(subscription.get(timeout=max(0.0, wait)))
            await asyncio.wait({got, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                got.cancel()
                break
            try:
                event = got.result()
            except StopAsyncIteration:  # the bus is closing, or this stream fell behind
                break
            if event is not None:
                if not concerns(event, key.org_id):
                    continue
                settle_until = loop.time() + SETTLE_SECONDS
            current = await _current(src, key)
            if _same(current, sent):
                if loop.time() >= ping_at:
                    await _write(send, b": keep-alive\n\n")
                    ping_at = loop.time() + KEEPALIVE_SECONDS
                continue
            await _write(send, _frame(current))
            sent = current
            ping_at = loop.time() + KEEPALIVE_SECONDS
        if not gone.done():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except TimeoutError:
        logger.warning(
            "a status stream client stopped reading for %.0fs: dropped", WRITE_TIMEOUT_SECONDS
        )
    except OSError:  # the connection went while writing
        pass
    finally:
        subscription.close()
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {**a, "checked_at": None} == {**b, "checked_at": None}


async def _write(send: Send, chunk: bytes) -> None:
    async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})


# ---------------------------------------------------------------------- the component

_script: bytes | None = None
_etag = b""


def banner_script() -> bytes:
    """The web component's source, read from the package once."""
    global _script, _etag
    if _script is None:
        source = importlib.resources.files("costwarden").joinpath("static/costwarden-banner.js")
        _script = source.read_bytes()
        _etag = b'"%s"' % hashlib.sha256(_script).hexdigest()[:16].encode()
    return _script


async def _banner(send: Send) -> None:
    script = banner_script()
    await send_bytes(
        send,
        200,
        script,
        [
            (b"content-type", b"text/javascript; charset=utf-8"),
            (b"cache-control", b"public, max-age=3600"),
            (b"etag", _etag),
            (b"x-content-type-options", b"nosniff"),
            *_CORS,
        ],
    )

