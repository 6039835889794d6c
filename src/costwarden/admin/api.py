"""The admin API: JSON under ``/admin``, an OpenAPI schema, bearer-credential auth.

:data:`ROUTES` is every path and method the admin app serves, in one list; the handlers are
module-level functions in the admin modules (keys, limits, switches, health, routes), each
reading the :class:`~costwarden.admin.context.AdminContext` the app built and
:func:`create_admin_app` put in the Starlette app's state. The admin package does not import
the app; the app imports it.

Handlers are thin: they parse input, call storage in a worker thread (the event loop keeps
serving gateway traffic meanwhile) and, for key changes, update the running gateway's key
cache at once so the change is live without waiting for the poller. Limit and tier writes
reload this process's limits at once; other gateway processes poll for them within
``budgets.refresh_seconds``.

Who asks (:mod:`costwarden.admin.access`): the admin token, an admin key or a JWT, as a
principal with a role. Each handler decides what its route gives an org-scoped principal (an
org_admin, or a viewer bound to an org) -- its own org's slice of a list or report, its own
org's records by id, changes to its own org -- and what stays platform-wide (tiers, the
global kill switch, breakers, fallbacks, alert channels, the audit log, ``/metrics``); its
module's docstring says which. ``/healthz`` and ``/admin/openapi.json`` ask for no
credential; the agent's session stream takes its virtual key.

Errors (answered by :mod:`costwarden.admin.common`, shared by every admin module): no valid
credential is 401 (``authentication_error``), a role that does not allow the request 403
(``permission_error``; ``admin_disabled`` when the API is off), bad input
is 400 (``invalid_request_error``), an unknown org, project, key or tier is 404
(``not_found``), writing a tier defined in the config file is 409 (``conflict``), a body over
1 MiB is 413, a database that cannot answer is 503 (``service_unavailable``, ``Retry-After``).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from costwarden.admin import (
    alert_rules_api,
    alerts_api,
    analytics_api,
    channels_api,
    events_api,
    health_api,
    keys_api,
    limits_api,
    metrics_api,
    request_log_api,
    risks_api,
    routes_api,
    security_api,
    sessions_api,
    switches_api,
)
from costwarden.admin.common import exception_handlers
from costwarden.admin.context import AdminContext, context
from costwarden.admin.openapi import openapi_document


async def healthz(request: Request) -> Response:
    """200 while the process serves, the database reachable or not: with the database down
    the gateway keeps serving and spools its ledger rows, which ``ledger`` shows."""
    ctx = context(request)
    # budget_counters: the enforcer's mode (budgets/outage.py): "shared" unless Redis is
    # unreachable ("refusing" or "local") or just came back ("reconciling").
    body: dict[str, object] = {
        "status": "ok",
        "keys": len(ctx.keys),
        "budget_counters": ctx.enforcer.mode,
    }
    if ctx.ledger is not None:
        body["ledger"] = {
            "database": "unreachable" if ctx.ledger.spooling else "ok",
            "pending": ctx.ledger.pending,
            "spooled": ctx.ledger.spooled,
        }
    return JSONResponse(body)


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


def _by_template(route: Route) -> Route:
    """``route`` listed (and documented) by its template: a ``:path`` converter, which lets a
    parameter contain "/", is a detail of matching, not part of the public path."""
    route.path = route.path_format
    return route


ROUTES: tuple[Route, ...] = (
    Route("/healthz", healthz),
    Route("/admin/openapi.json", openapi),
    # orgs, keys, usage
    Route("/admin/orgs", keys_api.list_orgs),
    Route("/admin/keys", keys_api.list_keys, methods=["GET"]),
    Route("/admin/keys", keys_api.create_key, methods=["POST"]),
    Route("/admin/keys/{key_id}/revoke", keys_api.revoke_key, methods=["POST"]),
    Route("/admin/keys/{key_id}/options", keys_api.set_key_options, methods=["PUT"]),
    Route("/admin/usage", keys_api.usage),
    # limits, budgets, tiers
    Route("/admin/limits", limits_api.get_limits, methods=["GET"]),
    Route("/admin/limits", limits_api.put_limits, methods=["PUT"]),
    Route("/admin/limits", limits_api.delete_limits, methods=["DELETE"]),
    Route("/admin/budgets", limits_api.budgets, methods=["GET"]),
    Route("/admin/tiers", limits_api.list_tiers, methods=["GET"]),
    Route("/admin/tiers/{name}", limits_api.put_tier, methods=["PUT"]),
    Route("/admin/tiers/{name}", limits_api.delete_tier, methods=["DELETE"]),
    Route("/admin/orgs/{name}/tier", limits_api.set_org_tier, methods=["PUT"]),
    # kill switch, feature toggles, audit log
    Route("/admin/switches", switches_api.get_switches, methods=["GET"]),
    Route("/admin/switches", switches_api.put_switch, methods=["PUT"]),
    Route("/admin/audit", switches_api.get_audit, methods=["GET"]),
    # deployment health, breakers, events
    Route("/admin/health/deployments", health_api.deployments, methods=["GET"]),
    # A deployment id is provider:model and a model name may contain "/": the id is the rest
    # of the path up to /reset (clients percent-encode it).
    _by_template(
        Route(
            "/admin/breakers/{deployment:path}/reset", health_api.reset_breaker, methods=["POST"]
        )
    ),
    Route("/admin/events", events_api.events, methods=["GET"]),
    # routes and their fallback chains
    Route("/admin/routes", routes_api.list_routes, methods=["GET"]),
    Route("/admin/routes/{model}/fallbacks", routes_api.put_fallbacks, methods=["PUT"]),
    # Prometheus (text format, not in the OpenAPI document)
    Route("/metrics", metrics_api.metrics, methods=["GET"]),
    Route("/admin/risks", risks_api.risks, methods=["GET"]),
    Route("/admin/analytics/spend", analytics_api.spend_report, methods=["GET"]),
    Route("/admin/analytics/top", analytics_api.top, methods=["GET"]),
    Route("/admin/analytics/overview", analytics_api.overview, methods=["GET"]),
    Route("/admin/analytics/trends", analytics_api.trends, methods=["GET"]),
    Route("/admin/analytics/requests", request_log_api.search_requests, methods=["GET"]),
    Route(
        "/admin/analytics/requests/{request_id}", request_log_api.get_request, methods=["GET"]
    ),
    Route("/admin/analytics/projection", analytics_api.projection, methods=["GET"]),
    Route("/admin/analytics/chargeback.csv", analytics_api.chargeback, methods=["GET"]),
    Route("/admin/alert-rules", alert_rules_api.get_rules, methods=["GET"]),
    Route("/admin/alert-rules", alert_rules_api.put_rule, methods=["PUT"]),
    Route("/admin/alert-rules/{rule_id}", alert_rules_api.remove_rule, methods=["DELETE"]),
    Route("/admin/alert-channels", channels_api.list_channels, methods=["GET"]),
    Route("/admin/alert-channels/{name}", channels_api.put_channel, methods=["PUT"]),
    Route("/admin/alert-channels/{name}", channels_api.delete_channel, methods=["DELETE"]),
    Route("/admin/alert-channels/{name}/test", channels_api.test_channel, methods=["POST"]),
    Route(
        "/admin/alert-channels/{name}/deliveries",
        channels_api.channel_deliveries,
        methods=["GET"],
    ),
    Route("/admin/alerts", alerts_api.list_alerts, methods=["GET"]),
    Route("/admin/alerts/{alert_id}", alerts_api.get_alert, methods=["GET"]),
    Route("/admin/alerts/{alert_id}/acknowledge", alerts_api.acknowledge, methods=["POST"]),
    Route("/admin/alerts/{alert_id}/snooze", alerts_api.snooze, methods=["POST"]),
    Route("/admin/alerts/{alert_id}/resolve", alerts_api.resolve, methods=["POST"]),
    # agent sessions and their escalations
    Route("/admin/sessions/{session_id}", sessions_api.get_session, methods=["GET"]),
    Route("/admin/escalations", sessions_api.list_escalations, methods=["GET"]),
    # An agent's own session stream: with its virtual key (not in the OpenAPI document,
    # which is the admin token's API; like /metrics)
    Route(
        "/v1/costwarden/session/{session_id}/events",
        sessions_api.session_events,
        methods=["GET"],
    ),
    Route(
        "/admin/escalations/{escalation_id}/resolve",
        sessions_api.resolve_escalation,
        methods=["POST"],
    ),
    # security policies of orgs and keys
    Route("/admin/security/policies", security_api.get_policies, methods=["GET"]),
    Route("/admin/orgs/{name}/security", security_api.put_org_policy, methods=["PUT"]),
    Route("/admin/orgs/{name}/security", security_api.delete_org_policy, methods=["DELETE"]),
    Route("/admin/keys/{key_id}/security", security_api.put_key_policy, methods=["PUT"]),
    Route("/admin/keys/{key_id}/security", security_api.delete_key_policy, methods=["DELETE"]),
)


def create_admin_app(ctx: AdminContext) -> Starlette:
    """The admin app (Starlette) over ``ctx``; every request it serves reads that context."""
    app = Starlette(routes=list(ROUTES), exception_handlers=exception_handlers())
    app.state.admin = ctx
    # The document names this gateway's routes and deployments; built once, served as is.
    app.state.openapi = openapi_document(sorted(ctx.route_table.routes), list(ctx.deployments))
    return app
