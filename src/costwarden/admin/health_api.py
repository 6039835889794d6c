"""Admin API handlers for deployment health and circuit-breaker resets.

- ``GET /admin/health/deployments``: every deployment's breaker as this gateway sees it
  (state, error rate and requests in the window, consecutive failures, last success and
  failure, when it opened and when it will let a probe through).
- ``POST /admin/breakers/{deployment}/reset``: force a breaker closed, in every gateway
  process sharing Redis; audited (``breaker.reset``). Deployment ids are ``provider:model``
  and a model name may contain ``/``, so the route takes the rest of the path up to
  ``/reset``; clients percent-encode the id. Answers the new health entry.

Handlers read the admin context (:mod:`costwarden.admin.context`); errors go through the
admin app's handlers (:mod:`costwarden.admin.common`).

Who may (``admin.access``): deployment health holds no org's data (deployments are the
platform's, shared by every org), so every signed-in principal reads it, an org-scoped one
too: it tells an org why its calls fail over. Resetting a breaker changes every org's
routing: a platform_admin's alone. The reset is audited as who signed in (``admin-api`` for
the admin token, ``admin-key:<id>`` for an admin key), with the body's ``actor`` beside it
(``Access.actor_for``: the shared token's given name is taken as is).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import parse_json_object, read_body
from costwarden.admin.context import context

logger = logging.getLogger(__name__)



async def deployments(request: Request) -> Response:
    ctx = context(request)
    await authenticate(request)  # any signed-in principal: no org's data in it
    return JSONResponse({"data": ctx.breakers.health()})


async def reset_breaker(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()  # every org's routing
    deployment = request.path_params["deployment"]
    actor = access.actor
    raw = await read_body(request)  # the body is optional
    if raw:
        actor = access.actor_for(parse_json_object(raw, allowed={"actor"}))
    await ctx.breakers.reset(deployment, actor=actor)
    return JSONResponse(ctx.breakers.health_of(deployment))
