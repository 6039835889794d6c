"""Alert rows and what the alert storage modules share: ids, the row mappers, helpers."""

from __future__ import annotations

import dataclasses
import secrets
import time
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from costwarden.alerts.model import AlertState, Channel, ChannelFilter, EmailSettings, Severity
from costwarden.alerts.state import AlertStatus
from costwarden.core.event_kinds import AlertChanged
from costwarden.storage.db import Bind, connect_read
from costwarden.storage.schema import alert_channels, alert_deliveries

SYSTEM_ACTOR = "costwarden"


def new_alert_id(kind: str) -> str:
    """``<kind>_`` + milliseconds + random bits, in hex: unique and ordered by time."""
    return f"{kind}_{time.time_ns() // 1_000_000:012x}{secrets.randbits(40):010x}"


@dataclasses.dataclass(frozen=True, slots=True)
class AlertRecord:
    id: str
    kind: str
    rule: str
    severity: Severity
    org_id: str | None
    scope: str | None
    scope_id: str | None
    window_key: str
    threshold_pct: int | None
    state: AlertState
    title: str
    detail: dict[str, Any]
    fired_at: datetime
    resolves_at: datetime | None
    snoozed_until: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    updated_at: datetime

    @property
    def status(self) -> AlertStatus:
        return AlertStatus(
            state=self.state,
            snoozed_until=self.snoozed_until,
            acknowledged_by=self.acknowledged_by,
            acknowledged_at=self.acknowledged_at,
            resolved_at=self.resolved_at,
            resolved_by=self.resolved_by,
        )

    def event(self) -> AlertChanged:
        """The ``alert_changed`` event of this state."""
        return AlertChanged(
            org_id=self.org_id, alert_id=self.id, rule=self.rule, state=self.state,
            detail=self.title,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def alert_row(row: Row[Any]) -> AlertRecord:
    m = row._mapping
    return AlertRecord(
        id=m["id"],
        kind=m["kind"],
        rule=m["rule"],
        severity=m["severity"],
        org_id=m["org_id"],
        scope=m["scope"],
        scope_id=m["scope_id"],
        window_key=m["window_key"],
        threshold_pct=m["threshold_pct"],
        state=m["state"],
        title=m["title"],
        detail=orjson.loads(m["detail"]),
        fired_at=m["fired_at"],
        resolves_at=m["resolves_at"],
        snoozed_until=m["snoozed_until"],
        acknowledged_by=m["acknowledged_by"],
        acknowledged_at=m["acknowledged_at"],
        resolved_by=m["resolved_by"],
        resolved_at=m["resolved_at"],
        updated_at=m["updated_at"],
    )


def insert_into(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def any_row(bind: Bind, query: sa.Select[Any]) -> bool:
    with connect_read(bind) as conn:
        return conn.execute(query).first() is not None


def cancel_pending(conn: Connection, alert_ids: list[str]) -> None:
    """A resolved alert's deliveries that have not gone out are dropped: it is over."""
    conn.execute(
        alert_deliveries.update()
        .where(alert_deliveries.c.alert_id.in_(alert_ids), alert_deliveries.c.state == "pending")
        .values(state="cancelled", claimed_until=None)
    )


def channel_row(row: Row[Any]) -> Channel:
    m = row._mapping
    config = orjson.loads(m["config"])
    raw_filter = orjson.loads(m["filter"])
    email = config.get("email")
    return Channel(
        id=m["id"],
        name=m["name"],
        type=m["type"],
        url=config.get("url"),
        secret=config.get("secret"),
        email=None if email is None else EmailSettings(**{**email, "to": tuple(email["to"])}),
        filter=ChannelFilter(
            min_severity=raw_filter.get("min_severity", "info"),
            org_ids=tuple(raw_filter.get("org_ids", ())),
            kinds=tuple(raw_filter.get("kinds", ())),
        ),
        enabled=bool(m["enabled"]),
        source=m["source"],
    )


def channel_values(channel: Channel) -> dict[str, Any]:
    """The ``alert_channels`` columns a channel's fields fill (not its id, source or times)."""
    config: dict[str, Any] = {}
    if channel.url is not None:
        config["url"] = channel.url
    if channel.secret is not None:
        config["secret"] = channel.secret
    if channel.email is not None:
        config["email"] = dataclasses.asdict(channel.email)
    return {
        "name": channel.name,
        "type": channel.type,
        "config": orjson.dumps(config).decode(),
        "filter": orjson.dumps(dataclasses.asdict(channel.filter)).decode(),
        "enabled": channel.enabled,
    }


def channels_of(conn: Connection, *, enabled_only: bool = False) -> list[Channel]:
    stmt = sa.select(alert_channels).order_by(alert_channels.c.name)
    if enabled_only:
        stmt = stmt.where(alert_channels.c.enabled.is_(True))
    return [channel_row(row) for row in conn.execute(stmt)]
