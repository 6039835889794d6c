"""Admin API routes for routes and their fallback chains.

- ``GET /admin/routes``: every route: its deployments, fallbacks (and whether they come from
  the config file or the admin API), the resolved chain, retries, timeouts and template.
- ``PUT /admin/routes/{model}/fallbacks``: body ``{"fallbacks": ["route or provider:model",
  ...]}``, or ``null`` to go back to the config file's. Validated against the whole table
  (unknown names and cycles are 400, an unknown route 404), audit-logged, live on this
  gateway at once and on the others within a poll (:class:`~costwarden.routing.table.RouteTable`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from costwarden.core.errors import InvalidInput

if TYPE_CHECKING:
    from costwarden.app.factory import CostwardenApp

ACTOR = "admin-api"

Authorize = Callable[[Request], JSONResponse | None]
BodyJson = Callable[..., Awaitable[dict[str, Any]]]


def route_json(gateway: CostwardenApp, model: str) -> dict[str, Any]:
    route = gateway.routes[model]
    config = gateway.settings_route(model)
    fallbacks, source = gateway.route_table.fallbacks(model)
    return {
        "model": model,
        "deployments": list(config.deployments),
        "fallbacks": fallbacks,
        "fallbacks_source": source,
        "chain": [d.id for d in route.candidates],
        "retries": route.retries,
        "connect_timeout": route.connect_timeout,
        "first_byte_timeout": route.first_byte_timeout,
        "timeout": route.timeout,
        "degraded": {"content": route.degraded.content} if route.degraded else None,
    }


def route_routes(gateway: CostwardenApp, authorized: Authorize, body_json: BodyJson) -> list[Route]:
    async def list_routes(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        return JSONResponse({"routes": [route_json(gateway, m) for m in sorted(gateway.routes)]})

    async def put_fallbacks(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        data = await body_json(request, allowed={"fallbacks"})
        if "fallbacks" not in data:
            raise InvalidInput("'fallbacks' is required: a list of names, or null for the config's")
        model = request.path_params["model"]
        await gateway.route_table.set_fallbacks(model, data["fallbacks"], actor=ACTOR)
        return JSONResponse(route_json(gateway, model))

    return [
        Route("/admin/routes", list_routes, methods=["GET"]),
        Route("/admin/routes/{model}/fallbacks", put_fallbacks, methods=["PUT"]),
    ]
