"""The admin API: JSON under ``/admin``, an OpenAPI schema, bearer-token auth.

Handlers are thin: they parse input, call storage in a worker thread (the event loop keeps
serving gateway traffic meanwhile) and, for key changes, update the running gateway's key
cache at once so the change is live without waiting for the poller.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from costwarden.errors import InvalidInput, NotFound
from costwarden.periods import parse_since
from costwarden.storage import repo
from costwarden.storage.records import KeyRecord
from costwarden.storage.usage import usage_report

if TYPE_CHECKING:
    from costwarden.app import CostwardenApp

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


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def create_admin_app(gateway: CostwardenApp) -> Starlette:
    engine = gateway.engine

    def authorized(request: Request) -> JSONResponse | None:
        token = gateway.settings.admin_token
        if not token:
            return _error(403, "admin_disabled", "the admin API is off: set COSTWARDEN_ADMIN_TOKEN")
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            return _error(401, "authentication_error", "missing or wrong admin token")
        return None

    async def body_json(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            raise InvalidInput("request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise InvalidInput("request body must be a JSON object")
        return data

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "keys": len(gateway.keys)})

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

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
        data = await body_json(request)
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

    async def on_invalid(request: Request, exc: Exception) -> Response:
        return _error(400, "invalid_request_error", str(exc))

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return _error(404, "not_found", str(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, kind, f"{request.method} {request.url.path}: {exc.detail}")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/admin/openapi.json", openapi),
            Route("/admin/orgs", list_orgs),
            Route("/admin/keys", list_keys, methods=["GET"]),
            Route("/admin/keys", create_key, methods=["POST"]),
            Route("/admin/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
            Route("/admin/usage", usage),
        ],
        exception_handlers={
            InvalidInput: on_invalid,
            NotFound: on_not_found,
            HTTPException: on_http,
        },
    )


def _org_json(org: repo.OrgRecord) -> dict[str, Any]:
    return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}


_KEY_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "prefix": {"type": "string"},
        "org": {"type": "string"},
        "project": {"type": ["string", "null"]},
        "name": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "revoked_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_ERROR = {"description": "error", "content": {"application/json": {"schema": {"type": "object"}}}}
_BEARER: list[dict[str, list[str]]] = [{"adminToken": []}]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "costwarden admin API", "version": "0.1.0"},
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {"Key": _KEY_SCHEMA},
    },
    "security": _BEARER,
    "paths": {
        "/admin/orgs": {
            "get": {"summary": "List orgs", "responses": {"200": {"description": "orgs"}}}
        },
        "/admin/keys": {
            "get": {
                "summary": "List virtual keys (never the keys themselves)",
                "parameters": [{"name": "org", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "keys"}, "401": _ERROR},
            },
            "post": {
                "summary": "Create a virtual key; the org (and project) are created if new",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["org"],
                                "properties": {
                                    "org": {"type": "string"},
                                    "project": {"type": "string"},
                                    "name": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": {"description": "the key, shown once, in field 'key'"},
                    "400": _ERROR,
                    "401": _ERROR,
                },
            },
        },
        "/admin/keys/{key_id}/revoke": {
            "post": {
                "summary": "Revoke a key (live on every gateway within a second)",
                "parameters": [
                    {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": {"description": "revoked key"}, "404": _ERROR},
            }
        },
        "/admin/usage": {
            "get": {
                "summary": "Spend by org, model and day",
                "parameters": [
                    {"name": "org", "in": "query", "schema": {"type": "string"}},
                    {"name": "since", "in": "query", "schema": {"type": "string", "default": "7d"}},
                ],
                "responses": {"200": {"description": "usage report"}, "404": _ERROR},
            }
        },
    },
}
