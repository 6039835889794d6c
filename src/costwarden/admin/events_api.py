"""``GET /admin/events``: the live event stream, as server-sent events.

Each event is a frame ``id: N`` (the global event id), ``event: KIND``, ``data: {json}``
(the kind's fields and ``ts``).
Query parameters ``kind`` (repeatable or comma-separated; unknown kinds are a 400)
and ``org`` (an org name; unknown: 404) filter the stream: with an org, only that org's
events (platform events, which carry no org -- a breaker opening, a platform-wide switch --
are left out). A ``Last-Event-ID`` header
resumes after that id: from the bus's ring, older events from the event log, then live;
nothing twice.

A comment line goes out after :data:`HEARTBEAT_SECONDS` of silence, so proxies and load
balancers keep the connection. A client that falls behind (its queue of
``events.queue_size`` events full) gets a last ``event: stream_cut`` frame, whose data says
which id to resume after, and the stream ends; a client that stops reading altogether is
dropped once a write has waited :data:`WRITE_TIMEOUT_SECONDS`. Neither ever slows the
publishers or the other clients.

Who may (``admin.access``): an org-scoped principal (an org_admin, or a viewer bound to an
org) gets its own org's stream, always: ``org`` defaults to its own, naming another is a
403, and the bus's org filter leaves out every other org's events and the platform's (those
without an org), in the replay after ``Last-Event-ID`` too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import orjson
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from costwarden.admin.access import Access, authenticate
from costwarden.admin.context import context
from costwarden.core.errors import InvalidInput, NotFound
from costwarden.core.event_kinds import KINDS, STREAM_CUT
from costwarden.core.events import Event
from costwarden.core.subscription import Subscription
from costwarden.storage import repo

logger = logging.getLogger(__name__)

# Read per request (tests lower them).
HEARTBEAT_SECONDS = 15.0
WRITE_TIMEOUT_SECONDS = 10.0
SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def sse_frame(event: Event) -> bytes:
    """One server-sent event: ``id``, ``event`` (the kind) and ``data`` (the JSON payload,
    plus ``ts``: when it was raised, in epoch seconds)."""
    data = orjson.dumps({**event.data, "ts": round(event.ts, 6)}, default=str)
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.encode(), data)


def _cut_frame(subscription: Subscription) -> bytes:
    data = orjson.dumps(
        {
            "reason": "the client fell too far behind; reconnect with Last-Event-ID",
            "last_event_id": subscription.last_id,
        }
    )
    return b"event: %s\ndata: %s\n\n" % (STREAM_CUT.encode(), data)


def last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidInput(f"Last-Event-ID must be an event id (a whole number), got {raw!r}")
    return int(text)


def kinds_filter(request: Request) -> frozenset[str] | None:
    """The kinds asked for (``kind``: comma-separated, repeatable), None for all; an empty or
    unknown name is a 400, not a filter that silently matches nothing."""
    values = request.query_params.getlist("kind")
    if not values:
        return None
    asked = [k for v in values for k in v.split(",")]
    unknown = sorted(set(asked) - KINDS.keys())
    if unknown:
        raise InvalidInput(
            f"unknown event kind {unknown[0]!r}; kinds are: {', '.join(sorted(KINDS))}"
        )
    return frozenset(asked)


async def org_filter(request: Request, engine: Engine, access: Access) -> str | None:
    """The id of the org named by ``org`` (the admin API names orgs by name everywhere);
    an org-scoped principal's own org, whatever it asks for (another: 403)."""
    name = access.org(request.query_params.get("org"))
    if not access.platform_wide:
        return access.principal.org_id
    if name is None:
        return None
    if not name.strip():
        raise InvalidInput("'org' must be an org name")
    org = await asyncio.to_thread(repo.get_org_by_name, engine, name)
    if org is None:
        raise NotFound(f"no org named {name.strip()!r}")
    return org.id


class EventStream(StreamingResponse):
    """The SSE response (Starlette's streaming response ends it when the client hangs up);
    see the module docstring."""

    def __init__(
        self, subscription: Subscription, keep: Callable[[Event], bool] | None = None
    ) -> None:
        super().__init__(_frames(subscription, keep), headers=SSE_HEADERS)
        self.subscription = subscription

    async def stream_response(self, send: Send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            )
            async for chunk in self.body_iterator:
                async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            logger.warning(
                "an event stream client stopped reading for %.0fs: dropped", WRITE_TIMEOUT_SECONDS
            )
        finally:
            self.subscription.close()


async def _frames(
    subscription: Subscription, keep: Callable[[Event], bool] | None
) -> AsyncIterator[bytes]:
    yield b": connected\n\n"  # the client sees the stream open before any event
    while True:
        try:
            event = await subscription.get(timeout=HEARTBEAT_SECONDS)
        except StopAsyncIteration:
            break
        if event is None:
            yield b": heartbeat\n\n"
        elif keep is None or keep(event):
            yield sse_frame(event)
    if subscription.cut:
        yield _cut_frame(subscription)


async def events(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    after = last_event_id(request)
    kinds = kinds_filter(request)
    org = await org_filter(request, ctx.engine, access)  # never None for an org-scoped one
    return EventStream(ctx.events.subscribe(after, kinds=kinds, org_id=org))
