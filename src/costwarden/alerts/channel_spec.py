"""An alert channel as an operator writes it down: the admin API's JSON body and the config
file's ``[[alerts.channels]]`` table both go through :func:`parse_channel`, so the two take the
same fields and refuse the same values with the same words.

Each text field is checked against a pattern (the admin API publishes the very same ones in
its OpenAPI document, so schemathesis finds schema and handler equal both ways), and only then
is the :class:`~costwarden.alerts.model.Channel` built and the domain's own
:func:`~costwarden.alerts.delivery.validate_channel` run, which every value the patterns allow
passes. The patterns are ASCII-only on purpose: a URL, a webhook secret, an address or a host
name with anything else is refused rather than guessed at.

Errors are :class:`FieldInvalid`: they name the field (so the config file can point at
``alerts.channels[1].url``), never its value: a Slack URL's path, a webhook secret and an SMTP
password are secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final, Literal, cast

from costwarden.alerts.delivery import validate_channel
from costwarden.alerts.model import (
    Channel,
    ChannelFilter,
    ChannelSource,
    ChannelType,
    EmailSettings,
    Severity,
)
from costwarden.core.errors import InvalidInput

_HOST = "[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
_PORT = (
    "(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
)
URL: Final = f"^https?://{_HOST}{_PORT}(?:[/?#][!-~]{{0,2000}})?$"
_B64_TAIL = "(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)"
WEBHOOK_SECRET: Final = f"^(?:whsec_)?(?:(?:[A-Za-z0-9+/]{{4}}){{1,64}}{_B64_TAIL}?|{_B64_TAIL})$"
# Printable ASCII but space and what could smuggle another address or header in.
_ADDRESS_CHAR = "[!#-'*+\\-./0-9:=?A-Z\\[\\]^_`a-z{|}~]"
ADDRESS: Final = f"^{_ADDRESS_CHAR}{{1,64}}@{_ADDRESS_CHAR}{{1,255}}$"
TOKEN: Final = "^[!-~]{1,255}$"
KINDS: Final = ("threshold", "forecast", "spike", "service", "session", "security", "test")
Security = Literal["starttls", "tls", "none"]
SECURITY: Final[tuple[Security, ...]] = ("starttls", "tls", "none")

# What each pattern means, for the error message (which never quotes the value).
_MEANING: Final = {
    URL: "an http:// or https:// URL with a host, printable ASCII without spaces",
    WEBHOOK_SECRET: "a Standard Webhooks secret: 'whsec_' followed by base64",
    ADDRESS: "an e-mail address (name@domain)",
    TOKEN: "printable ASCII without spaces, 1 to 255 characters",
}
# The fields every type takes, the ones of each type, and the ones each type needs.
COMMON_FIELDS: Final = ("min_severity", "org_ids", "kinds", "enabled")
TYPE_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "webhook": ("url", "secret"),
    "slack": ("url",),
    "email": ("to", "sender", "host", "port", "username", "password", "security"),
}
_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "webhook": ("url", "secret"),
    "slack": ("url",),
    "email": ("to", "sender", "host"),
}


class FieldInvalid(InvalidInput):
    """One field of a channel is wrong: ``field`` names it (``url``, ``to[2]``, or ``""``
    for the channel as a whole), ``problem`` says what is wrong, without its value."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"'{field}' {problem}" if field else problem)
        self.field = field
        self.problem = problem


def parse_channel(name: str, data: Mapping[str, Any], *, source: ChannelSource = "api") -> Channel:
    """The channel ``data`` describes (the admin API's ``PUT_CHANNEL`` body); FieldInvalid
    otherwise. ``name`` is checked by the caller (the API's path, the config's key)."""
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in TYPE_FIELDS:
        raise FieldInvalid("type", f"must be one of {', '.join(TYPE_FIELDS)}")
    unknown = sorted(set(data) - set(TYPE_FIELDS[kind]) - set(COMMON_FIELDS) - {"type"})
    if unknown:
        raise FieldInvalid(unknown[0], f"is an unknown field for a {kind} channel")
    for field in _REQUIRED[kind]:
        if field not in data:
            raise FieldInvalid(field, f"is required for a {kind} channel")
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
        source=source,
    )
    try:
        validate_channel(channel)  # every value the patterns allow passes; kept as last word
    except InvalidInput as exc:
        raise FieldInvalid("", str(exc)) from None
    return channel


def _text(data: Mapping[str, Any], field: str, pattern: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
        raise FieldInvalid(field, f"is not valid: it must be {_MEANING[pattern]}")
    return value


def _whole(value: Any) -> Any:
    """A JSON number with a zero fraction (25.0) is a whole number."""
    if isinstance(value, Decimal) and value.is_finite() and value == int(value):
        return int(value)
    return value


def _email(data: Mapping[str, Any]) -> EmailSettings:
    to = data["to"]
    if not isinstance(to, list) or not 1 <= len(to) <= 50:
        raise FieldInvalid("to", "must be a list of 1 to 50 addresses")
    for i, address in enumerate(to):
        if not isinstance(address, str) or re.fullmatch(ADDRESS, address) is None:
            raise FieldInvalid(f"to[{i}]", "is not an e-mail address (name@domain)")
    port = _whole(data.get("port", 587))
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise FieldInvalid("port", "must be a whole number from 1 to 65535")
    security = data.get("security", "starttls")
    if not isinstance(security, str) or security not in SECURITY:
        raise FieldInvalid("security", f"must be one of {', '.join(SECURITY)}")
    if ("username" in data) != ("password" in data):
        missing = "password" if "username" in data else "username"
        raise FieldInvalid(missing, "is required: 'username' and 'password' go together")
    password = data.get("password")
    if password is not None and (not isinstance(password, str) or not 1 <= len(password) <= 1024):
        raise FieldInvalid("password", "must be a string of 1 to 1024 characters")
    return EmailSettings(
        to=tuple(to),
        sender=_text(data, "sender", ADDRESS),
        host=_text(data, "host", TOKEN),
        port=port,
        username=_text(data, "username", TOKEN) if "username" in data else None,
        password=password,
        security=security,
    )


def _filter(data: Mapping[str, Any]) -> ChannelFilter:
    severity = data.get("min_severity", "info")
    if not isinstance(severity, str) or severity not in ("info", "warning", "critical"):
        raise FieldInvalid("min_severity", "must be one of info, warning, critical")
    org_ids = data.get("org_ids", [])
    if (
        not isinstance(org_ids, list)
        or len(org_ids) > 100
        or not all(isinstance(o, str) and 1 <= len(o) <= 200 for o in org_ids)
    ):
        raise FieldInvalid("org_ids", "must be a list of at most 100 org ids")
    kinds = data.get("kinds", [])
    if (
        not isinstance(kinds, list)
        or len(kinds) > len(KINDS)
        or not all(isinstance(k, str) and k in KINDS for k in kinds)
    ):
        raise FieldInvalid("kinds", f"must be a list of: {', '.join(KINDS)}")
    return ChannelFilter(
        min_severity=cast(Severity, severity), org_ids=tuple(org_ids), kinds=tuple(kinds)
    )


def _enabled(data: Mapping[str, Any]) -> bool:
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise FieldInvalid("enabled", "must be true or false")
    return enabled
