"""Admin API handlers for the kill switch, feature toggles and the audit log.

- ``GET /admin/switches``: every switch ever set (on and off), with org names, and the version.
- ``PUT /admin/switches``: turn one feature on or off, platform-wide or for one org. Switching
  *everything* off (platform-wide ``ai``) needs ``"confirm": "disable-all"`` in the body.
  The write is live on this gateway at once (:meth:`SwitchBoard.reload`), on the others
  within ``switches.refresh_seconds``.
- ``GET /admin/audit``: the audit log, newest first.

Who may (``admin.access``): a switch is per org or platform-wide, so an org-scoped principal
(an org_admin, or a viewer bound to an org) is shown its own org's switches alone (and as
``version`` the newest of those), and an org_admin turns its own org's features off and on;
a platform-wide switch (``"org"`` null, the global kill switch among them) is a 403 for it.
The audit log has no org column (its rows name orgs, keys and settings of every org): it is
platform-wide, read by a platform_admin or a platform-wide viewer only.

Handlers read the admin context (:mod:`costwarden.admin.context`) and the shared body reader
(:mod:`costwarden.admin.common`), so auth and body parsing behave exactly as for every other
route; errors (InvalidInput -> 400, NotFound -> 404) go through the admin app's handlers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import body_json
from costwarden.admin.context import AdminContext, context
from costwarden.core.errors import InvalidInput
from costwarden.storage import audit
from costwarden.storage import switches as store

logger = logging.getLogger(__name__)

CONFIRM_DISABLE_ALL = "disable-all"
PUT_FIELDS = {"org", "feature", "enabled", "message", "confirm"}


def confirmation_error(feature: str) -> str:
    return (
        f"switching {feature!r} off platform-wide stops every model call for every org: "
        f'add "confirm": "{CONFIRM_DISABLE_ALL}" to the request to do it'
    )


def parse_switch_body(data: dict[str, Any]) -> tuple[str | None, str, bool, str | None]:
    """``(org, feature, enabled, message)`` from a PUT body, confirmation checked.

    Checks the shape only; the feature, message and org are checked again by storage.
    """
    org = data.get("org")
    if org is not None and not isinstance(org, str):
        raise InvalidInput("'org' must be an org name, or null for a platform-wide switch")
    if "feature" not in data:
        raise InvalidInput(f"'feature' is required: one of {', '.join(store.FEATURES)}")
    feature = store.check_feature(data["feature"])
    enabled = data.get("enabled")
    if not isinstance(enabled, bool):
        raise InvalidInput("'enabled' is required: true (switch on) or false (switch off)")
    message = data.get("message")
    if message is not None and not isinstance(message, str):
        raise InvalidInput("'message' must be a string, or null for the default message")
    confirm = data.get("confirm")
    if confirm is not None and confirm != CONFIRM_DISABLE_ALL:
        raise InvalidInput(f"'confirm' can only be {CONFIRM_DISABLE_ALL!r}, got {confirm!r}")
    if store.needs_confirmation(org, feature, enabled) and confirm != CONFIRM_DISABLE_ALL:
        raise InvalidInput(confirmation_error(feature))
    return org, feature, enabled, message


async def get_switches(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    version, records = await asyncio.to_thread(store.load_switches, ctx.engine)
    if not access.platform_wide:  # its own org's switches, not the platform's nor others'
        records = [r for r in records if r.org_id == access.principal.org_id]
        version = max((r.version for r in records), default=0)
    return JSONResponse({"version": version, "switches": [r.to_json() for r in records]})


async def put_switch(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    data = await body_json(request, allowed=PUT_FIELDS)
    org, feature, enabled, message = parse_switch_body(data)
    access.write_org(org)  # an org_admin: its own org's switch (None: platform-wide)
    record = await save_switch(
        ctx, org=org, feature=feature, enabled=enabled, message=message, actor=access.actor
    )
    return JSONResponse(record.to_json())


async def get_audit(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.read_platform()  # no org column: every org's changes are in it
    limit = audit.parse_limit(request.query_params.get("limit", audit.DEFAULT_AUDIT_LIMIT))
    action = request.query_params.get("action")
    entries = await asyncio.to_thread(audit.audit_entries, ctx.engine, limit=limit, action=action)
    return JSONResponse({"data": [e.to_json() for e in entries]})


async def save_switch(
    ctx: AdminContext,
    *,
    org: str | None,
    feature: str,
    enabled: bool,
    message: str | None,
    actor: str,
) -> store.SwitchRecord:
    """Write one switch (audited; the caller checked who may), apply it in this process at
    once and publish ``switch_changed``: the admin API's PUT and the dashboard's both."""
    record = await asyncio.to_thread(
        functools.partial(
            store.set_switch, ctx.engine, org=org, feature=feature, enabled=enabled,
            message=message, actor=actor,
        )
    )  # fmt: skip
    await _reload_switches(ctx)
    ctx.events.publish(record.changed_event())
    return record


async def _reload_switches(ctx: AdminContext) -> None:
    """Apply a committed switch write in this process now (the poller would within
    refresh_seconds, and retries if this fails)."""
    try:
        await ctx.switches.reload()
    except Exception as exc:
        logger.warning(
            "switch saved; applying it at once failed (the poller retries): %s: %s",
            type(exc).__name__,
            exc,
        )
