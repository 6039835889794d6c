"""The security policies part of the admin API's OpenAPI document."""

from __future__ import annotations

from typing import Any

from costwarden.admin.openapi_inputs import NAME, string
from costwarden.admin.openapi_parts import READ, WRITE, json_body, ok, op, path_param, query, ref

_ACTION = {"type": "string", "enum": ["default", "block", "redact", "flag", "off"]}
POLICY_LAYER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "Only the fields given override the layer under it (gateway, then org)",
    "properties": {
        "actions": {
            "type": "object",
            "description": "detector (injection, secrets, pii, tools, ...) -> action",
            "additionalProperties": _ACTION,
            "propertyNames": {"minLength": 1, "maxLength": 64},
        },
        "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "flag_confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "on_timeout": {"type": "string", "enum": ["open", "closed"]},
        "time_budget_ms": {"type": "number", "exclusiveMinimum": 0, "maximum": 10000},
    },
}
POLICY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "org_id": {"type": "string"},
        "key_id": {"type": ["string", "null"], "description": "null: the org's own layer"},
        "policy": POLICY_LAYER,
        "updated_by": {"type": "string"},
        "updated_at": {"type": "string", "format": "date-time"},
        "version": {"type": "integer"},
    },
}
_DELETED = ok("{deleted: true, or false when there was none; org, key_id}")


def _layer_ops(subject: str, param: dict[str, Any]) -> dict[str, Any]:
    return {
        "put": op(
            f"Set {subject}'s security policy layer (replacing it); audited, applied by "
            "every gateway at its next policy poll",
            ok("the layer", ref("SecurityPolicy")),
            *WRITE, "404",
            parameters=[param],
            requestBody=json_body(POLICY_LAYER),
        ),  # fmt: skip
        "delete": op(
            f"Remove {subject}'s security policy layer (the one under it applies again)",
            _DELETED,
            *READ, "404",
            parameters=[param],
        ),  # fmt: skip
    }


SECURITY_PATHS: dict[str, Any] = {
    "/admin/security/policies": {
        "get": op(
            "Security policy layers: every org's and key's, or one org's",
            ok("{policies: [SecurityPolicy]}"),
            *READ, "400", "404",
            parameters=[query("org", string(NAME, "org name"))],
        )  # fmt: skip
    },
    "/admin/orgs/{name}/security": _layer_ops(
        "an org", path_param("name", string(NAME, "org name"))
    ),
    "/admin/keys/{key_id}/security": _layer_ops(
        "a key", path_param("key_id", {"type": "string"})
    ),
}
