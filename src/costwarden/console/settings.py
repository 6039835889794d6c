"""The settings page: the kill switch and the feature toggles.

``GET /dashboard/settings`` shows:

- the emergency control: whether AI is on platform-wide. On, a "Disable all AI" button opens
  a dialog asking for confirmation, with the message refused clients are told (a textarea;
  empty: the configured default); its form posts ``/dashboard/settings/emergency`` with a
  hidden ``confirm`` field (:data:`~costwarden.admin.switches_api.CONFIRM_DISABLE_ALL`).
  A post without it is a 400 and nothing changes. Off, the message in force and an "Enable AI
  again" button (the same route, ``enabled=true``: no confirmation).
- the feature toggles (:data:`~costwarden.storage.switches.FEATURES`), each a switch
  button posting ``/dashboard/settings/switch`` (``org``: an org's name, empty for
  platform-wide; ``feature``; ``enabled``; ``message``): platform-wide ones, and every org's
  switches that were ever set, with a form to switch a feature of one org with a message.
  Platform-wide ``ai`` is switched only through the emergency control (the switch route
  refuses it without the same confirmation).

Every write is :func:`~costwarden.storage.switches.set_switch` (the switch and its audit
row ``switch.set``, the visitor as actor), live on this gateway at once
(``ctx.switches.reload()``; the others within ``switches.refresh_seconds``), and published
as ``switch_changed``; then back to the page with a notice.

Who may (as ``admin/switches_api``): a platform_admin sees and changes everything; a
platform-wide viewer sees everything and changes nothing; an org_admin sees and switches its
own org's features only (whether AI is off platform-wide it is told, as every visitor is on
the overview, but it has no button for it, and a platform-wide or another org's switch is a
403); an org-scoped viewer sees its own org's switches, read-only. Posts a role may not make
are a 403, nothing changed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from costwarden.admin.access import Access
from costwarden.admin.switches_api import CONFIRM_DISABLE_ALL, confirmation_error, save_switch
from costwarden.console.auth import changing, visitor
from costwarden.console.context import console
from costwarden.console.render import page, url
from costwarden.core.errors import InvalidInput
from costwarden.dashboard.roles import can_write
from costwarden.storage import repo
from costwarden.storage import switches as store
from costwarden.storage.switches import FEATURES, SwitchRecord

logger = logging.getLogger(__name__)

FEATURE_HELP = {
    "ai": "every model call",
    "chat.completions": "the chat completions endpoint",
    "embeddings": "the embeddings endpoint",
    "messages": "the Anthropic messages endpoint",
    "streaming": "requests with stream: true",
}
NOTICES = {
    "off": "Switched off: refused at once on this gateway, on the others within seconds.",
    "on": "Switched on again.",
    "emergency-off": "Every AI feature is switched off platform-wide: model calls get 503.",
    "emergency-on": "AI is on again platform-wide.",
}


@dataclasses.dataclass(frozen=True, slots=True)
class FeatureRow:
    """One feature's switch in one scope, ready to show (on and never set: no record)."""

    org: str | None  # the org's name; None: platform-wide
    feature: str
    enabled: bool
    message: str | None
    updated_by: str | None
    updated_at: datetime | None


def _row(org: str | None, feature: str, record: SwitchRecord | None) -> FeatureRow:
    if record is None:
        return FeatureRow(org, feature, True, None, None, None)
    return FeatureRow(
        org, feature, record.enabled, record.message, record.updated_by, record.updated_at
    )


def scope_rows(
    records: list[SwitchRecord], org_id: str | None, org_name: str | None
) -> list[FeatureRow]:
    """Every feature of one scope (org ``org_id``, None: platform-wide), in
    :data:`FEATURES`' order, on unless a record says otherwise."""
    mine = {r.feature: r for r in records if r.org_id == org_id}
    return [_row(org_name, f, mine.get(f)) for f in FEATURES]


def org_rows(records: list[SwitchRecord]) -> list[FeatureRow]:
    """Every org switch ever set (off first, then by org and feature)."""
    rows = [_row(r.org_name or r.org_id, r.feature, r) for r in records if r.org_id is not None]
    return sorted(rows, key=lambda r: (r.enabled, r.org or "", FEATURES.index(r.feature)))


def platform_ai_off(records: list[SwitchRecord]) -> SwitchRecord | None:
    """The global kill switch's record when it is off, else None."""
    for r in records:
        if r.org_id is None and r.feature == "ai" and not r.enabled:
            return r
    return None


def one_line(text: str | None) -> str | None:
    """A textarea's message as the one line of text a switch keeps (line breaks and runs of
    spaces become one space); None when empty (the configured default message)."""
    joined = " ".join((text or "").split())
    return joined or None


def parse_enabled(raw: str | None) -> bool:
    """A form's ``enabled``: ``true`` (switch on) or ``false`` (switch off)."""
    value = (raw or "").strip().lower()
    if value not in ("true", "false"):
        raise InvalidInput("'enabled' must be true (switch on) or false (switch off)")
    return value == "true"


async def settings(request: Request) -> Response:
    who = await visitor(request)
    ctx = console(request).admin
    access = who.access
    platform = access.platform_wide
    (_, records), orgs = await asyncio.gather(
        asyncio.to_thread(store.load_switches, ctx.engine),
        asyncio.to_thread(repo.list_orgs, ctx.engine) if platform else _no_orgs(),
    )
    principal = access.principal
    own = principal.org_id
    return page(
        request,
        who,
        "settings.html",
        title="Settings",
        notice=NOTICES.get(request.query_params.get("done", "")),
        help=FEATURE_HELP,
        confirm=CONFIRM_DISABLE_ALL,
        features=FEATURES,
        platform=platform,
        ai_off=platform_ai_off(records),
        can_platform=can_write(principal, None),
        # org-scoped: its own org's features; platform-wide: the platform's, and the orgs'
        own_rows=scope_rows(records, own, access.org_name) if own is not None else [],
        platform_rows=scope_rows(records, None, None) if platform else [],
        org_rows=org_rows(records) if platform else [],
        # the orgs this visitor may switch a feature of
        writable_orgs=[o.name for o in orgs] if can_write(principal, None) else (
            [access.org_name] if own is not None and can_write(principal, own) else []
        ),
    )  # fmt: skip


async def _no_orgs() -> list[Any]:
    return []


async def _set(
    request: Request,
    access: Access,
    *,
    org: str | None,
    feature: str,
    enabled: bool,
    message: str | None,
) -> SwitchRecord:
    """Write one switch (audited), apply it here at once, publish it."""
    return await save_switch(
        console(request).admin, org=org, feature=feature, enabled=enabled, message=message,
        actor=access.actor,
    )  # fmt: skip


async def switch(request: Request) -> Response:
    who, fields = await changing(request)
    access = who.access
    org = fields.get("org", "").strip() or None
    access.write_org(org)  # an org_admin: its own org's (None: platform-wide); a viewer: none
    feature = store.check_feature(fields.get("feature"))
    enabled = parse_enabled(fields.get("enabled"))
    if store.needs_confirmation(org, feature, enabled) and (
        fields.get("confirm") != CONFIRM_DISABLE_ALL
    ):
        raise InvalidInput(confirmation_error(feature))
    message = one_line(fields.get("message"))
    await _set(request, access, org=org, feature=feature, enabled=enabled, message=message)
    done = "on" if enabled else "off"
    return RedirectResponse(url(request, "/settings") + f"?done={done}", status_code=303)


async def emergency(request: Request) -> Response:
    """Every AI feature off platform-wide (confirmed), or on again."""
    who, fields = await changing(request)
    access = who.access
    access.write_platform()
    enabled = parse_enabled(fields.get("enabled"))
    if not enabled and fields.get("confirm") != CONFIRM_DISABLE_ALL:
        raise InvalidInput(
            "switching every AI feature off needs its confirmation: use the dialog's "
            "confirm button"
        )
    message = None if enabled else one_line(fields.get("message"))
    await _set(request, access, org=None, feature="ai", enabled=enabled, message=message)
    done = "emergency-on" if enabled else "emergency-off"
    return RedirectResponse(url(request, "/settings") + f"?done={done}", status_code=303)


ROUTES = (
    Route("/settings", settings, methods=["GET"]),
    Route("/settings/switch", switch, methods=["POST"]),
    Route("/settings/emergency", emergency, methods=["POST"]),
)
