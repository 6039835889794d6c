"""The agent sessions and escalations part of the admin API's OpenAPI document."""

from __future__ import annotations

from typing import Any

from costwarden.admin.openapi_inputs import NAME, string
from costwarden.admin.openapi_parts import READ, WRITE, json_body, ok, op, path_param, query, ref

ESCALATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "org_id": {"type": "string"},
        "session_id": {"type": "string"},
        "reason": {"type": "string", "enum": ["repeat", "velocity", "errors"]},
        "evidence": {"type": "object", "description": "fingerprint and count, or pace"},
        "status": {"type": "string", "enum": ["open", "approved", "denied"]},
        "created_at": {"type": "string", "format": "date-time"},
        "resolved_at": {"type": ["string", "null"], "format": "date-time"},
        "resolved_by": {"type": ["string", "null"]},
        "note": {"type": ["string", "null"]},
        "extra_budget_usd": {"type": ["string", "null"]},
    },
}
SESSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "session_id": {"type": "string"},
        "org_id": {"type": "string"},
        "key_id": {"type": ["string", "null"]},
        "state": {
            "type": "string",
            "enum": ["active", "winding_down", "sleeping", "exhausted", "paused", "terminated"],
        },
        "budget_pct": {"type": ["string", "null"], "description": "largest share spent"},
        "wake_at": {"type": ["string", "null"], "format": "date-time"},
        "budgets": {"type": "array", "items": ref("LimitStatus")},
        "started": {"type": ["string", "null"], "format": "date-time"},
        "last_seen": {"type": ["string", "null"], "format": "date-time"},
        "requests": {"type": "integer"},
        "input_tokens": {"type": "integer"},
        "output_tokens": {"type": "integer"},
        "spend_usd": {"type": "string"},
        "escalation": {"oneOf": [ref("Escalation"), {"type": "null"}]},
    },
}
# A session id as a header carries it: 1 to 200 characters, no control characters.
SESSION_ID = "^[^\\x00-\\x1f\\x7f]{1,200}$"

SESSION_PATHS: dict[str, Any] = {
    "/admin/sessions/{session_id}": {
        "get": op(
            "One agent session: state, budget_pct, wake_at, its budgets, usage and open "
            "escalation (what the agent reads with its own key at /v1/costwarden/session)",
            ok("the session", ref("AgentSession")),
            *READ, "400", "404",
            parameters=[
                path_param("session_id", string(SESSION_ID, "x-costwarden-session")),
                query("org", string(NAME, "org name"), required=True),
            ],
        )
    },
    "/admin/escalations": {
        "get": op(
            "Escalations of paused agent sessions, newest first",
            ok("{data: [Escalation]}"),
            *READ, "400", "404",
            parameters=[
                query("status", {"type": "string", "enum": ["open", "approved", "denied"]}),
                query("org", string(NAME, "org name")),
            ],
        )
    },
    "/admin/escalations/{escalation_id}/resolve": {
        "post": op(
            "Resolve an open escalation once: approve (the session goes on, its USD budgets "
            "raised by extra_budget_usd) or deny (the session is terminated); published to "
            "every event stream as escalation_resolved",
            ok("the escalation, and session_state", ref("Escalation")),
            *WRITE, "404", "409",
            parameters=[path_param("escalation_id", {"type": "string"})],
            requestBody=json_body(
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["decision"],
                    "properties": {
                        "decision": {"type": "string", "enum": ["approve", "deny"]},
                        "note": {"type": "string", "maxLength": 2000},
                        "actor": string(NAME, "who decided, for the record"),
                        "extra_budget_usd": {
                            "type": "string",
                            "pattern": "^[0-9]{1,15}(\\.[0-9]{1,12})?$",
                            "description": "approve only; added to each USD budget",
                        },
                    },
                }
            ),
        )
    },
}
