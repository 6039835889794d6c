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
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import ACTOR, parse_json_object, read_body
from costwarden.admin.context import context
from costwarden.core.errors import InvalidInput

logger = logging.getLogger(__name__)



async def deployments(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.read_platform()
    return JSONResponse({"data": ctx.breakers.health()})


async def reset_breaker(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()
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
