"""The admin API's OpenAPI document (served at ``/admin/openapi.json``).

Kept apart from the handlers so ``api.py`` reads as the behaviour; a test checks that every
route the admin app serves is described here, and a schemathesis run
(tests/admin/test_openapi_conformance.py) that the API answers as described: every status an
operation can answer is listed, and the request schemas (:mod:`costwarden.admin.openapi_inputs`)
allow exactly what the handlers accept. The gateway serves :func:`openapi_document`, which
adds its own route and deployment names.
"""

from __future__ import annotations

import copy
from typing import Any

from costwarden.admin.openapi_inputs import (
    CREATE_KEY,
    DELETE_LIMITS,
    EVENT_ID,
    EVENT_KINDS,
    LABEL,
    NAME,
    PUT_LIMITS,
    PUT_SWITCH,
    SINCE,
    SUBJECT,
    TIER_LIMITS,
    string,
)
from costwarden.budgets.limits import LIMIT_NAMES, MODES, SCOPES, TIER_SCOPES
from costwarden.core.event_kinds import KINDS, STREAM_CUT
from costwarden.storage.audit import DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT
from costwarden.storage.switches import FEATURES

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
_BEARER: list[dict[str, list[str]]] = [{"adminToken": []}]
_LIMIT_SCHEMA = {
    "type": "object",
    "properties": {
        "org": {"type": ["string", "null"]},
        "scope": {"type": "string", "enum": list(SCOPES)},
        "scope_id": {"type": ["string", "null"]},
        "limit_name": {"type": "string", "enum": list(LIMIT_NAMES)},
        "limit": {"type": "string"},
        "mode": {"type": "string", "enum": list(MODES)},
        "kind": {"type": "string", "enum": ["budget", "rate_limit"]},
        "metric": {"type": "string"},
        "window": {"type": "string"},
    },
}
_STATUS_SCHEMA = {
    "type": "object",
    "properties": {
        "scope": {"type": "string"},
        "scope_id": {"type": ["string", "null"]},
        "limit_name": {"type": "string"},
        "metric": {"type": "string"},
        "window": {"type": "string"},
        "kind": {"type": "string", "enum": ["budget", "rate_limit"]},
        "mode": {"type": "string"},
        "source": {"type": "string", "description": "override, or tier NAME"},
        "limit": {"type": "string"},
        "spent": {"type": "string"},
        "reserved": {"type": "string"},
        "remaining": {"type": "string"},
        "percent_used": {"type": "string"},
        "resets_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_TIER_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "source": {"type": "string", "enum": ["config", "api"]},
        "limits": {
            "type": "object",
            "description": "scope type -> {limit name: amount as text}",
            "propertyNames": {"enum": list(TIER_SCOPES)},
            "additionalProperties": {
                "type": "object",
                "propertyNames": {"enum": list(LIMIT_NAMES)},
                "additionalProperties": {"type": "string"},
            },
        },
    },
}

_SWITCH_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "platform:FEATURE or org:ORG_ID:FEATURE"},
        "scope": {"type": "string", "enum": ["platform", "org"]},
        "org": {"type": ["string", "null"]},
        "org_id": {"type": ["string", "null"]},
        "feature": {"type": "string", "enum": list(FEATURES)},
        "enabled": {"type": "boolean"},
        "message": {"type": ["string", "null"], "description": "null: the configured default"},
        "updated_by": {"type": "string"},
        "updated_at": {"type": "string", "format": "date-time"},
        "version": {"type": "integer"},
    },
}
_AUDIT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "ts": {"type": "string", "format": "date-time"},
        "actor": {"type": "string", "description": "admin-api, or cli:OS_USER"},
        "action": {"type": "string", "description": "e.g. switch.set"},
        "target": {"type": "string"},
        "old_value": {"description": "JSON value before the change; null if none"},
        "new_value": {"description": "JSON value after the change"},
    },
}
_DEPLOYMENT_HEALTH_SCHEMA = {
    "type": "object",
    "description": "one deployment's circuit breaker, as this gateway process sees it",
    "properties": {
        "deployment": {"type": "string", "description": "provider:model"},
        "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
        "reason": {"type": ["string", "null"], "description": "why it is in this state"},
        "last_success_at": {"type": ["string", "null"], "format": "date-time"},
        "last_failure_at": {"type": ["string", "null"], "format": "date-time"},
        "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
        "requests_in_window": {"type": "integer"},
        "consecutive_failures": {"type": "integer"},
        "opened_at": {"type": ["string", "null"], "format": "date-time"},
        "retry_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "when an open breaker lets a probe through (half-open)",
        },
    },
}
_ALERT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "description": "threshold | forecast | spike | service"},
        "rule": {"type": "string"},
        "severity": {"type": "string", "enum": ["info", "warning", "critical"]},
        "org_id": {"type": ["string", "null"]},
        "scope": {"type": ["string", "null"]},
        "scope_id": {"type": ["string", "null"]},
        "window_key": {"type": "string", "description": "which window instance"},
        "threshold_pct": {"type": ["integer", "null"]},
        "state": {"type": "string", "enum": ["firing", "acknowledged", "resolved"]},
        "title": {"type": "string"},
        "detail": {"type": "object", "description": "limit, spent, percent, resets_at, ..."},
        "fired_at": {"type": "string", "format": "date-time"},
        "resolves_at": {"type": ["string", "null"], "format": "date-time"},
        "snoozed_until": {"type": ["string", "null"], "format": "date-time"},
        "acknowledged_by": {"type": ["string", "null"]},
        "acknowledged_at": {"type": ["string", "null"], "format": "date-time"},
        "resolved_by": {"type": ["string", "null"]},
        "resolved_at": {"type": ["string", "null"], "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
# ------------------------------------------------------------------ errors

_ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
# Every error an operation can answer, by status: (component name, description).
_ERRORS: dict[str, tuple[str, str]] = {
    "400": ("BadRequest", "invalid_request_error: malformed JSON, a body nested over 32 "
            "levels, an unknown field, a value the schema refuses"),
    "401": ("Unauthorized", "authentication_error: missing or wrong admin token"),
    "403": ("AdminDisabled", "admin_disabled: COSTWARDEN_ADMIN_TOKEN is not set"),
    "404": ("NotFound", "not_found: an org, project, key, tier, route or deployment named "
            "in the path, query or body does not exist"),
    "409": ("Conflict", "conflict: a config-file tier, a tier still in use, a fallback "
            "cycle, or a concurrent write"),
    "413": ("TooLarge", "request_too_large: the body is over 1 MiB"),
    "503": ("Unavailable", "service_unavailable: the database cannot be reached; nothing "
            "was changed; retry after Retry-After seconds"),
}
_RESPONSES: dict[str, Any] = {
    name: {"description": text, "content": {"application/json": {"schema": _ERROR_BODY}}}
    for name, text in _ERRORS.values()
}
_RESPONSES["Unavailable"]["headers"] = {
    "Retry-After": {"required": True, "schema": {"type": "integer", "minimum": 1}}
}
# What a request can run into besides its own errors.
_AUTH = ("401", "403")
_READ = (*_AUTH, "503")  # reads the database
_WRITE = (*_AUTH, "400", "413", "503")  # takes a JSON body, writes the database


def _op(summary: str, ok: dict[str, Any], *codes: str, **extra: Any) -> dict[str, Any]:
    """An operation answering ``ok`` (status -> response) or one of the errors ``codes``."""
    responses = dict(ok)
    for code in sorted(set(codes)):
        responses[code] = {"$ref": f"#/components/responses/{_ERRORS[code][0]}"}
    return {"summary": summary, **extra, "responses": responses}


def _ok(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if schema is not None:
        response["content"] = {"application/json": {"schema": schema}}
    return {"200": response}


def _json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _query(name: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, **extra}


def _path(name: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, **extra}


_NEW_KEY = {
    "allOf": [_ref("Key"), {"required": ["key"], "properties": {"key": {"type": "string"}}}]
}
_ORG_QUERY = _query("org", string(NAME, "org name"))
# One server-sent event of /admin/events (a stream_cut frame has no id).
_SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string", "enum": sorted([*KINDS, STREAM_CUT])},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["event", "data"],
}
_NAME_PATH = _path("name", string(NAME))

# ------------------------------------------------------------------ paths

_KEY_PATHS: dict[str, Any] = {
    "/admin/orgs": {"get": _op("List orgs", _ok("{data: [Org]}"), *_READ)},
    "/admin/keys": {
        "get": _op(
            "List virtual keys (never the keys themselves)",
            _ok("{data: [Key]}"),
            *_READ, "400", "404",
            parameters=[_ORG_QUERY],
        ),
        "post": _op(
            "Create a virtual key; the org (and project) are created if new",
            {
                "201": {
                    "description": "the key, shown once, in field 'key'",
                    "content": {"application/json": {"schema": _NEW_KEY}},
                    "links": {
                        "Revoke": {
                            "operationId": "revokeKey",
                            "parameters": {"key_id": "$response.body#/id"},
                        }
                    },
                }
            },
            *_WRITE, "409",
            requestBody=_json_body(CREATE_KEY),
        ),
    },
    "/admin/keys/{key_id}/revoke": {
        "post": _op(
            "Revoke a key (live on every gateway within a second)",
            _ok("the revoked key", _ref("Key")),
            *_READ, "400", "404",
            operationId="revokeKey",
            parameters=[_path("key_id", {"type": "string", "pattern": "^key_[0-9a-f]{12}$"})],
        )
    },
    "/admin/usage": {
        "get": _op(
            "Spend by org, model and day",
            _ok("usage report"),
            *_READ, "400", "404",
            parameters=[
                _ORG_QUERY,
                _query(
                    "since",
                    string(SINCE, "7d, 24h, 30m, 2w back from now, or an ISO date; "
                           "empty: all time"),
                ),
            ],
        )
    },
}
_LIMIT_PATHS: dict[str, Any] = {
    "/admin/limits": {
        "get": _op(
            "Limits set explicitly: one org's and the platform's (all without org)",
            _ok("{org, org_id, limits: [Limit]}"),
            *_READ, "400", "404",
            parameters=[_ORG_QUERY],
        ),
        "put": _op(
            "Set limits on one scope instance; live on this gateway at once, on others "
            "within budgets.refresh_seconds",
            _ok("{org, org_id, limits: [Limit]} as stored"),
            *_WRITE, "404", "409",
            requestBody=_json_body(PUT_LIMITS),
        ),
        "delete": _op(
            "Clear limits of one scope instance (all of them without 'limits')",
            _ok("{deleted: n}"),
            *_WRITE, "404", "409",
            requestBody=_json_body(DELETE_LIMITS),
        ),
    },
    "/admin/budgets": {
        "get": _op(
            "Every limit applying to an org, with spent, reserved, remaining, percent used "
            "and reset time, from this gateway's counters",
            _ok("{org, org_id, limits: [LimitStatus]}"),
            *_READ, "400", "404",
            parameters=[{**_ORG_QUERY, "required": True}],
        )
    },
    "/admin/tiers": {
        "get": _op("Plan tiers: from the config file (source config) and the API",
                   _ok("{data: [Tier]}"), *_READ)
    },
    "/admin/tiers/{name}": {
        "put": _op(
            "Create or replace an API tier (config-file tiers are read-only: 409)",
            _ok("the tier", _ref("Tier")),
            *_WRITE, "409",
            parameters=[_NAME_PATH],
            requestBody=_json_body(TIER_LIMITS),
        ),
        "delete": _op(
            "Delete an API tier no org is on (409 while one is, or for a config-file tier)",
            _ok("{deleted: name}"),
            *_READ, "400", "404", "409",
            parameters=[_path("name", {"type": "string"})],
        ),
    },
    "/admin/orgs/{name}/tier": {
        "put": _op(
            "Put an org on a tier, or take it off (tier null)",
            _ok("{org, tier}"),
            *_WRITE, "404", "409",
            parameters=[_path("name", {"type": "string"})],
            requestBody=_json_body(
                {
                    "type": "object",
                    "required": ["tier"],
                    "additionalProperties": False,
                    "properties": {
                        "tier": {"type": ["string", "null"], "description": "404 if unknown"}
                    },
                }
            ),
        )
    },
}
_SWITCH_PATHS: dict[str, Any] = {
    "/admin/switches": {
        "get": _op("Kill switch and feature toggles: every switch set (on and off)",
                   _ok("{version, switches: [Switch]}"), *_READ),
        "put": _op(
            "Turn a feature on or off, platform-wide (org null) or for one org; live on this "
            "gateway at once, on others within switches.refresh_seconds; audited",
            _ok("the switch as stored", _ref("Switch")),
            *_WRITE, "404", "409",
            requestBody=_json_body(PUT_SWITCH),
        ),
    },
    "/admin/audit": {
        "get": _op(
            "Audit log (who changed what, old and new value), newest first",
            _ok("{data: [AuditEntry]}"),
            *_READ, "400",
            parameters=[
                _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_LIMIT,
                                 "default": DEFAULT_AUDIT_LIMIT}),
                _query("action", string(LABEL, "e.g. switch.set")),
            ],
        )
    },
}
_HEALTH_PATHS: dict[str, Any] = {
    "/admin/health/deployments": {
        "get": _op("Circuit breaker of every deployment (counts are this process's)",
                   _ok("{data: [DeploymentHealth]}"), *_AUTH)
    },
    "/admin/breakers/{deployment}/reset": {
        "post": _op(
            "Force a breaker closed, on every gateway sharing Redis; audited",
            _ok("the deployment's health after the reset", _ref("DeploymentHealth")),
            *_WRITE, "404", "409",
            parameters=[_path("deployment", {"type": "string"},
                              description="provider:model, percent-encoded")],
            requestBody=_json_body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"actor": string(NAME, "for the audit log")},
                },
                required=False,
            ),
        )
    },
    "/admin/events": {
        "get": _op(
            "Live events (server-sent events): request_settled, request_refused, "
            "breaker_changed, switch_changed, ...; filtered by kind and org; a heartbeat "
            "comment after 15 s of silence; resumes after the Last-Event-ID header (from the "
            "event log); a client that falls behind gets a last stream_cut event",
            {
                "200": {
                    "description": "id: N, event: KIND, data: JSON lines per event",
                    "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                }
            },
            *_AUTH, "400", "404",
            parameters=[
                _query("kind", string(EVENT_KINDS, "event kinds, comma-separated")),
                _ORG_QUERY,
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "schema": string(EVENT_ID, "an event id (blank: none)"),
                }
            ],
        )
    },
}
_ROUTE_PATHS: dict[str, Any] = {
    "/admin/routes": {
        "get": _op("Every route: deployments, fallbacks (config or admin), resolved chain, "
                   "retries, timeouts, degraded template", _ok("{routes: [Route]}"), *_AUTH)
    },
    "/admin/routes/{model}/fallbacks": {
        "put": _op(
            "Set a route's fallback chain (null: back to the config file's); an unknown name "
            "is a 400, a cycle through the other routes' chains a 409; audited, live on every "
            "gateway within a poll",
            _ok("the route"),
            *_WRITE, "404", "409",
            parameters=[_path("model", {"type": "string"})],
            requestBody=_json_body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["fallbacks"],
                    "properties": {
                        "fallbacks": {
                            "type": ["array", "null"],
                            "items": {"type": "string", "minLength": 1},
                            "description": "route names or provider:model ids",
                        }
                    },
                }
            ),
        )
    },
}

_ALERT_ID = _path("alert_id", {"type": "string"})


def _alert_action(summary: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return _op(
        summary,
        _ok("the alert", _ref("Alert")),
        *_WRITE, "404", "409",
        parameters=[_ALERT_ID],
        requestBody=_json_body(
            {
                "type": "object",
                "additionalProperties": False,
                "required": required,
                "properties": {"actor": string(NAME, "for the audit log"), **extra},
            },
            required=bool(required),
        ),
    )


_ALERT_PATHS: dict[str, Any] = {
    "/admin/risks": {
        "get": _op(
            "Risk signals for a product to show its user: high_token_usage (80 % of a daily "
            "token limit), upstream_failures (last hour, from the ledger), model_unavailable "
            "(an open breaker of a model the org used); [] when storage is unreachable",
            _ok("{data: [{type, rule, message, ratio, scope, scope_id, ...}]}"),
            *_AUTH, "400", "404",
            parameters=[
                _query("org", string(NAME, "org name"), required=True),
                _query("user", string(SUBJECT, "end user id")),
                _query("key", string(NAME, "key id of the org")),
            ],
        )
    },
    "/admin/alerts": {
        "get": _op(
            "Alerts, newest first (raised by the gateway: threshold crossings of every limit, "
            "once per rule, scope, window and threshold)",
            _ok("{data: [Alert]}"),
            *_READ, "400", "404",
            parameters=[
                _query("state", {"type": "string", "enum": ["firing", "acknowledged",
                                                             "resolved"]}),
                _ORG_QUERY,
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                 "default": 100}),
            ],
        )
    },
    "/admin/alerts/{alert_id}": {
        "get": _op("One alert, with its deliveries and every attempt (the delivery log)",
                   _ok("Alert + {deliveries: [...]}"), *_READ, "404",
                   parameters=[_ALERT_ID])
    },
    "/admin/alerts/{alert_id}/acknowledge": {
        "post": _alert_action("Acknowledge an alert: it stays open; audited with who and when",
                              {}, [])
    },
    "/admin/alerts/{alert_id}/snooze": {
        "post": _alert_action(
            "Hold an open alert's deliveries for some minutes; audited",
            {"minutes": {"type": "integer", "minimum": 1, "maximum": 7 * 24 * 60}},
            ["minutes"],
        )
    },
    "/admin/alerts/{alert_id}/resolve": {
        "post": _alert_action("Resolve an alert; deliveries not yet sent are dropped; audited",
                              {}, [])
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "costwarden admin API", "version": "0.1.0"},
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Key": _KEY_SCHEMA,
            "Limit": _LIMIT_SCHEMA,
            "LimitStatus": _STATUS_SCHEMA,
            "Tier": _TIER_SCHEMA,
            "Switch": _SWITCH_SCHEMA,
            "AuditEntry": _AUDIT_SCHEMA,
            "DeploymentHealth": _DEPLOYMENT_HEALTH_SCHEMA,
            "Alert": _ALERT_SCHEMA,
        },
        "responses": _RESPONSES,
    },
    "security": _BEARER,
    "paths": {
        **_KEY_PATHS,
        **_LIMIT_PATHS,
        **_SWITCH_PATHS,
        **_HEALTH_PATHS,
        **_ROUTE_PATHS,
        **_ALERT_PATHS,
    },
}


def openapi_document(routes: list[str], deployments: list[str]) -> dict[str, Any]:
    """The document of one gateway: OPENAPI with its route and deployment names as enums,
    so a fallback naming neither is a value the schema refuses (400), as the API does."""
    doc = copy.deepcopy(OPENAPI)
    fallbacks = doc["paths"]["/admin/routes/{model}/fallbacks"]["put"]
    fallbacks["parameters"][0]["schema"]["enum"] = list(routes)
    body = fallbacks["requestBody"]["content"]["application/json"]["schema"]
    body["properties"]["fallbacks"]["items"]["enum"] = sorted({*routes, *deployments})
    reset = doc["paths"]["/admin/breakers/{deployment}/reset"]["post"]
    reset["parameters"][0]["schema"]["enum"] = list(deployments)
    return doc
