"""Admin API handlers for deployment health, circuit-breaker resets and the live event stream.

- ``GET /admin/health/deployments``: every deployment's breaker as this gateway sees it
  (state, error rate and requests in the window, consecutive failures, last success and
  failure, when it opened and when it will let a probe through).
- ``POST /admin/breakers/{deployment}/reset``: force a breaker closed, in every gateway
  process sharing Redis; audited (``breaker.reset``). Deployment ids are ``provider:model``
  and a model name may contain ``/``, so the route takes the rest of the path up to
  ``/reset``; clients percent-encode the id. Answers the new health entry.
- ``GET /admin/events``: server-sent events (``id:``, ``event:``, ``data:`` with the event's
  JSON), a heartbeat comment after :data:`HEARTBEAT_SECONDS` without an event, resumed from
  the ``Last-Event-ID`` header out of the bus's ring buffer.

Handlers read the admin context (:mod:`costwarden.admin.context`); errors go through the
admin app's handlers (:mod:`costwarden.admin.common`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from costwarden.admin.common import ACTOR, parse_json_object, read_body
from costwarden.admin.context import context
from costwarden.core.errors import InvalidInput
from costwarden.core.events import Event, EventBus

logger = logging.getLogger(__name__)

# Seconds of silence after which an event stream gets a comment line, so proxies and load
# balancers do not time the connection out. Read per request (tests lower it).
HEARTBEAT_SECONDS = 15.0
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def sse_frame(event: Event) -> bytes:
    """One server-sent event: ``id``, ``event`` (the kind) and ``data`` (the JSON data)."""
    data = orjson.dumps(event.data).decode()
    return f"id: {event.id}\nevent: {event.kind}\ndata: {data}\n\n".encode()


async def event_stream(
    bus: EventBus, after: int | None, heartbeat_seconds: float
) -> AsyncIterator[bytes]:
    """Frames of the events after ``after`` (replayed), then live ones, with heartbeats;
    ends when the bus closes (shutdown)."""
    subscription = bus.subscribe(after)
    try:
        yield b": connected\n\n"  # the client sees the stream open before any event
        while True:
            try:
                event = await subscription.get(timeout=heartbeat_seconds)
            except StopAsyncIteration:
                return
            yield b": heartbeat\n\n" if event is None else sse_frame(event)
    finally:
        subscription.close()


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidInput(f"Last-Event-ID must be an event id (a whole number), got {raw!r}")
    return int(text)


async def deployments(request: Request) -> Response:
    ctx = context(request)
    if denied := ctx.authorized(request):
        return denied
    return JSONResponse({"data": ctx.breakers.health()})


async def reset_breaker(request: Request) -> Response:
    ctx = context(request)
    if denied := ctx.authorized(request):
        return denied
    deployment = request.path_params["deployment"]
    actor = ACTOR
    raw = await read_body(request)  # the body is optional
    if raw:
        data = parse_json_object(raw, allowed={"actor"})
        given = data.get("actor", ACTOR)
        if not isinstance(given, str):
            raise InvalidInput("'actor' must be a string: who resets the breaker")
        actor = given
    await ctx.breakers.reset(deployment, actor=actor)
    return JSONResponse(ctx.breakers.health_of(deployment))


async def events(request: Request) -> Response:
    ctx = context(request)
    if denied := ctx.authorized(request):
        return denied
    after = _last_event_id(request)
    return StreamingResponse(
        event_stream(ctx.events, after, HEARTBEAT_SECONDS),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
