"""Admin API handlers for alert channels.

- ``GET /admin/alert-channels``: every channel, redacted (no secret, no password, of a URL only
  its scheme, host and port).
- ``PUT /admin/alert-channels/{name}``: create or replace a channel (body:
  :data:`costwarden.admin.channel_inputs.PUT_CHANNEL`); audited.
- ``DELETE /admin/alert-channels/{name}``: disable it; its deliveries not yet sent are
  dropped, the delivery log stays; audited.
- A channel of the config file (``"source": "config"``) is shown like any other, and
  tested, but PUT and DELETE answer 409: it is changed in the file (the storage functions
  refuse it, under the write lock).
- ``POST /admin/alert-channels/{name}/test``: send it a test message now (signed, for a
  webhook); answers whether it was delivered, the status and the error (never a secret).
- ``GET /admin/alert-channels/{name}/deliveries``: its delivery log, newest first.

Who may (``admin.access``): a channel is the platform's (where every org's alerts go; its
filter names orgs), so every route here is platform-wide: read by a platform_admin or a
platform-wide viewer, changed and tested by a platform_admin; an org-scoped principal gets
a 403. Writes are audited as who signed in (``admin-api`` for the admin token).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.channel_inputs import parse_channel
from costwarden.admin.common import body_json
from costwarden.admin.context import context
from costwarden.alerts.channels import send_check
from costwarden.alerts.delivery import redacted
from costwarden.storage import alerts as store
from costwarden.storage import repo
from costwarden.storage.alert_deliveries import delivery_log
from costwarden.storage.alert_records import new_alert_id

# A test send is bounded so that an unreachable URL cannot hold the request for long.
TEST_TIMEOUT_SECONDS = 5.0


def _name(request: Request) -> str:
    return repo.clean_name(request.path_params["name"], "channel")


async def list_channels(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.read_platform()  # the platform's channels, their filters naming every org
    channels = await asyncio.to_thread(store.list_channels, ctx.engine)
    return JSONResponse({"data": [redacted(c) for c in channels]})


async def put_channel(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()
    name = _name(request)
    channel = parse_channel(name, await body_json(request))
    saved = await asyncio.to_thread(store.save_channel, ctx.engine, channel, actor=access.actor)
    return JSONResponse(redacted(saved))


async def delete_channel(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()
    name = _name(request)
    await asyncio.to_thread(store.delete_channel, ctx.engine, name, actor=access.actor)
    return JSONResponse({"name": name, "enabled": False})


async def test_channel(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()
    channel = await asyncio.to_thread(store.get_channel, ctx.engine, _name(request))
    attempt = await send_check(
        channel,
        message_id=new_alert_id("tst"),
        created_at=datetime.fromtimestamp(ctx.clock(), UTC).isoformat(),
        timeout=TEST_TIMEOUT_SECONDS,
    )
    return JSONResponse(
        {"delivered": attempt.delivered, "status": attempt.status, "error": attempt.error}
    )


async def channel_deliveries(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.read_platform()
    channel = await asyncio.to_thread(store.get_channel, ctx.engine, _name(request))
    log = await asyncio.to_thread(delivery_log, ctx.engine, channel_id=channel.id)
    return JSONResponse({"data": log})
