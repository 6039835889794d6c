"""The alerts and risk-signal part of the admin API's OpenAPI document."""

from __future__ import annotations

from typing import Any

from costwarden.admin.channel_inputs import PUT_CHANNEL
from costwarden.admin.openapi_inputs import NAME, SUBJECT, string
from costwarden.admin.openapi_parts import (
    AUTH,
    READ,
    WRITE,
    json_body,
    ok,
    op,
    path_param,
    query,
    ref,
)

ALERT_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "kind": {
            "type": "string",
            "description": "threshold | forecast | spike | service | session",
        },
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

_ALERT_ID = path_param("alert_id", {"type": "string"})


def _alert_action(summary: str, extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return op(
        summary,
        ok("the alert", ref("Alert")),
        *WRITE, "404", "409",
        parameters=[_ALERT_ID],
        requestBody=json_body(
            {
                "type": "object",
                "additionalProperties": False,
                "required": required,
                "properties": {"actor": string(NAME, "for the audit log"), **extra},
            },
            required=bool(required),
        ),
    )


ALERT_PATHS: dict[str, Any] = {
    "/admin/risks": {
        "get": op(
            "Risk signals for a product to show its user: high_token_usage (80 % of a daily "
            "token limit), upstream_failures (last hour, from the ledger), model_unavailable "
            "(an open breaker of a model the org used), session_near_budget and "
            "session_runaway (agent sessions winding down, or paused for a person); [] when "
            "storage is unreachable",
            ok("{data: [{type, rule, message, ratio, scope, scope_id, ...}]}"),
            *AUTH, "400", "404",
            parameters=[
                query("org", string(NAME, "org name"), required=True),
                query("user", string(SUBJECT, "end user id")),
                query("key", string(NAME, "key id of the org")),
            ],
        )
    },
    "/admin/alerts": {
        "get": op(
            "Alerts, newest first (raised by the gateway: threshold crossings of every limit, "
            "once per rule, scope, window and threshold)",
            ok("{data: [Alert]}"),
            *READ, "400", "404",
            parameters=[
                query("state", {"type": "string", "enum": ["firing", "acknowledged",
                                                             "resolved"]}),
                query("org", string(NAME, "org name")),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 1000,
                                 "default": 100}),
            ],
        )
    },
    "/admin/alerts/{alert_id}": {
        "get": op("One alert, with its deliveries and every attempt (the delivery log)",
                   ok("Alert + {deliveries: [...]}"), *READ, "404",
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

_CHANNEL_NAME = path_param("name", string(NAME, "the channel's name"))
CHANNEL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "a channel as shown: no secret, no password, of a URL only scheme://host/…",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "type": {"type": "string", "enum": ["webhook", "slack", "email"]},
        "enabled": {"type": "boolean"},
        "source": {
            "type": "string",
            "enum": ["api", "config"],
            "description": "config: from the config file's [[alerts.channels]], read-only here",
        },
        "url": {"type": ["string", "null"]},
        "has_secret": {"type": "boolean"},
        "email": {"type": ["object", "null"]},
        "filter": {"type": "object"},
    },
}
_BY_NAME = {"name": "$request.path.name"}
CHANNEL_PATHS: dict[str, Any] = {
    "/admin/alert-channels": {
        "get": op("Alert channels (secrets never shown)", ok("{data: [AlertChannel]}"), *READ)
    },
    "/admin/alert-channels/{name}": {
        "put": op(
            "Create or replace a channel: a webhook signed per Standard Webhooks, a Slack "
            "incoming webhook, or e-mail over SMTP; filters by severity, org and kind; audited "
            "(409 for a channel of the config file)",
            {
                "200": {
                    "description": "the channel as stored (redacted)",
                    "content": {"application/json": {"schema": ref("AlertChannel")}},
                    "links": {
                        "Test": {"operationId": "testAlertChannel", "parameters": _BY_NAME},
                        "Deliveries": {
                            "operationId": "alertChannelDeliveries",
                            "parameters": _BY_NAME,
                        },
                        "Delete": {"operationId": "deleteAlertChannel", "parameters": _BY_NAME},
                    },
                }
            },
            *WRITE, "409",
            operationId="putAlertChannel",
            parameters=[_CHANNEL_NAME],
            requestBody=json_body(PUT_CHANNEL),
        ),
        "delete": op(
            "Disable a channel; its deliveries not yet sent are dropped (the log stays); 409 "
            "for a channel of the config file",
            ok("{name, enabled: false}"),
            *READ, "400", "404", "409",
            operationId="deleteAlertChannel",
            parameters=[_CHANNEL_NAME],
        ),
    },
    "/admin/alert-channels/{name}/test": {
        "post": op(
            "Send the channel a test message now (signed, for a webhook)",
            ok("{delivered, status, error}"),
            *READ, "400", "404",
            operationId="testAlertChannel",
            parameters=[_CHANNEL_NAME],
        )
    },
    "/admin/alert-channels/{name}/deliveries": {
        "get": op(
            "The channel's delivery log: each delivery and every attempt, newest first",
            ok("{data: [Delivery]}"),
            *READ, "400", "404",
            operationId="alertChannelDeliveries",
            parameters=[_CHANNEL_NAME],
        )
    },
}

