"""JSON Schemas of what the admin API accepts, exactly as its handlers and storage check it.

The OpenAPI document (:mod:`costwarden.admin.openapi`) is built from these, and a
schemathesis run in the tests holds the API to them both ways: every value a schema allows is
served (or is a 404/409 that depends on what exists), every value it refuses is refused. So
each pattern spells out a check the code makes:

- names (orgs, projects, keys, tiers, the audit actor) are stripped, then 1 to 200
  characters without control characters (:func:`costwarden.storage.repo.clean_name`);
- "stripped" is Python's ``str.strip()``: :data:`WS` is every character ``str.isspace()``
  is true for (a test checks), and may surround a value although some are control
  characters;
- amounts are USD as decimal text or a JSON number with at most 9 decimal places, counts
  as integers, ``-1`` for unlimited, below 2**53 counter units
  (:func:`costwarden.budgets.limits.parse_amount`). The text forms are a plain subset of
  what the parser reads (no exponent, underscore or sign other than ``-1``), kept under the
  bound by their number of digits.

Patterns use only what ECMA-262 (the validators) and Python's ``re`` (the generators) read
alike: explicit character classes, ``^``/``$``, bounded repeats.
"""

from __future__ import annotations

from typing import Any

from costwarden.budgets.limits import LIMIT_NAMES, MODES, TIER_SCOPES
from costwarden.core.event_kinds import KINDS
from costwarden.core.records import HONEYPOT_ACTIONS
from costwarden.storage.repo import MAX_NAME_LEN
from costwarden.storage.switches import FEATURES, MAX_MESSAGE_LEN

# Everything str.isspace() is true for, as a character-class body.
WS = "\\t-\\r\\x1c- \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
# Unicode category Cc (control characters).
CC = "\\x00-\\x1f\\x7f-\\x9f"

MAX_USD_DIGITS = 6  # integer digits of USD text: below the 2**53 nano-dollar bound
MAX_COUNT_DIGITS = 15  # digits of count text: below 2**53
MAX_USD = 9_007_199  # whole dollars below 2**53 nano-dollars
MAX_COUNT = 2**53 - 1


def stripped(edge: str, inner: str, max_len: int, *, blank: bool = False) -> str:
    """A pattern for text that, once stripped, is 1..max_len characters (or empty if
    ``blank``): first and last from class ``edge``, the others from class ``inner``."""
    core = f"[{edge}](?:[{inner}]{{0,{max_len - 2}}}[{edge}])?"
    if blank:
        core = f"(?:{core})?"
    return f"^[{WS}]*{core}[{WS}]*$"


NAME = stripped(f"^{CC}{WS}", f"^{CC}", MAX_NAME_LEN)
# Free text that is matched, not stored as a name (audit action): no bound on its length.
LABEL = f"^[{WS}]*[^{CC}{WS}](?:[^{CC}]*[^{CC}{WS}])?[{WS}]*$"
# End user and session subjects: any character but NUL, 200 at most once stripped.
SUBJECT = stripped(f"^\\x00{WS}", "^\\x00", 200)
# Tag subject: name=value, the name non-blank and without "=", each at most 200 stripped.
TAG = (
    f"^[{WS}]*[^{WS}=\\x00](?:[^=\\x00]{{0,198}}[^{WS}=\\x00])?[{WS}]*="
    f"[{WS}]*(?:[^{WS}\\x00](?:[^\\x00]{{0,198}}[^{WS}\\x00])?)?[{WS}]*$"
)
BLANK = f"^[{WS}]*$"
# Last-Event-ID: an event id, or blank for none.
EVENT_KINDS = "^(?:" + "|".join(sorted(KINDS)) + ")(?:,(?:" + "|".join(sorted(KINDS)) + "))*$"
EVENT_ID = f"^[{WS}]*(?:[0-9]{{1,18}})?[{WS}]*$"
MESSAGE = stripped(f"^{CC}{WS}", f"^{CC}", MAX_MESSAGE_LEN, blank=True)

_USD_TEXT = f"^[{WS}]*(?:-1|[0-9]{{1,{MAX_USD_DIGITS}}}(?:\\.[0-9]{{1,9}})?)[{WS}]*$"
_COUNT_TEXT = f"^[{WS}]*(?:-1|[0-9]{{1,{MAX_COUNT_DIGITS}}})[{WS}]*$"

USD_AMOUNT: dict[str, Any] = {
    "description": "USD: decimal text or a number, at most 9 decimal places; -1 = unlimited",
    "anyOf": [
        {"type": "string", "pattern": _USD_TEXT},
        {"type": "integer", "minimum": -1, "maximum": MAX_USD},
        {"type": "number", "minimum": 0, "maximum": MAX_USD, "multipleOf": 1e-9},
    ],
}
COUNT_AMOUNT: dict[str, Any] = {
    "description": "a whole number (tokens or requests), as text or an integer; -1 = unlimited",
    "anyOf": [
        {"type": "string", "pattern": _COUNT_TEXT},
        {"type": "integer", "minimum": -1, "maximum": MAX_COUNT},
    ],
}


def _amount(limit: str) -> dict[str, Any]:
    return USD_AMOUNT if LIMIT_NAMES[limit][0] == "usd" else COUNT_AMOUNT


LIMIT_AMOUNTS: dict[str, Any] = {
    "type": "object",
    "description": "limit name -> amount",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {name: _amount(name) for name in LIMIT_NAMES},
}
TIER_LIMITS: dict[str, Any] = {
    "type": "object",
    "description": "scope type -> {limit name: amount}",
    "additionalProperties": False,
    "properties": {
        scope: {**LIMIT_AMOUNTS, "minProperties": 0, "description": "limit name -> amount"}
        for scope in TIER_SCOPES
    },
}


def string(pattern: str, description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "pattern": pattern}
    if description:
        schema["description"] = description
    return schema


_SUBJECTS: dict[str, tuple[dict[str, Any], bool]] = {
    # scope -> (scope_id schema, required)
    "platform": ({"type": ["string", "null"], "pattern": BLANK}, False),
    "org": (
        {
            "type": ["string", "null"],
            "pattern": BLANK,
            "description": "none: the org itself (its own name or id are also taken)",
        },
        False,
    ),
    "project": (string(NAME, "project name or id of the org"), True),
    "key": (string(NAME, "key id of the org"), True),
    "user": (string(SUBJECT, "end user id"), True),
    "session": (string(SUBJECT, "agent session id"), True),
    "tag": (string(TAG, "name=value"), True),
}


def limits_target(extra: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """A limits request body: one branch per scope (which org and scope_id it needs)."""
    branches = []
    for scope, (subject, needs_subject) in _SUBJECTS.items():
        org = (
            {"type": "null", "description": "the platform scope covers every org"}
            if scope == "platform"
            else string(NAME, "org name")
        )
        branches.append(
            {
                "type": "object",
                "title": scope,
                "additionalProperties": False,
                "required": [
                    "scope",
                    *(["org"] if scope != "platform" else []),
                    *(["scope_id"] if needs_subject else []),
                    *required,
                ],
                "properties": {
                    "org": org,
                    "scope": {"type": "string", "const": scope},
                    "scope_id": subject,
                    **extra,
                },
            }
        )
    return {"oneOf": branches}


PUT_LIMITS = limits_target(
    {
        "limits": LIMIT_AMOUNTS,
        "mode": {
            "type": ["string", "null"],
            "enum": [*MODES, None],
            "description": "budgets only (rate limits are always soft); omitted: keep an "
            "existing limit's mode, new ones hard",
        },
    },
    ["limits"],
)
DELETE_LIMITS = limits_target(
    {
        "limits": {
            "type": ["array", "null"],
            "minItems": 1,
            "items": {"type": "string", "enum": list(LIMIT_NAMES)},
            "description": "limit names to clear; omitted or null: all of them",
        }
    },
    [],
)

# A key's agent-session options (storage.repo.KEY_OPTIONS).
KEY_OPTIONS: dict[str, Any] = {
    "session_clean_stop": {
        "type": "boolean",
        "description": "an agent session's budget reached answers as a clean "
        "completion (200, a normal stop reason, $0) instead of a 429 / 402",
    },
    "session_budget_note": {
        "type": "boolean",
        "description": "a winding-down session's requests tell the model its "
        "remaining budget in a short system note",
    },
}
_NEW_KEY_FIELDS: dict[str, Any] = {
    "org": string(NAME, "org name; created if new"),
    "project": {**string(NAME, "project name; created if new"), "type": ["string", "null"]},
    "name": {**string(NAME, "a label for the key"), "type": ["string", "null"]},
    **KEY_OPTIONS,
    "honeypot": {
        "type": "boolean",
        "description": "a honeypot key: made and listed like any other, answered by the "
        "gateway exactly as an unknown key; its use raises a critical alert",
    },
    "honeypot_action": {"type": "null"},
}


def _new_key(title: str, **narrowed: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "title": title,
        "required": ["org", *narrowed.pop("required", [])],
        "additionalProperties": False,
        "properties": {**_NEW_KEY_FIELDS, **narrowed},
    }


# honeypot_action (core.records.HONEYPOT_ACTIONS) is for honeypot keys only.
CREATE_KEY: dict[str, Any] = {
    "anyOf": [
        _new_key("a key"),
        _new_key(
            "a honeypot key",
            honeypot={"const": True},
            honeypot_action={
                "type": ["string", "null"],
                "enum": [*HONEYPOT_ACTIONS, None],
                "description": "what its use does besides the alert: alert (the default), "
                "or switch_off_org: the org's kill switch turned on",
            },
            required=["honeypot"],
        ),
    ]
}
SET_KEY_OPTIONS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": KEY_OPTIONS,
}

_SWITCH_FIELDS: dict[str, Any] = {
    "org": {"type": ["string", "null"], "pattern": NAME, "description": "null: platform-wide"},
    "feature": {
        "type": "string",
        "enum": list(FEATURES),
        "description": "ai: every model call; an endpoint name; streaming: stream true",
    },
    "enabled": {"type": "boolean"},
    "message": {
        "type": ["string", "null"],
        "pattern": MESSAGE,
        "description": "what refused clients are told; null or blank: the configured default",
    },
    "confirm": {
        "type": ["string", "null"],
        "enum": ["disable-all", None],
        "description": "required to switch ai off platform-wide",
    },
}


def _switch_branch(title: str, **narrowed: Any) -> dict[str, Any]:
    required = ["feature", "enabled", *narrowed.pop("required", [])]
    return {
        "type": "object",
        "title": title,
        "additionalProperties": False,
        "required": required,
        "properties": {**_SWITCH_FIELDS, **narrowed},
    }


_PLATFORM = {"type": "null", "description": "platform-wide"}
PUT_SWITCH: dict[str, Any] = {
    "anyOf": [
        _switch_branch("one org", org={"type": "string", "pattern": NAME}, required=["org"]),
        _switch_branch("platform-wide on", org=_PLATFORM, enabled={"const": True}),
        _switch_branch(
            "platform-wide off, one feature",
            org=_PLATFORM,
            feature={"type": "string", "enum": [f for f in FEATURES if f != "ai"]},
        ),
        _switch_branch(
            "everything off, confirmed",
            org=_PLATFORM,
            feature={"const": "ai"},
            enabled={"const": False},
            confirm={"type": "string", "const": "disable-all"},
            required=["confirm"],
        ),
    ]
}

# GET /admin/usage?since=: a span back from now, or an ISO date (a subset of what is read).
SINCE = (
    f"^[{WS}]*(?:[0-9]{{1,5}}[mhdw]|[1-9][0-9]{{3}}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8]))?"
    f"[{WS}]*$"
)
