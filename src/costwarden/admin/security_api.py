"""Admin API handlers for the orgs' and keys' security policies (costwarden.security).

- ``GET /admin/security/policies[?org=NAME]``: every layer, or one org's and its keys'.
- ``PUT /admin/orgs/{name}/security`` and ``PUT /admin/keys/{key_id}/security``: body the
  layer, e.g. ``{"actions": {"pii": "redact", "injection": "block"}, "on_timeout":
  "closed"}``; it replaces the subject's layer. The gateway's ``[security]`` settings are
  the base, the org's layer goes over them and the key's over that, field by field.
- ``DELETE`` on the same paths removes the layer: ``{"deleted": true}``, or ``false``
  when there was none (an unknown org or key is a 404).

Every write is audited (as who signed in: ``admin-api`` for the admin token,
``admin-key:<id>`` for an admin key); each gateway applies it at its next policy poll (about
``server.key_refresh_seconds``). Bad input is a 400 naming the field, and nothing changes.

Who may (``admin.access``): an org-scoped principal (an org_admin, or a viewer bound to an
org) lists its own org's and its keys' layers alone (naming another org is a 403); an
org_admin writes and removes its own org's layer and its own org's keys' layers (another
org's name, or any key id not of its org, is a 403). A viewer changes nothing.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import Access, authenticate
from costwarden.admin.common import body_json
from costwarden.admin.context import AdminContext, context
from costwarden.admin.keys_api import check_key_write
from costwarden.storage.security_policies import delete_policy, list_policies, put_policy


async def get_policies(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    org = access.org(request.query_params.get("org"))  # org-scoped: its own org, no other
    found = await asyncio.to_thread(list_policies, ctx.engine, org)
    return JSONResponse({"policies": [p.to_json() for p in found]})


async def put_org_policy(request: Request) -> Response:
    return await _put(request, org=request.path_params["name"], key_id=None)


async def put_key_policy(request: Request) -> Response:
    return await _put(request, org=None, key_id=request.path_params["key_id"])


async def delete_org_policy(request: Request) -> Response:
    return await _delete(request, org=request.path_params["name"], key_id=None)


async def delete_key_policy(request: Request) -> Response:
    return await _delete(request, org=None, key_id=request.path_params["key_id"])


async def _check_write(
    ctx: AdminContext, access: Access, org: str | None, key_id: str | None
) -> None:
    """Forbidden unless ``access`` may change the layer of org ``org`` or key ``key_id``."""
    if key_id is not None:
        await check_key_write(ctx, access, key_id)  # the key's org
    else:
        access.write_org(org)


async def _put(request: Request, *, org: str | None, key_id: str | None) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    await _check_write(ctx, access, org, key_id)
    raw = await body_json(request)
    record = await asyncio.to_thread(
        put_policy, ctx.engine, org=org, key_id=key_id, raw=raw, actor=access.actor
    )
    return JSONResponse(record.to_json())


async def _delete(request: Request, *, org: str | None, key_id: str | None) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    await _check_write(ctx, access, org, key_id)
    existed = await asyncio.to_thread(
        delete_policy, ctx.engine, org=org, key_id=key_id, actor=access.actor
    )
    return JSONResponse({"deleted": existed, "org": org, "key_id": key_id})
