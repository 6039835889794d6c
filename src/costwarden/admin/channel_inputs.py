"""An alert channel as the admin API takes it: the JSON Schema of
``PUT /admin/alert-channels/{name}``, built from the patterns of
:mod:`costwarden.alerts.channel_spec`, whose :func:`~costwarden.alerts.channel_spec.parse_channel`
the handler applies (the config file's ``[[alerts.channels]]`` goes through the same parser).

The schema and the parser use the very same patterns, so schemathesis finds the two equal
both ways.
"""

from __future__ import annotations

from typing import Any

from costwarden.alerts.channel_spec import (
    ADDRESS,
    KINDS,
    SECURITY,
    TOKEN,
    URL,
    WEBHOOK_SECRET,
    parse_channel,
)

__all__ = ["PUT_CHANNEL", "parse_channel"]

_COMMON: dict[str, Any] = {
    "min_severity": {"type": "string", "enum": ["info", "warning", "critical"]},
    "org_ids": {
        "type": "array",
        "maxItems": 100,
        "items": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": "only these orgs' alerts (empty or absent: every org's)",
    },
    "kinds": {
        "type": "array", "maxItems": len(KINDS), "items": {"type": "string", "enum": list(KINDS)}
    },
    "enabled": {"type": "boolean"},
}
_URL = {"type": "string", "pattern": URL, "description": "http(s)://host[:port][/path]"}


def _branch(kind: str, required: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "title": kind,
        "additionalProperties": False,
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, **fields, **_COMMON},
    }


PUT_CHANNEL: dict[str, Any] = {
    "oneOf": [
        _branch(
            "webhook",
            ["url", "secret"],
            url=_URL,
            secret={
                "type": "string",
                "pattern": WEBHOOK_SECRET,
                "description": "Standard Webhooks signing secret: whsec_ + base64; never shown",
            },
        ),
        _branch("slack", ["url"], url={**_URL, "description": "the incoming-webhook URL"}),
        {
            **_branch(
                "email",
                ["to", "sender", "host"],
                to={
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 50,
                    "items": {"type": "string", "pattern": ADDRESS},
                },
                sender={"type": "string", "pattern": ADDRESS},
                host={"type": "string", "pattern": TOKEN},
                port={"type": "integer", "minimum": 1, "maximum": 65535},
                username={"type": "string", "pattern": TOKEN},
                password={"type": "string", "minLength": 1, "maxLength": 1024},
                security={"type": "string", "enum": list(SECURITY)},
            ),
            "dependentRequired": {"username": ["password"], "password": ["username"]},
        },
    ]
}
