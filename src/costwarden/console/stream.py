"""The dashboard's live stream: ``GET /dashboard/stream``, server-sent events for htmx's SSE
extension.

Every event of the bus the visitor may see (an org-scoped visitor: its own org's; a
platform-wide one: all) is sent twice over: as ``event: activity`` with one rendered,
escaped table row (the overview's feed prepends it), and as ``event: <kind>`` with an empty
body, so a fragment can reload itself on the kinds it cares about
(``hx-trigger="sse:escalation_resolved"``). The stream ends with the connection, and with
the session: it is checked again every keep-alive (a revoked key's stream closes).
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from costwarden.admin.access import Access, access_for
from costwarden.console.auth import Visitor, visitor
from costwarden.console.context import ConsoleContext, console
from costwarden.console.render import when
from costwarden.core.errors import NotSignedIn
from costwarden.core.events import Event
from costwarden.core.subscription import Subscription
from costwarden.storage import repo

logger = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
SSE_HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-store",
    "x-accel-buffering": "no",
}
# Fields of an event's data worth a person's glance, in this order.
_DETAIL_FIELDS = (
    "model", "status", "cost_usd", "deployment", "state", "feature", "enabled", "title",
    "reason", "session_id", "escalation_id", "rule", "severity",
)  # fmt: skip


def _row(event: Event, org_names: dict[str, str]) -> bytes:
    data = event.data
    detail = ", ".join(
        f"{name}={data[name]}" for name in _DETAIL_FIELDS if data.get(name) not in (None, "")
    )
    org = org_names.get(event.org_id or "", "platform" if event.org_id is None else "")
    cells = (when(event.ts), event.kind, org, detail)
    row = "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"
    return row.encode()


def _frames(event: Event, org_names: dict[str, str]) -> bytes:
    return (
        b"event: activity\ndata: " + _row(event, org_names) + b"\n\n"
        b"event: " + event.kind.encode() + b"\ndata: \n\n"
    )


async def _events(
    ctx: ConsoleContext, who: Visitor, subscription: Subscription
) -> AsyncIterator[bytes]:
    names = await asyncio.to_thread(repo.org_names, ctx.admin.engine)
    access: Access = who.access
    yield b": connected\n\n"
    try:
        while True:
            try:
                event = await subscription.get(timeout=KEEPALIVE_SECONDS)
            except StopAsyncIteration:
                break
            if event is None:
                try:  # the session must still be good (a revoked admin key ends it)
                    await access_for(ctx.admin, access.principal, access.actor)
                except NotSignedIn:
                    break
                yield b": keep-alive\n\n"
                continue
            if not access.platform_wide and event.org_id != access.principal.org_id:
                continue
            if event.org_id is not None and event.org_id not in names:
                names = await asyncio.to_thread(repo.org_names, ctx.admin.engine)
            yield _frames(event, names)
    finally:
        subscription.close()


class _Stream(StreamingResponse):
    """A streaming response that ends its subscription however it ends (also when the
    client left before the first frame, and the body iterator never started)."""

    def __init__(self, body: AsyncIterator[bytes], subscription: Subscription) -> None:
        super().__init__(body, headers=SSE_HEADERS)
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.close()


async def stream(request: Request) -> Response:
    who = await visitor(request)
    ctx = console(request)
    org_id = None if who.access.platform_wide else who.access.principal.org_id
    subscription = ctx.admin.events.subscribe(None, org_id=org_id)
    return _Stream(_events(ctx, who, subscription), subscription)


ROUTES = (Route("/stream", stream, methods=["GET"]),)
