"""Admin API handlers for orgs, virtual keys and usage.

- ``GET /admin/orgs``: every org.
- ``GET /admin/keys`` (``?org=``): keys, never their plaintext or hash.
- ``POST /admin/keys``: body ``{"org", "project"?, "name"?, "honeypot"?, "honeypot_action"?}``
  (and the session options); creates the org and project when new; answers the plaintext
  key, once. A honeypot key is made and listed like any other (marked ``honeypot``), and
  answered by the gateway exactly as an unknown key, its use a critical alert
  (gateway/honeypot.py). Live on this gateway at once (the key cache is
  updated), on the others at their next key poll.
- ``POST /admin/keys/{key_id}/revoke``: live at once here too.
- ``PUT /admin/keys/{key_id}/options``: the key's session options.
- ``GET /admin/usage`` (``?since=7d&org=``): spend by org, model and day, from the ledger.

Who may (``admin.access``): an org-scoped principal (an org_admin, or a viewer bound to an
org) is shown its own org alone in ``/admin/orgs``, and its own org's keys and usage (naming
another org in ``?org=`` is a 403). An org_admin creates keys for its own org only (never a
new org), and revokes or sets the options of its own org's keys: any other key id, another
org's or none at all, is a 403, so other orgs' ids cannot be probed. A viewer changes
nothing.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import Access, authenticate
from costwarden.admin.common import body_json
from costwarden.admin.context import AdminContext, context
from costwarden.core.errors import Forbidden, InvalidInput
from costwarden.core.periods import parse_since
from costwarden.core.records import KeyRecord
from costwarden.storage import repo
from costwarden.storage.risks import key_project
from costwarden.storage.usage import usage_report

HONEYPOT_FIELDS = ("honeypot", "honeypot_action")


def key_json(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "prefix": record.prefix,
        "org": record.org_name,
        "org_id": record.org_id,
        "project": record.project_name,
        "project_id": record.project_id,
        "name": record.name,
        "created_at": record.created_at.isoformat(),
        "revoked_at": record.revoked_at.isoformat() if record.revoked_at else None,
        "session_clean_stop": record.session_clean_stop,
        "session_budget_note": record.session_budget_note,
        "honeypot": record.honeypot,
        "honeypot_action": record.honeypot_action if record.honeypot else None,
    }


def _options(data: dict[str, Any]) -> dict[str, bool]:
    options = {k: data[k] for k in repo.KEY_OPTIONS if k in data}
    for name, value in options.items():
        if not isinstance(value, bool):
            raise InvalidInput(f"'{name}' must be true or false")
    return options


async def check_key_write(ctx: AdminContext, access: Access, key_id: str) -> None:
    """Forbidden unless ``access`` may change virtual key ``key_id``: any key for a
    platform_admin (an unknown one is left to storage's 404), a key of its own org for an
    org_admin, none for a viewer. An org_admin naming any other id gets the same 403 whether
    the key is another org's or does not exist: other orgs' ids are not told."""
    if access.principal.role == "platform_admin":
        return
    org_id = access.principal.org_id
    access.write_org_id(org_id)  # a viewer (or anything not bound to an org): 403
    assert org_id is not None  # an org_admin is always bound to one
    if await asyncio.to_thread(key_project, ctx.engine, org_id, key_id) is False:
        raise Forbidden(f"this {access.principal.role} may change only its own org's keys")


async def list_orgs(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    if access.platform_wide:
        orgs = await asyncio.to_thread(repo.list_orgs, ctx.engine)
    else:  # an org-scoped principal: its own org, no other
        assert access.principal.org_id is not None
        own = await asyncio.to_thread(repo.get_org, ctx.engine, access.principal.org_id)
        orgs = [] if own is None else [own]
    return JSONResponse({"data": [_org_json(o) for o in orgs]})


async def list_keys(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    org = access.org(request.query_params.get("org"))
    keys = await asyncio.to_thread(repo.list_keys, ctx.engine, org)
    return JSONResponse({"data": [key_json(k) for k in keys]})


async def create_key(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    data = await body_json(
        request, allowed={"org", "project", "name", *HONEYPOT_FIELDS, *repo.KEY_OPTIONS}
    )
    org = data.get("org")
    project = data.get("project")
    name = data.get("name")
    if not isinstance(org, str):
        raise InvalidInput("'org' is required and must be a string")
    # A key of the org named: an org_admin's own org only (a new org is the platform's).
    access.write_org(org)
    for field, value in (("project", project), ("name", name)):
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"'{field}' must be a string")
    options = _options(data)
    honeypot = data.get("honeypot", False)
    action = data.get("honeypot_action")
    repo.check_honeypot(honeypot, action)  # 400 before anything is written
    create = functools.partial(
        repo.create_key,
        ctx.engine,
        org=org,
        project=project,
        name=name,
        honeypot=honeypot,
        honeypot_action=action,
        **options,
    )
    plaintext, record = await asyncio.to_thread(create)
    ctx.keys.apply([record])
    return JSONResponse({"key": plaintext, **key_json(record)}, status_code=201)


async def set_key_options(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    key_id = request.path_params["key_id"]
    await check_key_write(ctx, access, key_id)
    data = await body_json(request, allowed=set(repo.KEY_OPTIONS))
    record = await asyncio.to_thread(repo.set_key_options, ctx.engine, key_id, _options(data))
    ctx.keys.apply([record])
    return JSONResponse(key_json(record))


async def revoke_key(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    key_id = request.path_params["key_id"]
    await check_key_write(ctx, access, key_id)
    record = await asyncio.to_thread(repo.revoke_key, ctx.engine, key_id)
    ctx.keys.apply([record])
    return JSONResponse(key_json(record))


async def usage(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    since = parse_since(request.query_params.get("since", "7d"))
    org = access.org(request.query_params.get("org"))
    report = await asyncio.to_thread(usage_report, ctx.engine, org=org, since=since)
    return JSONResponse(report.to_json_dict())


def _org_json(org: repo.OrgRecord) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}
