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

from costwarden.admin.openapi_alerts import (
    ALERT_PATHS,
    ALERT_SCHEMA,
    CHANNEL_PATHS,
    CHANNEL_SCHEMA,
)
from costwarden.admin.openapi_analytics import ANALYTICS_PATHS, TOTALS_SCHEMA
from costwarden.admin.openapi_inputs import (
    CREATE_KEY,
    DELETE_LIMITS,
    EVENT_ID,
    EVENT_KINDS,
    LABEL,
    NAME,
    PUT_LIMITS,
    PUT_SWITCH,
    SET_KEY_OPTIONS,
    SINCE,
    TIER_LIMITS,
    string,
)
from costwarden.admin.openapi_parts import (
    AUTH,
    READ,
    RESPONSES,
    WRITE,
    json_body,
    ok,
    op,
    path_param,
    query,
    ref,
)
from costwarden.admin.openapi_rules import RULE_PATHS, RULE_SCHEMA
from costwarden.admin.openapi_security import POLICY_SCHEMA, SECURITY_PATHS
from costwarden.admin.openapi_sessions import ESCALATION_SCHEMA, SESSION_PATHS, SESSION_SCHEMA
from costwarden.budgets.limits import LIMIT_NAMES, MODES, SCOPES, TIER_SCOPES
from costwarden.core.event_kinds import KINDS, STREAM_CUT
from costwarden.core.records import HONEYPOT_ACTIONS
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
        "session_clean_stop": {"type": "boolean"},
        "session_budget_note": {"type": "boolean"},
        "honeypot": {"type": "boolean", "description": "answered as an unknown key; alerts"},
        "honeypot_action": {
            "type": ["string", "null"],
            "enum": [*HONEYPOT_ACTIONS, None],
            "description": "a honeypot's action (alert, switch_off_org); null for other keys",
        },
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
_NEW_KEY = {
    "allOf": [ref("Key"), {"required": ["key"], "properties": {"key": {"type": "string"}}}]
}
_ORG_QUERY = query("org", string(NAME, "org name"))
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
_NAME_PATH = path_param("name", string(NAME))

# ------------------------------------------------------------------ paths

_KEY_PATHS: dict[str, Any] = {
    "/admin/orgs": {"get": op("List orgs", ok("{data: [Org]}"), *READ)},
    "/admin/keys": {
        "get": op(
            "List virtual keys (never the keys themselves)",
            ok("{data: [Key]}"),
            *READ, "400", "404",
            parameters=[_ORG_QUERY],
        ),
        "post": op(
            "Create a virtual key (or a honeypot key: answered as an unknown key, its use a "
            "critical alert); the org (and project) are created if new",
            {
                "201": {
                    "description": "the key, shown once, in field 'key'",
                    "content": {"application/json": {"schema": _NEW_KEY}},
                    "links": {
                        "Revoke": {
                            "operationId": "revokeKey",
                            "parameters": {"key_id": "$response.body#/id"},
                        },
                        "SetOptions": {
                            "operationId": "setKeyOptions",
                            "parameters": {"key_id": "$response.body#/id"},
                        },
                    },
                }
            },
            *WRITE, "409",
            requestBody=json_body(CREATE_KEY),
        ),
    },
    "/admin/keys/{key_id}/options": {
        "put": op(
            "Set a key's agent-session options (live on every gateway within a second)",
            ok("the key", ref("Key")),
            *WRITE, "404",
            operationId="setKeyOptions",
            parameters=[path_param("key_id", {"type": "string", "pattern": "^key_[0-9a-f]{12}$"})],
            requestBody=json_body(SET_KEY_OPTIONS),
        )
    },
    "/admin/keys/{key_id}/revoke": {
        "post": op(
            "Revoke a key (live on every gateway within a second)",
            ok("the revoked key", ref("Key")),
            *READ, "400", "404",
            operationId="revokeKey",
            parameters=[path_param("key_id", {"type": "string", "pattern": "^key_[0-9a-f]{12}$"})],
        )
    },
    "/admin/usage": {
        "get": op(
            "Spend by org, model and day",
            ok("usage report"),
            *READ, "400", "404",
            parameters=[
                _ORG_QUERY,
                query(
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
        "get": op(
            "Limits set explicitly: one org's and the platform's (all without org)",
            ok("{org, org_id, limits: [Limit]}"),
            *READ, "400", "404",
            parameters=[_ORG_QUERY],
        ),
        "put": op(
            "Set limits on one scope instance; live on this gateway at once, on others "
            "within budgets.refresh_seconds",
            ok("{org, org_id, limits: [Limit]} as stored"),
            *WRITE, "404", "409",
            requestBody=json_body(PUT_LIMITS),
        ),
        "delete": op(
            "Clear limits of one scope instance (all of them without 'limits')",
            ok("{deleted: n}"),
            *WRITE, "404", "409",
            requestBody=json_body(DELETE_LIMITS),
        ),
    },
    "/admin/budgets": {
        "get": op(
            "Every limit applying to an org, with spent, reserved, remaining, percent used "
            "and reset time, from this gateway's counters",
            ok("{org, org_id, limits: [LimitStatus]}"),
            *READ, "400", "404",
            parameters=[{**_ORG_QUERY, "required": True}],
        )
    },
    "/admin/tiers": {
        "get": op("Plan tiers: from the config file (source config) and the API",
                   ok("{data: [Tier]}"), *READ)
    },
    "/admin/tiers/{name}": {
        "put": op(
            "Create or replace an API tier (config-file tiers are read-only: 409)",
            ok("the tier", ref("Tier")),
            *WRITE, "409",
            parameters=[_NAME_PATH],
            requestBody=json_body(TIER_LIMITS),
        ),
        "delete": op(
            "Delete an API tier no org is on (409 while one is, or for a config-file tier)",
            ok("{deleted: name}"),
            *READ, "400", "404", "409",
            parameters=[path_param("name", {"type": "string"})],
        ),
    },
    "/admin/orgs/{name}/tier": {
        "put": op(
            "Put an org on a tier, or take it off (tier null)",
            ok("{org, tier}"),
            *WRITE, "404", "409",
            parameters=[path_param("name", {"type": "string"})],
            requestBody=json_body(
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
        "get": op("Kill switch and feature toggles: every switch set (on and off)",
                   ok("{version, switches: [Switch]}"), *READ),
        "put": op(
            "Turn a feature on or off, platform-wide (org null) or for one org; live on this "
            "gateway at once, on others within switches.refresh_seconds; audited",
            ok("the switch as stored", ref("Switch")),
            *WRITE, "404", "409",
            requestBody=json_body(PUT_SWITCH),
        ),
    },
    "/admin/audit": {
        "get": op(
            "Audit log (who changed what, old and new value), newest first",
            ok("{data: [AuditEntry]}"),
            *READ, "400",
            parameters=[
                query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_LIMIT,
                                 "default": DEFAULT_AUDIT_LIMIT}),
                query("action", string(LABEL, "e.g. switch.set")),
            ],
        )
    },
}
_HEALTH_PATHS: dict[str, Any] = {
    "/admin/health/deployments": {
        "get": op("Circuit breaker of every deployment (counts are this process's)",
                   ok("{data: [DeploymentHealth]}"), *AUTH)
    },
    "/admin/breakers/{deployment}/reset": {
        "post": op(
            "Force a breaker closed, on every gateway sharing Redis; audited",
            ok("the deployment's health after the reset", ref("DeploymentHealth")),
            *WRITE, "404", "409",
            parameters=[path_param("deployment", {"type": "string"},
                              description="provider:model, percent-encoded")],
            requestBody=json_body(
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
        "get": op(
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
            *AUTH, "400", "404",
            parameters=[
                query("kind", string(EVENT_KINDS, "event kinds, comma-separated")),
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
        "get": op("Every route: deployments, fallbacks (config or admin), resolved chain, "
                   "retries, timeouts, degraded template, strategy and weights, downgrade "
                   "rules, response cache", ok("{routes: [Route]}"), *AUTH)
    },
    "/admin/routes/{model}/fallbacks": {
        "put": op(
            "Set a route's fallback chain (null: back to the config file's); an unknown name "
            "is a 400, a cycle through the other routes' chains a 409; audited, live on every "
            "gateway within a poll",
            ok("the route"),
            *WRITE, "404", "409",
            parameters=[path_param("model", {"type": "string"})],
            requestBody=json_body(
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
            "Alert": ALERT_SCHEMA,
            "AlertChannel": CHANNEL_SCHEMA,
            "AlertRule": RULE_SCHEMA,
            "AnalyticsTotals": TOTALS_SCHEMA,
            "AgentSession": SESSION_SCHEMA,
            "Escalation": ESCALATION_SCHEMA,
            "SecurityPolicy": POLICY_SCHEMA,
        },
        "responses": RESPONSES,
    },
    "security": _BEARER,
    "paths": {
        **_KEY_PATHS,
        **_LIMIT_PATHS,
        **_SWITCH_PATHS,
        **_HEALTH_PATHS,
        **_ROUTE_PATHS,
        **ALERT_PATHS,
        **CHANNEL_PATHS,
        **RULE_PATHS,
        **ANALYTICS_PATHS,
        **SESSION_PATHS,
        **SECURITY_PATHS,
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
