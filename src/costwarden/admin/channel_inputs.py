"""An alert channel as the admin API takes it: the JSON Schema, and the one parser that applies
it (``PUT /admin/alert-channels/{name}``).

The handler checks each field against the very patterns the OpenAPI document publishes, so
schemathesis finds the two equal both ways, and only then builds the
:class:`~costwarden.alerts.model.Channel` and runs the domain's own
:func:`~costwarden.alerts.delivery.validate_channel`, which every value the patterns allow
passes. The patterns are ASCII-only on purpose: a URL, a webhook secret, an address or a host
name with anything else is refused rather than guessed at.

Error messages name the field, never its value: a Slack URL's path, a webhook secret and an
SMTP password are secrets.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal, cast

from costwarden.alerts.delivery import validate_channel
from costwarden.alerts.model import Channel, ChannelFilter, ChannelType, EmailSettings, Severity
from costwarden.core.errors import InvalidInput

_HOST = "[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
_PORT = (
    "(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]"
    "|6553[0-5]))?"
)
URL = f"^https?://{_HOST}{_PORT}(?:[/?#][!-~]{{0,2000}})?$"
_B64_TAIL = "(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)"
WEBHOOK_SECRET = (
    f"^(?:whsec_)?(?:(?:[A-Za-z0-9+/]{{4}}){{1,64}}{_B64_TAIL}?|{_B64_TAIL})$"
)
# Printable ASCII but space and what could smuggle another address or header in.
_ADDRESS_CHAR = "[!#-'*+\\-./0-9:=?A-Z\\[\\]^_`a-z{|}~]"
ADDRESS = f"^{_ADDRESS_CHAR}{{1,64}}@{_ADDRESS_CHAR}{{1,255}}$"
TOKEN = "^[!-~]{1,255}$"
KINDS = ("threshold", "forecast", "spike", "service", "test")
Security = Literal["starttls", "tls", "none"]
_SECURITY: tuple[Security, ...] = ("starttls", "tls", "none")

_COMMON: dict[str, Any] = {
    "min_severity": {"type": "string", "enum": ["info", "warning", "critical"]},
    "org_ids": {
        "type": "array",
        "maxItems": 100,
        "items": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": "only these orgs' alerts (empty or absent: every org's)",
    },
    "kinds": {"type": "array", "maxItems": 5, "items": {"type": "string", "enum": list(KINDS)}},
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
                security={"type": "string", "enum": list(_SECURITY)},
            ),
            "dependentRequired": {"username": ["password"], "password": ["username"]},
        },
    ]
}
_FIELDS = {
    "webhook": {"url", "secret"},
    "slack": {"url"},
    "email": {"to", "sender", "host", "port", "username", "password", "security"},
}
_REQUIRED = {"webhook": ("url", "secret"), "slack": ("url",), "email": ("to", "sender", "host")}


def _text(data: dict[str, Any], field: str, pattern: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
        raise InvalidInput(f"'{field}' is not valid (see the OpenAPI document's pattern)")
    return value


def _whole(value: Any) -> Any:
    """A JSON number with a zero fraction (25.0) is a whole number."""
    if isinstance(value, Decimal) and value.is_finite() and value == int(value):
        return int(value)
    return value


def parse_channel(name: str, data: dict[str, Any]) -> Channel:
    """The channel ``data`` describes (see :data:`PUT_CHANNEL`); InvalidInput otherwise."""
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise InvalidInput(f"'type' must be one of {', '.join(_FIELDS)}")
    unknown = sorted(set(data) - _FIELDS[kind] - set(_COMMON) - {"type"})
    if unknown:
        raise InvalidInput(f"unknown field(s) for a {kind} channel: {', '.join(unknown)}")
    for field in _REQUIRED[kind]:
        if field not in data:
            raise InvalidInput(f"a {kind} channel needs '{field}'")
    url = _text(data, "url", URL) if "url" in data else None
    secret = _text(data, "secret", WEBHOOK_SECRET) if "secret" in data else None
    email = _email(data) if kind == "email" else None
    channel = Channel(
        id="",
        name=name,
        type=cast(ChannelType, kind),
        url=url,
        secret=secret,
        email=email,
        filter=_filter(data),
        enabled=_enabled(data),
    )
    validate_channel(channel)  # every value the patterns allow passes; kept as the last word
    return channel


def _email(data: dict[str, Any]) -> EmailSettings:
    to = data["to"]
    if not isinstance(to, list) or not 1 <= len(to) <= 50:
        raise InvalidInput("'to' must be a list of 1 to 50 addresses")
    for i, address in enumerate(to):
        if not isinstance(address, str) or re.fullmatch(ADDRESS, address) is None:
            raise InvalidInput(f"'to[{i}]' is not an e-mail address (name@domain)")
    port = _whole(data.get("port", 587))
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput("'port' must be a whole number from 1 to 65535")
    security = data.get("security", "starttls")
    if not isinstance(security, str) or security not in _SECURITY:
        raise InvalidInput(f"'security' must be one of {', '.join(_SECURITY)}")
    if ("username" in data) != ("password" in data):
        raise InvalidInput("'username' and 'password' go together")
    password = data.get("password")
    if password is not None and (not isinstance(password, str) or not 1 <= len(password) <= 1024):
        raise InvalidInput("'password' must be a string of 1 to 1024 characters")
    return EmailSettings(
        to=tuple(to),
        sender=_text(data, "sender", ADDRESS),
        host=_text(data, "host", TOKEN),
        port=port,
        username=_text(data, "username", TOKEN) if "username" in data else None,
        password=password,
        security=security,
    )


def _filter(data: dict[str, Any]) -> ChannelFilter:
    severity = data.get("min_severity", "info")
    if not isinstance(severity, str) or severity not in ("info", "warning", "critical"):
        raise InvalidInput("'min_severity' must be one of info, warning, critical")
    org_ids = data.get("org_ids", [])
    if (
        not isinstance(org_ids, list)
        or len(org_ids) > 100
        or not all(isinstance(o, str) and 1 <= len(o) <= 200 for o in org_ids)
    ):
        raise InvalidInput("'org_ids' must be a list of at most 100 org ids")
    kinds = data.get("kinds", [])
    if (
        not isinstance(kinds, list)
        or len(kinds) > 5
        or not all(isinstance(k, str) and k in KINDS for k in kinds)
    ):
        raise InvalidInput(f"'kinds' must be a list of: {', '.join(KINDS)}")
    return ChannelFilter(
        min_severity=cast(Severity, severity), org_ids=tuple(org_ids), kinds=tuple(kinds)
    )


def _enabled(data: dict[str, Any]) -> bool:
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise InvalidInput("'enabled' must be true or false")
    return enabled
