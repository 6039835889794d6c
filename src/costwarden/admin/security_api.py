"""Admin API handlers for the orgs' and keys' security policies (costwarden.security).

- ``GET /admin/security/policies[?org=NAME]``: every layer, or one org's and its keys'.
- ``PUT /admin/orgs/{name}/security`` and ``PUT /admin/keys/{key_id}/security``: body the
  layer, e.g. ``{"actions": {"pii": "redact", "injection": "block"}, "on_timeout":
  "closed"}``; it replaces the subject's layer. The gateway's ``[security]`` settings are
  the base, the org's layer goes over them and the key's over that, field by field.
- ``DELETE`` on the same paths removes the layer: ``{"deleted": true}``, or ``false``
  when there was none (an unknown org or key is a 404).

Every write is audited; each gateway applies it at its next policy poll (about
``server.key_refresh_seconds``). Bad input is a 400 naming the field, and nothing changes.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import ACTOR, body_json
from costwarden.admin.context import context
from costwarden.storage.security_policies import delete_policy, list_policies, put_policy


async def get_policies(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.read_platform()
    org = request.query_params.get("org")
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


async def _put(request: Request, *, org: str | None, key_id: str | None) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()
    raw = await body_json(request)
    record = await asyncio.to_thread(
        put_policy, ctx.engine, org=org, key_id=key_id, raw=raw, actor=ACTOR
    )
    return JSONResponse(record.to_json())


async def _delete(request: Request, *, org: str | None, key_id: str | None) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()
    existed = await asyncio.to_thread(
        delete_policy, ctx.engine, org=org, key_id=key_id, actor=ACTOR
    )
    return JSONResponse({"deleted": existed, "org": org, "key_id": key_id})
