"""Admin API handlers for routes and their fallback chains.

- ``GET /admin/routes``: every route: its deployments, fallbacks (and whether they come from
  the config file or the admin API), the resolved chain, retries, timeouts and template, its
  strategy (with weights), downgrade rules and response cache (from the config file).
- ``PUT /admin/routes/{model}/fallbacks``: body ``{"fallbacks": ["route or provider:model",
  ...]}``, or ``null`` to go back to the config file's. Validated against the whole table
  (an unknown name is 400, a cycle 409, an unknown route 404), audit-logged, live on this
  gateway at once and on the others within a poll (:class:`~costwarden.routing.table.RouteTable`).
  Audited as who signed in (``admin-api`` for the admin token).

Who may (``admin.access``): the route table is the platform's and holds no org's data (the
models every org may call, and how they are served), so every signed-in principal reads it,
an org-scoped one too. Changing a fallback chain changes every org's routing: a
platform_admin's alone.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from costwarden.admin.access import authenticate
from costwarden.admin.common import body_json
from costwarden.admin.context import AdminContext, context
from costwarden.core.errors import InvalidInput


def route_json(ctx: AdminContext, model: str) -> dict[str, Any]:
    route = ctx.route_table.routes[model]
    fallbacks, source = ctx.route_table.fallbacks(model)
    return {
        "model": model,
        "deployments": list(ctx.route_deployments[model]),
        "fallbacks": fallbacks,
        "fallbacks_source": source,
        "chain": [d.id for d in route.candidates],
        "retries": route.retries,
        "connect_timeout": route.connect_timeout,
        "first_byte_timeout": route.first_byte_timeout,
        "timeout": route.timeout,
        "degraded": {"content": route.degraded.content} if route.degraded else None,
        "strategy": route.strategy,
        "weights": list(route.weights) or None,
        "downgrade": [
            {"above_percent": str(r.above_percent), "to": r.to, "scope": r.scope,
             "limit": r.limit}
            for r in route.downgrade
        ],  # fmt: skip
        "downgrade_on_refusal": route.downgrade_on_refusal,
        "cache": None
        if route.cache is None
        else {
            "ttl_seconds": route.cache.ttl_seconds,
            "replay_unsafe": route.cache.replay_unsafe,
            "shared": route.cache.namespace is not None,  # the name itself stays private
        },
    }


async def list_routes(request: Request) -> Response:
    ctx = context(request)
    await authenticate(request)  # any signed-in principal: no org's data in it
    models = sorted(ctx.route_table.routes)
    return JSONResponse({"routes": [route_json(ctx, m) for m in models]})


async def put_fallbacks(request: Request) -> Response:
    ctx = context(request)
    access = await authenticate(request)
    access.write_platform()  # every org's routing
    data = await body_json(request, allowed={"fallbacks"})
    if "fallbacks" not in data:
        raise InvalidInput("'fallbacks' is required: a list of names, or null for the config's")
    model = request.path_params["model"]
    await ctx.route_table.set_fallbacks(model, data["fallbacks"], actor=access.actor)
    return JSONResponse(route_json(ctx, model))
