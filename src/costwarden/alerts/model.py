"""The data alerts are made of: channels, and the message an alert sends."""

from __future__ import annotations

import dataclasses
from typing import Literal

ChannelType = Literal["webhook", "slack", "email"]
CHANNEL_TYPES: tuple[ChannelType, ...] = ("webhook", "slack", "email")
Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
AlertState = Literal["firing", "acknowledged", "resolved"]
# Who manages a channel: the admin API and CLI, or the config file's [[alerts.channels]]
# (read-only through the API and CLI).
ChannelSource = Literal["api", "config"]


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelFilter:
    """Which alerts a channel takes: at least ``min_severity``, of these orgs and kinds
    (empty: all)."""

    min_severity: Severity = "info"
    org_ids: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class EmailSettings:
    """SMTP delivery: where from, to whom, through which server."""

    to: tuple[str, ...]
    sender: str
    host: str
    port: int = 587
    username: str | None = None
    password: str | None = None  # a secret: never logged, never returned
    security: Literal["starttls", "tls", "none"] = "starttls"


@dataclasses.dataclass(frozen=True, slots=True)
class Channel:
    """One place alerts go. ``url`` for webhook and Slack (a Slack URL is itself a secret);
    ``secret`` signs webhooks (Standard Webhooks, ``whsec_`` + base64); ``email`` for e-mail.
    ``source``: where it is managed (see :data:`ChannelSource`)."""

    id: str
    name: str
    type: ChannelType
    url: str | None = None
    secret: str | None = None
    email: EmailSettings | None = None
    filter: ChannelFilter = ChannelFilter()
    enabled: bool = True
    source: ChannelSource = "api"


@dataclasses.dataclass(frozen=True, slots=True)
class AlertMessage:
    """What one delivery sends: everything an on-call needs, no secret.

    ``message_id`` is the delivery's id: the same on every retry of it, so a receiver can drop
    a repeat (Standard Webhooks' ``webhook-id``). Money and amounts are exact decimal strings
    in the limit's metric unit (USD, tokens, requests)."""

    message_id: str
    alert_id: str
    kind: str  # threshold | forecast | spike | service | session | security | test
    rule: str
    severity: Severity
    state: AlertState
    title: str
    text: str
    created_at: str  # ISO 8601, UTC
    org_id: str | None = None
    scope: str | None = None
    scope_id: str | None = None
    limit_name: str | None = None
    metric: str | None = None
    threshold_pct: int | None = None
    spent: str | None = None
    reserved: str | None = None
    limit: str | None = None
    percent: str | None = None
    resets_at: str | None = None
    dashboard_url: str | None = None

    def payload(self) -> dict[str, object]:
        """The JSON object a webhook receives (its ``data``), every field by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
