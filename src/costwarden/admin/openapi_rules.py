"""The alert rules part of the admin API's OpenAPI document (``PUT /admin/alert-rules`` body:
one branch per kind of target, mirroring ``admin.alert_rules_api.rule_target`` and
``storage.alert_rules``)."""

from __future__ import annotations

from typing import Any

from costwarden.admin.openapi_inputs import NAME, limits_target, string
from costwarden.admin.openapi_parts import (
    READ,
    WRITE,
    json_body,
    ok,
    op,
    path_param,
    query,
    ref,
)
from costwarden.budgets.alert_lines import MAX_LINE_PCT, MAX_LINES
from costwarden.budgets.limits import LIMIT_NAMES, TIER_SCOPES

_NULL = {"type": "null"}
_RULE_FIELDS: dict[str, Any] = {
    "limit": {
        "type": ["string", "null"],
        "enum": [*LIMIT_NAMES, None],
        "description": "one limit of the scope; omitted or null: every limit",
    },
    "thresholds": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_LINES,
        "items": {"type": "integer", "exclusiveMinimum": 0, "maximum": MAX_LINE_PCT},
        "description": "percents of the limit whose crossing alerts (above 100: soft budgets)",
    },
}
# The scope types with many instances per org (a rule may cover all of them).
_TYPE_SCOPES = ["project", "key", "user", "session", "tag"]


def _branch(title: str, required: list[str], **properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "title": title,
        "additionalProperties": False,
        "required": [*required, "thresholds"],
        "properties": {**properties, **_RULE_FIELDS},
    }


_INSTANCE = limits_target({**_RULE_FIELDS, "tier": _NULL}, ["thresholds"])["oneOf"]
_EVERY = _branch(
    "every instance of a scope type in an org",
    ["org", "scope"],
    org=string(NAME, "org name"),
    scope={"type": "string", "enum": _TYPE_SCOPES},
    scope_id={**_NULL, "description": "omitted or null: every instance"},
    tier=_NULL,
)
_TIER = _branch(
    "a scope type on a plan tier",
    ["scope", "tier"],
    org={**_NULL, "description": "a tier's rule covers every org on the tier"},
    scope={"type": "string", "enum": list(TIER_SCOPES)},
    scope_id=_NULL,
    tier=string(NAME, "tier name (config file or API)"),
)
PUT_RULE: dict[str, Any] = {"oneOf": [*_INSTANCE, _EVERY, _TIER]}

RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": ["threshold"]},
        "org": {"type": ["string", "null"]},
        "org_id": {"type": ["string", "null"]},
        "scope": {"type": "string"},
        "scope_id": {"type": ["string", "null"], "description": "null: every instance"},
        "tier": {"type": ["string", "null"]},
        "limit": {"type": ["string", "null"], "description": "null: every limit"},
        "thresholds": {"type": "array", "items": {"type": "integer"}},
        "created_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}

RULE_PATHS: dict[str, Any] = {
    "/admin/alert-rules": {
        "get": op(
            "Threshold alert rules, oldest first; with org, its rules and the tiers' rules",
            ok("{data: [AlertRule]}"),
            *READ, "400", "404",
            parameters=[query("org", string(NAME, "org name"))],
        ),
        "put": op(
            "Set the threshold lines (percent of a limit; default 50, 80, 100) of a scope "
            "instance, of every instance of a scope type in an org, or of a scope type on a "
            "plan tier; the most specific rule wins. A target that does not exist is a 400",
            {
                "200": {
                    "description": "the rule as stored",
                    "content": {"application/json": {"schema": ref("AlertRule")}},
                    "links": {
                        "Delete": {
                            "operationId": "deleteAlertRule",
                            "parameters": {"rule_id": "$response.body#/id"},
                        }
                    },
                }
            },
            *WRITE,
            operationId="putAlertRule",
            requestBody=json_body(PUT_RULE),
        ),
    },
    "/admin/alert-rules/{rule_id}": {
        "delete": op(
            "Delete a rule (its target falls back to the next rule that matches, or 50/80/100)",
            ok("{deleted: rule_id}"),
            *READ, "404",
            operationId="deleteAlertRule",
            parameters=[path_param("rule_id", {"type": "string"})],
        )
    },
}
