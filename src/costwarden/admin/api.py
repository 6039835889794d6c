"""The admin API: JSON under ``/admin``, an OpenAPI schema, bearer-token auth.

Handlers are thin: they parse input, call storage in a worker thread (the event loop keeps
serving gateway traffic meanwhile) and, for key changes, update the running gateway's key
cache at once so the change is live without waiting for the poller. Limit and tier writes
reload this process's limits at once; other gateway processes poll for them within
``budgets.refresh_seconds``.

Errors (answered by :mod:`costwarden.admin.common`, shared by every admin module): bad input
is 400 (``invalid_request_error``), an unknown org, project, key or tier is 404
(``not_found``), writing a tier defined in the config file is 409 (``conflict``), a body over
1 MiB is 413, a database that cannot answer is 503 (``service_unavailable``, ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from costwarden.admin.common import body_json, error, exception_handlers
from costwarden.admin.health_api import health_routes
from costwarden.admin.openapi import openapi_document
from costwarden.admin.routes_api import route_routes
from costwarden.admin.switches_api import switch_routes
from costwarden.budgets.limits import (
    MODES,
    SCOPES,
    Limit,
    Tier,
    format_amount,
    tier_to_mapping,
)
from costwarden.budgets.status import live_status
from costwarden.core.errors import Conflict, InvalidInput, NotFound
from costwarden.core.periods import parse_since
from costwarden.core.records import KeyRecord
from costwarden.storage import policy, repo
from costwarden.storage.usage import usage_report

if TYPE_CHECKING:
    from costwarden.app.factory import CostwardenApp

logger = logging.getLogger(__name__)


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
    }


def limit_json(limit: Limit, org_name: str | None) -> dict[str, Any]:
    """One explicitly set limit; ``org_name`` is None for platform limits."""
    return {
        "org": org_name,
        "scope": limit.scope,
        "scope_id": limit.subject or None,
        "limit_name": limit.name,
        "limit": format_amount(limit.metric, limit.amount),
        "mode": limit.mode,
        "kind": "rate_limit" if limit.rolling else "budget",
        "metric": limit.metric,
        "window": limit.window,
    }


def tier_json(tier: Tier) -> dict[str, Any]:
    return {"name": tier.name, "source": tier.source, "limits": tier_to_mapping(tier)}


def config_tier_conflict(name: str) -> str:
    return (
        f"tier {name!r} is defined in the config file ([[tiers]]); "
        "change it there, or use another name"
    )


def create_admin_app(gateway: CostwardenApp) -> Starlette:
    engine = gateway.engine

    def authorized(request: Request) -> JSONResponse | None:
        token = gateway.settings.admin_token
        if not token:
            return error(403, "admin_disabled", "the admin API is off: set COSTWARDEN_ADMIN_TOKEN")
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return error(401, "authentication_error", "missing or wrong admin token")
        return None

    async def reload_limits() -> None:
        """Apply a committed policy write in this process now (the poller would within
        refresh_seconds, and retries if this fails)."""
        try:
            await gateway.enforcer.refresh()
        except Exception as exc:
            logger.warning(
                "limits saved; reloading them at once failed (the poller retries): %s: %s",
                type(exc).__name__,
                exc,
            )

    def config_tier_names() -> list[str]:
        return [t.name for t in gateway.enforcer.config_tiers]

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "keys": len(gateway.keys)})

    document = openapi_document(sorted(gateway.routes), sorted(gateway.settings.deployments))

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def list_orgs(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        orgs = await asyncio.to_thread(repo.list_orgs, engine)
        return JSONResponse({"data": [_org_json(o) for o in orgs]})

    async def list_keys(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        org = request.query_params.get("org")
        keys = await asyncio.to_thread(repo.list_keys, engine, org)
        return JSONResponse({"data": [key_json(k) for k in keys]})

    async def create_key(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        data = await body_json(request, allowed={"org", "project", "name"})
        org = data.get("org")
        project = data.get("project")
        name = data.get("name")
        if not isinstance(org, str):
            raise InvalidInput("'org' is required and must be a string")
        for field, value in (("project", project), ("name", name)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"'{field}' must be a string")
        plaintext, record = await asyncio.to_thread(
            repo.create_key, engine, org=org, project=project, name=name
        )
        gateway.keys.apply([record])
        return JSONResponse({"key": plaintext, **key_json(record)}, status_code=201)

    async def revoke_key(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        record = await asyncio.to_thread(repo.revoke_key, engine, request.path_params["key_id"])
        gateway.keys.apply([record])
        return JSONResponse(key_json(record))

    async def usage(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        since = parse_since(request.query_params.get("since", "7d"))
        org = request.query_params.get("org")
        report = await asyncio.to_thread(usage_report, engine, org=org, since=since)
        return JSONResponse(report.to_json_dict())

    # ------------------------------------------------------------------ limits

    async def get_limits(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        org = request.query_params.get("org")
        org_id, names = await asyncio.to_thread(_org_names, engine, org)
        limits = await asyncio.to_thread(policy.list_limits, engine)
        if org_id is not None:
            limits = [lim for lim in limits if lim.org_id in (org_id, "")]
        return JSONResponse(
            {
                "org": names[org_id] if org_id is not None else None,
                "org_id": org_id,
                "limits": [limit_json(lim, names.get(lim.org_id)) for lim in limits],
            }
        )

    async def put_limits(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        data = await body_json(request, allowed={"org", "scope", "scope_id", "limits", "mode"})
        org, scope, subject = _target(data)
        amounts = data.get("limits")
        if not isinstance(amounts, dict) or not amounts:
            raise InvalidInput(
                "'limits' is required: an object of limit name to amount, e.g. "
                '{"daily_usd": "5", "requests_per_minute": 60}'
            )
        mode = data.get("mode")
        if mode is not None and mode not in MODES:
            raise InvalidInput(f"'mode' must be one of {', '.join(MODES)}, got {mode!r}")
        limits = await asyncio.to_thread(
            policy.set_limits,
            engine,
            org=org,
            scope=scope,
            subject=subject,
            amounts=amounts,
            mode=mode,
        )
        await reload_limits()
        org_name = org.strip() if org is not None else None
        return JSONResponse(
            {
                "org": org_name,
                "org_id": limits[0].org_id or None,
                "limits": [limit_json(lim, org_name) for lim in limits],
            }
        )

    async def delete_limits(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        data = await body_json(request, allowed={"org", "scope", "scope_id", "limits"})
        org, scope, subject = _target(data)
        names = data.get("limits")
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise InvalidInput("'limits' must be a list of limit names (omit it to clear all)")
        deleted = await asyncio.to_thread(
            policy.clear_limits, engine, org=org, scope=scope, subject=subject, names=names
        )
        if deleted:
            await reload_limits()
        return JSONResponse({"deleted": deleted})

    async def budgets(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        org = request.query_params.get("org")
        if org is None or not org.strip():
            raise InvalidInput("query parameter 'org' is required")
        record = await asyncio.to_thread(repo.get_org_by_name, engine, org.strip())
        if record is None:
            raise NotFound(f"unknown org {org!r}")
        enforcer = gateway.enforcer
        statuses = await live_status(
            enforcer.book,
            enforcer.store,
            record.id,
            gateway.clock(),
            gateway.settings.budgets.timezone,
        )
        return JSONResponse(
            {
                "org": record.name,
                "org_id": record.id,
                "limits": [s.to_json() for s in statuses],
            }
        )

    # ------------------------------------------------------------------ tiers

    async def list_tiers(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        stored = await asyncio.to_thread(policy.list_tiers, engine)
        tiers = [*gateway.enforcer.config_tiers, *stored]
        return JSONResponse({"data": [tier_json(t) for t in tiers]})

    async def put_tier(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        name = request.path_params["name"]
        if name.strip() in config_tier_names():
            raise Conflict(config_tier_conflict(name.strip()))
        data = await body_json(request)
        tier = await asyncio.to_thread(policy.set_tier, engine, name, data)
        await reload_limits()
        return JSONResponse(tier_json(tier))

    async def delete_tier(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        name = request.path_params["name"]
        if name.strip() in config_tier_names():
            raise Conflict(config_tier_conflict(name.strip()))
        await asyncio.to_thread(policy.delete_tier, engine, name)
        await reload_limits()
        return JSONResponse({"deleted": name.strip()})

    async def set_org_tier(request: Request) -> Response:
        if denied := authorized(request):
            return denied
        org = request.path_params["name"]
        data = await body_json(request, allowed={"tier"})
        if "tier" not in data:
            raise InvalidInput("'tier' is required: a tier name, or null to take the org off")
        tier = data["tier"]
        if tier is not None and not isinstance(tier, str):
            raise InvalidInput("'tier' must be a tier name or null")
        await asyncio.to_thread(
            policy.set_org_tier, engine, org, tier, known_tiers=config_tier_names()
        )
        await reload_limits()
        return JSONResponse({"org": org.strip(), "tier": tier.strip() if tier else None})

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/admin/openapi.json", openapi),
            Route("/admin/orgs", list_orgs),
            Route("/admin/keys", list_keys, methods=["GET"]),
            Route("/admin/keys", create_key, methods=["POST"]),
            Route("/admin/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
            Route("/admin/usage", usage),
            Route("/admin/limits", get_limits, methods=["GET"]),
            Route("/admin/limits", put_limits, methods=["PUT"]),
            Route("/admin/limits", delete_limits, methods=["DELETE"]),
            Route("/admin/budgets", budgets, methods=["GET"]),
            Route("/admin/tiers", list_tiers, methods=["GET"]),
            Route("/admin/tiers/{name}", put_tier, methods=["PUT"]),
            Route("/admin/tiers/{name}", delete_tier, methods=["DELETE"]),
            Route("/admin/orgs/{name}/tier", set_org_tier, methods=["PUT"]),
            *switch_routes(gateway, authorized, body_json),
            *health_routes(gateway, authorized, body_json),
            *route_routes(gateway, authorized, body_json),
        ],
        exception_handlers=exception_handlers(),
    )


def _org_json(org: repo.OrgRecord) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}


def _org_names(engine: Any, org: str | None) -> tuple[str | None, dict[str, str]]:
    """(the id of ``org`` or None when not given, {org id: name}); NotFound if unknown."""
    names = {o.id: o.name for o in repo.list_orgs(engine)}
    if org is None:
        return None, names
    wanted = org.strip()
    for org_id, name in names.items():
        if name == wanted:
            return org_id, names
    raise NotFound(f"unknown org {org!r}")


def _target(data: dict[str, Any]) -> tuple[str | None, str, str]:
    """(org name or None, scope, subject) from a limits request body."""
    org = data.get("org")
    if org is not None and not isinstance(org, str):
        raise InvalidInput("'org' must be an org name, or null for the platform scope")
    scope = data.get("scope")
    if not isinstance(scope, str):
        raise InvalidInput(f"'scope' is required: one of {', '.join(SCOPES)}")
    subject = data.get("scope_id")
    if subject is None:
        subject = ""
    if not isinstance(subject, str):
        raise InvalidInput("'scope_id' must be a string")
    return org, scope, subject
