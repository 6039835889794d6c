"""The admin API's OpenAPI document (served at ``/admin/openapi.json``).

Kept apart from the handlers so ``api.py`` reads as the behaviour; a test checks that every
route the admin app serves is described here.
"""

from __future__ import annotations

from typing import Any

from costwarden.budgets.limits import LIMIT_NAMES, MODES, SCOPES, TIER_SCOPES
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
_ERROR = {"description": "error", "content": {"application/json": {"schema": {"type": "object"}}}}
_BEARER: list[dict[str, list[str]]] = [{"adminToken": []}]
_AMOUNT = {
    "type": ["string", "integer", "number"],
    "description": "USD as decimal text (at most 9 places), counts as integers; -1 = unlimited",
}
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
_TIER_LIMITS_SCHEMA = {
    "type": "object",
    "description": "scope type -> {limit name: amount}",
    "propertyNames": {"enum": list(TIER_SCOPES)},
    "additionalProperties": {
        "type": "object",
        "propertyNames": {"enum": list(LIMIT_NAMES)},
        "additionalProperties": _AMOUNT,
    },
}
_TIER_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "source": {"type": "string", "enum": ["config", "api"]},
        "limits": _TIER_LIMITS_SCHEMA,
    },
}
_TARGET_PROPERTIES: dict[str, Any] = {
    "org": {"type": ["string", "null"], "description": "org name; null for scope platform"},
    "scope": {"type": "string", "enum": list(SCOPES)},
    "scope_id": {
        "type": "string",
        "description": "project name or id, key id, end user, session id or tag name=value; "
        "omit for org and platform",
    },
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ORG_QUERY = {"name": "org", "in": "query", "schema": {"type": "string"}}
_NAME_PATH = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

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
_SWITCH_PATHS: dict[str, Any] = {
    "/admin/switches": {
        "get": {
            "summary": "Kill switch and feature toggles: every switch set (on and off)",
            "responses": {"200": {"description": "{version, switches: [Switch]}"}, "401": _ERROR},
        },
        "put": {
            "summary": "Turn a feature on or off, platform-wide (org null) or for one org; live "
            "on this gateway at once, on others within switches.refresh_seconds; audited",
            "requestBody": _json_body(
                {
                    "type": "object",
                    "required": ["feature", "enabled"],
                    "additionalProperties": False,
                    "properties": {
                        "org": {"type": ["string", "null"], "description": "null: platform"},
                        "feature": {
                            "type": "string",
                            "enum": list(FEATURES),
                            "description": "ai: every model call; an endpoint name; "
                            "streaming: requests with stream true",
                        },
                        "enabled": {"type": "boolean"},
                        "message": {"type": ["string", "null"], "maxLength": 500},
                        "confirm": {
                            "type": "string",
                            "enum": ["disable-all"],
                            "description": "required to switch ai off platform-wide",
                        },
                    },
                }
            ),
            "responses": {
                "200": {
                    "description": "the switch as stored",
                    "content": {"application/json": {"schema": _ref("Switch")}},
                },
                "400": _ERROR,
                "401": _ERROR,
                "404": _ERROR,
            },
        },
    },
    "/admin/audit": {
        "get": {
            "summary": "Audit log (who changed what, old and new value), newest first",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                },
                {"name": "action", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "{data: [AuditEntry]}"}, "400": _ERROR},
        }
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
_ROUTE_PATHS: dict[str, Any] = {
    "/admin/routes": {
        "get": {
            "summary": "Every route: deployments, fallbacks (config or admin), resolved chain, "
            "retries, timeouts, degraded template",
            "responses": {"200": {"description": "{routes: [Route]}"}, "401": _ERROR},
        }
    },
    "/admin/routes/{model}/fallbacks": {
        "put": {
            "summary": "Set a route's fallback chain (null: back to the config file's); "
            "validated (unknown names, cycles), audited, live on every gateway within a poll",
            "parameters": [
                {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["fallbacks"],
                            "properties": {
                                "fallbacks": {
                                    "type": ["array", "null"],
                                    "items": {"type": "string"},
                                    "description": "route names or provider:model ids",
                                }
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": "the route"},
                "400": _ERROR,
                "401": _ERROR,
                "404": _ERROR,
            },
        }
    },
}
_HEALTH_PATHS: dict[str, Any] = {
    "/admin/health/deployments": {
        "get": {
            "summary": "Circuit breaker of every deployment (counts are this process's)",
            "responses": {"200": {"description": "{data: [DeploymentHealth]}"}, "401": _ERROR},
        }
    },
    "/admin/breakers/{deployment}/reset": {
        "post": {
            "summary": "Force a breaker closed, on every gateway sharing Redis; audited",
            "parameters": [
                {
                    "name": "deployment",
                    "in": "path",
                    "required": True,
                    "description": "provider:model, percent-encoded",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "actor": {"type": "string", "description": "for the audit log"}
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "the deployment's health after the reset",
                    "content": {"application/json": {"schema": _ref("DeploymentHealth")}},
                },
                "400": _ERROR,
                "401": _ERROR,
                "404": _ERROR,
            },
        }
    },
    "/admin/events": {
        "get": {
            "summary": "Live events (server-sent events): breaker_changed, ...; a heartbeat "
            "comment after 15 s of silence; resumes after the Last-Event-ID header",
            "parameters": [
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"}}
            ],
            "responses": {
                "200": {
                    "description": "id: N, event: KIND, data: JSON lines per event",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "400": _ERROR,
                "401": _ERROR,
            },
        }
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
        },
    },
    "security": _BEARER,
    "paths": {
        **_SWITCH_PATHS,
        **_HEALTH_PATHS,
        **_ROUTE_PATHS,
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
        "/admin/limits": {
            "get": {
                "summary": "Limits set explicitly: one org's and the platform's (all without org)",
                "parameters": [_ORG_QUERY],
                "responses": {
                    "200": {"description": "{org, org_id, limits: [Limit]}"},
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
            "put": {
                "summary": "Set limits on one scope instance; live on this gateway at once, "
                "on others within budgets.refresh_seconds",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["scope", "limits"],
                        "additionalProperties": False,
                        "properties": {
                            **_TARGET_PROPERTIES,
                            "limits": {
                                "type": "object",
                                "propertyNames": {"enum": list(LIMIT_NAMES)},
                                "additionalProperties": _AMOUNT,
                                "minProperties": 1,
                            },
                            "mode": {
                                "type": "string",
                                "enum": list(MODES),
                                "description": "budgets only (rate limits are always soft); "
                                "omitted: keep an existing limit's mode, new ones hard",
                            },
                        },
                    }
                ),
                "responses": {
                    "200": {"description": "{org, org_id, limits: [Limit]} as stored"},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
            "delete": {
                "summary": "Clear limits of one scope instance (all of them without 'limits')",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["scope"],
                        "additionalProperties": False,
                        "properties": {
                            **_TARGET_PROPERTIES,
                            "limits": {
                                "type": "array",
                                "items": {"type": "string", "enum": list(LIMIT_NAMES)},
                            },
                        },
                    }
                ),
                "responses": {
                    "200": {"description": "{deleted: n}"},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            },
        },
        "/admin/budgets": {
            "get": {
                "summary": "Every limit applying to an org, with spent, reserved, remaining, "
                "percent used and reset time, from this gateway's counters",
                "parameters": [{**_ORG_QUERY, "required": True}],
                "responses": {
                    "200": {"description": "{org, org_id, limits: [LimitStatus]}"},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            }
        },
        "/admin/tiers": {
            "get": {
                "summary": "Plan tiers: from the config file (source config) and the API",
                "responses": {"200": {"description": "{data: [Tier]}"}, "401": _ERROR},
            }
        },
        "/admin/tiers/{name}": {
            "put": {
                "summary": "Create or replace an API tier (config-file tiers are read-only)",
                "parameters": [_NAME_PATH],
                "requestBody": _json_body(_TIER_LIMITS_SCHEMA),
                "responses": {
                    "200": {
                        "description": "the tier",
                        "content": {"application/json": {"schema": _ref("Tier")}},
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                    "409": _ERROR,
                },
            },
            "delete": {
                "summary": "Delete an API tier no org is on",
                "parameters": [_NAME_PATH],
                "responses": {
                    "200": {"description": "{deleted: name}"},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                    "409": _ERROR,
                },
            },
        },
        "/admin/orgs/{name}/tier": {
            "put": {
                "summary": "Put an org on a tier, or take it off (tier null)",
                "parameters": [_NAME_PATH],
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["tier"],
                        "additionalProperties": False,
                        "properties": {"tier": {"type": ["string", "null"]}},
                    }
                ),
                "responses": {
                    "200": {"description": "{org, tier}"},
                    "400": _ERROR,
                    "401": _ERROR,
                    "404": _ERROR,
                },
            }
        },
    },
}
