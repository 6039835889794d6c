"""Alerts in the database: raised once, acted on with an audit trail, delivered per channel.

- :func:`raise_alert` inserts an alert under its unique ``dedupe_key`` (``ON CONFLICT DO
  NOTHING``) and, only if this call inserted it, a pending delivery for every enabled channel
  whose filter takes it, plus an ``alert.fired`` audit row, in one transaction. However many
  processes raise the same draft, and however often after restarts, one alert fires.
- :func:`act_on_alert` applies an operator's action (``alerts.state.apply``) under the row's
  write lock and records who did what and when in the audit log (``alert.<action>``).
- Deliveries are claimed with a conditional ``UPDATE`` (``claimed_until`` in the past or
  unset), so one process sends each attempt; a process that dies mid-send leaves the claim to
  lapse and another retries. Every attempt is a row of the delivery log.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from costwarden.alerts.delivery import matches
from costwarden.alerts.model import AlertState, Channel, ChannelFilter, EmailSettings, Severity
from costwarden.alerts.rules import AlertDraft
from costwarden.alerts.state import Action, AlertStatus, apply
from costwarden.core.errors import NotFound
from costwarden.core.event_kinds import AlertChanged
from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.repo import org_id_by_name
from costwarden.storage.schema import alert_attempts, alert_channels, alert_deliveries, alerts
from costwarden.storage.sqltypes import utcnow

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "costwarden"
DeliveryState = str  # pending | delivered | dead | cancelled


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


def _alert(row: Row[Any]) -> AlertRecord:
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


def _insert(conn: Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --------------------------------------------------------------------------- alerts


def raise_alert(
    bind: Bind, draft: AlertDraft, *, now: datetime | None = None
) -> AlertRecord | None:
    """Store ``draft`` as a firing alert with its deliveries; None if its key already fired."""
    at = utcnow() if now is None else now
    alert_id = new_alert_id("alr")
    with begin_write(bind) as conn:
        stmt = (
            _insert(conn, alerts)
            .values(
                id=alert_id,
                dedupe_key=draft.dedupe_key,
                kind=draft.kind,
                rule=draft.rule,
                severity=draft.severity,
                org_id=draft.org_id,
                scope=draft.scope,
                scope_id=draft.scope_id,
                window_key=draft.window_key,
                threshold_pct=draft.threshold_pct,
                state="firing",
                title=draft.title,
                detail=orjson.dumps(draft.detail, option=orjson.OPT_SORT_KEYS).decode(),
                fired_at=at,
                resolves_at=draft.resolves_at,
                updated_at=at,
            )
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(alerts.c.id)  # a row only if this call inserted it (rowcount is -1 on
        )  # some drivers for ON CONFLICT statements)
        if conn.execute(stmt).first() is None:
            return None
        for channel in _channels(conn, enabled_only=True):
            if matches(
                channel.filter, severity=draft.severity, org_id=draft.org_id, kind=draft.kind
            ):
                conn.execute(
                    alert_deliveries.insert().values(
                        id=new_alert_id("dlv"),
                        alert_id=alert_id,
                        channel_id=channel.id,
                        state="pending",
                        attempts=0,
                        next_attempt_at=at,
                        created_at=at,
                    )
                )
        record_audit(conn, SYSTEM_ACTOR, "alert.fired", alert_id, None, draft.title, ts=at)
        return _alert(conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).one())


def get_alert(bind: Bind, alert_id: str) -> AlertRecord:
    with connect_read(bind) as conn:
        row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFound(f"no alert {alert_id!r}")
    return _alert(row)


def list_alerts(
    bind: Bind,
    *,
    org: str | None = None,
    state: AlertState | None = None,
    limit: int = 100,
) -> list[AlertRecord]:
    """The newest alerts first, of one org (by name; None: all; NotFound if unknown) and
    state (None: all)."""
    stmt = sa.select(alerts).order_by(alerts.c.fired_at.desc(), alerts.c.id.desc()).limit(limit)
    if state is not None:
        stmt = stmt.where(alerts.c.state == state)
    with connect_read(bind) as conn:
        if org is not None:
            stmt = stmt.where(alerts.c.org_id == org_id_by_name(conn, org))
        return [_alert(row) for row in conn.execute(stmt)]


def act_on_alert(
    bind: Bind,
    alert_id: str,
    action: Action,
    *,
    actor: str,
    until: datetime | None = None,
    now: datetime | None = None,
) -> AlertRecord:
    """Apply ``action`` to an alert and audit it; NotFound, Conflict or InvalidInput."""
    at = utcnow() if now is None else now
    with begin_write(bind) as conn:
        stmt = sa.select(alerts).where(alerts.c.id == alert_id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            raise NotFound(f"no alert {alert_id!r}")
        before = _alert(row)
        after = apply(before.status, action, actor=actor, now=at, until=until)
        conn.execute(
            alerts.update()
            .where(alerts.c.id == alert_id)
            .values(**dataclasses.asdict(after), updated_at=at)
        )
        if after.state == "resolved":
            _cancel_pending(conn, [alert_id])
        record_audit(
            conn,
            actor,
            f"alert.{action}",
            alert_id,
            _audited(before.status),
            _audited(after),
            ts=at,
        )
        return _alert(conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).one())


def resolve_reset_windows(bind: Bind, *, now: datetime | None = None) -> list[AlertRecord]:
    """Resolve the open alerts whose window has reset; the ones resolved."""
    at = utcnow() if now is None else now
    with begin_write(bind) as conn:
        due = [
            _alert(row)
            for row in conn.execute(
                sa.select(alerts).where(
                    alerts.c.state.in_(("firing", "acknowledged")),
                    alerts.c.resolves_at.is_not(None),
                    alerts.c.resolves_at <= at,
                )
            )
        ]
        if not due:
            return []
        ids = [a.id for a in due]
        conn.execute(
            alerts.update()
            .where(alerts.c.id.in_(ids))
            .values(
                state="resolved",
                resolved_at=at,
                resolved_by=SYSTEM_ACTOR,
                snoozed_until=None,
                updated_at=at,
            )
        )
        _cancel_pending(conn, ids)
        for alert in due:
            record_audit(
                conn,
                SYSTEM_ACTOR,
                "alert.resolve",
                alert.id,
                _audited(alert.status),
                {"state": "resolved", "reason": "window reset"},
                ts=at,
            )
        rows = conn.execute(sa.select(alerts).where(alerts.c.id.in_(ids)))
        return [_alert(row) for row in rows]


def resolve_cleared(
    bind: Bind,
    rule: str,
    scope_id: str,
    org_id: str | None,
    *,
    reason: str,
    now: datetime | None = None,
) -> list[AlertRecord]:
    """Resolve the open alerts of ``rule`` on ``scope_id`` (and org) whose condition cleared
    (a breaker closed again, a switch back on); the ones resolved."""
    at = utcnow() if now is None else now
    org_match = alerts.c.org_id.is_(None) if org_id is None else alerts.c.org_id == org_id
    with begin_write(bind) as conn:
        due = [
            _alert(row)
            for row in conn.execute(
                sa.select(alerts).where(
                    alerts.c.state.in_(("firing", "acknowledged")),
                    alerts.c.rule == rule,
                    alerts.c.scope_id == scope_id,
                    org_match,
                )
            )
        ]
        if not due:
            return []
        ids = [a.id for a in due]
        conn.execute(
            alerts.update()
            .where(alerts.c.id.in_(ids))
            .values(
                state="resolved",
                resolved_at=at,
                resolved_by=SYSTEM_ACTOR,
                snoozed_until=None,
                updated_at=at,
            )
        )
        _cancel_pending(conn, ids)
        for alert in due:
            record_audit(
                conn, SYSTEM_ACTOR, "alert.resolve", alert.id, _audited(alert.status),
                {"state": "resolved", "reason": reason}, ts=at,
            )  # fmt: skip
        return [_alert(row) for row in conn.execute(sa.select(alerts).where(alerts.c.id.in_(ids)))]


def _audited(status: AlertStatus) -> dict[str, Any]:
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in dataclasses.asdict(status).items()
    }


def _cancel_pending(conn: Connection, alert_ids: list[str]) -> None:
    """A resolved alert's deliveries that have not gone out are dropped: it is over."""
    conn.execute(
        alert_deliveries.update()
        .where(alert_deliveries.c.alert_id.in_(alert_ids), alert_deliveries.c.state == "pending")
        .values(state="cancelled", claimed_until=None)
    )


# --------------------------------------------------------------------------- channels


def _channel(row: Row[Any]) -> Channel:
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
    )


def _channels(conn: Connection, *, enabled_only: bool = False) -> list[Channel]:
    stmt = sa.select(alert_channels).order_by(alert_channels.c.name)
    if enabled_only:
        stmt = stmt.where(alert_channels.c.enabled.is_(True))
    return [_channel(row) for row in conn.execute(stmt)]


def list_channels(bind: Bind) -> list[Channel]:
    with connect_read(bind) as conn:
        return _channels(conn)


def get_channel(bind: Bind, ref: str) -> Channel:
    """A channel by id or name; NotFound."""
    with connect_read(bind) as conn:
        row = conn.execute(
            sa.select(alert_channels).where(
                sa.or_(alert_channels.c.id == ref, alert_channels.c.name == ref)
            )
        ).first()
    if row is None:
        raise NotFound(f"no alert channel {ref!r}")
    return _channel(row)


def _config_json(channel: Channel) -> str:
    config: dict[str, Any] = {}
    if channel.url is not None:
        config["url"] = channel.url
    if channel.secret is not None:
        config["secret"] = channel.secret
    if channel.email is not None:
        config["email"] = dataclasses.asdict(channel.email)
    return orjson.dumps(config).decode()


def _filter_json(channel_filter: ChannelFilter) -> str:
    return orjson.dumps(dataclasses.asdict(channel_filter)).decode()


def save_channel(bind: Bind, channel: Channel, *, actor: str) -> Channel:
    """Create a channel, or replace the one of the same name (validated by the caller)."""
    at = utcnow()
    with begin_write(bind) as conn:
        existing = conn.execute(
            sa.select(alert_channels.c.id).where(alert_channels.c.name == channel.name)
        ).first()
        values = {
            "name": channel.name,
            "type": channel.type,
            "config": _config_json(channel),
            "filter": _filter_json(channel.filter),
            "enabled": channel.enabled,
            "updated_at": at,
        }
        if existing is None:
            channel_id = channel.id or new_alert_id("chn")
            conn.execute(alert_channels.insert().values(id=channel_id, created_at=at, **values))
        else:
            channel_id = existing[0]
            conn.execute(
                alert_channels.update().where(alert_channels.c.id == channel_id).values(**values)
            )
        record_audit(
            conn,
            actor,
            "alert_channel.save",
            channel_id,
            None,
            {"name": channel.name, "type": channel.type, "enabled": channel.enabled},
            ts=at,
        )
        row = conn.execute(sa.select(alert_channels).where(alert_channels.c.id == channel_id))
        return _channel(row.one())


def delete_channel(bind: Bind, ref: str, *, actor: str) -> None:
    """Remove a channel; its deliveries that have not gone out are cancelled (the log stays)."""
    channel = get_channel(bind, ref)
    with begin_write(bind) as conn:
        conn.execute(
            alert_deliveries.update()
            .where(
                alert_deliveries.c.channel_id == channel.id,
                alert_deliveries.c.state == "pending",
            )
            .values(state="cancelled", claimed_until=None)
        )
        conn.execute(
            alert_channels.update()
            .where(alert_channels.c.id == channel.id)
            .values(enabled=False, updated_at=utcnow())
        )
        record_audit(conn, actor, "alert_channel.delete", channel.id, channel.name, None)


# --------------------------------------------------------------------------- deliveries


@dataclasses.dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery this process claimed: send it, then :func:`record_attempt`."""

    id: str
    attempts: int  # made so far
    first_attempt_at: datetime | None
    alert: AlertRecord
    channel: Channel


def claim_deliveries(
    bind: Bind, *, now: datetime | None = None, lease: timedelta, limit: int = 50
) -> list[DueDelivery]:
    """Pending deliveries due at ``now``, claimed for ``lease`` (no other process takes them
    meanwhile). A snoozed alert's deliveries are moved to the snooze's end instead."""
    at = utcnow() if now is None else now
    claimed: list[DueDelivery] = []
    with begin_write(bind) as conn:
        rows = conn.execute(
            sa.select(
                alert_deliveries.c.id,
                alert_deliveries.c.attempts,
                alert_deliveries.c.first_attempt_at,
                alert_deliveries.c.channel_id,
                alert_deliveries.c.alert_id,
            )
            .where(
                alert_deliveries.c.state == "pending",
                alert_deliveries.c.next_attempt_at <= at,
                sa.or_(
                    alert_deliveries.c.claimed_until.is_(None),
                    alert_deliveries.c.claimed_until <= at,
                ),
            )
            .order_by(alert_deliveries.c.next_attempt_at)
            .limit(limit)
        ).all()
        channels = {c.id: c for c in _channels(conn)}
        for row in rows:
            alert = _alert(
                conn.execute(sa.select(alerts).where(alerts.c.id == row.alert_id)).one()
            )
            snoozed = alert.snoozed_until
            if snoozed is not None and snoozed > at:
                conn.execute(
                    alert_deliveries.update()
                    .where(alert_deliveries.c.id == row.id)
                    .values(next_attempt_at=snoozed)
                )
                continue
            taken = conn.execute(
                alert_deliveries.update()
                .where(
                    alert_deliveries.c.id == row.id,
                    alert_deliveries.c.state == "pending",
                    sa.or_(
                        alert_deliveries.c.claimed_until.is_(None),
                        alert_deliveries.c.claimed_until <= at,
                    ),
                )
                .values(claimed_until=at + lease)
            )
            channel = channels.get(row.channel_id)
            if taken.rowcount == 1 and channel is not None:
                claimed.append(
                    DueDelivery(row.id, row.attempts, row.first_attempt_at, alert, channel)
                )
    return claimed


def record_attempt(
    bind: Bind,
    delivery: DueDelivery,
    *,
    delivered: bool,
    status: int | None,
    error: str | None,
    next_attempt_at: datetime | None,
    now: datetime | None = None,
) -> DeliveryState:
    """Log one attempt and move the delivery on: delivered, retried at ``next_attempt_at``,
    or dead (``next_attempt_at`` None after a failure). Returns the delivery's new state."""
    at = utcnow() if now is None else now
    attempt = delivery.attempts + 1
    state: DeliveryState = "delivered" if delivered else "pending"
    if not delivered and next_attempt_at is None:
        state = "dead"
    with begin_write(bind) as conn:
        conn.execute(
            alert_attempts.insert().values(
                id=new_alert_id("att"),
                delivery_id=delivery.id,
                attempt=attempt,
                at=at,
                delivered=delivered,
                status=status,
                error=error,
            )
        )
        conn.execute(
            alert_deliveries.update()
            .where(alert_deliveries.c.id == delivery.id)
            .values(
                state=state,
                attempts=attempt,
                first_attempt_at=delivery.first_attempt_at or at,
                next_attempt_at=next_attempt_at or at,
                claimed_until=None,
                delivered_at=at if delivered else None,
                last_status=status,
                last_error=error,
            )
        )
    return state


def delivery_log(
    bind: Bind, *, alert_id: str | None = None, channel_id: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Deliveries with their attempts, newest first."""
    stmt = (
        sa.select(alert_deliveries, alert_channels.c.name.label("channel"))
        .select_from(
            alert_deliveries.join(
                alert_channels, alert_channels.c.id == alert_deliveries.c.channel_id
            )
        )
        .order_by(alert_deliveries.c.created_at.desc(), alert_deliveries.c.id.desc())
        .limit(limit)
    )
    if alert_id is not None:
        stmt = stmt.where(alert_deliveries.c.alert_id == alert_id)
    if channel_id is not None:
        stmt = stmt.where(alert_deliveries.c.channel_id == channel_id)
    out: list[dict[str, Any]] = []
    with connect_read(bind) as conn:
        for row in conn.execute(stmt):
            m = row._mapping
            attempts = conn.execute(
                sa.select(alert_attempts)
                .where(alert_attempts.c.delivery_id == m["id"])
                .order_by(alert_attempts.c.attempt)
            )
            out.append(
                {
                    "id": m["id"],
                    "alert_id": m["alert_id"],
                    "channel_id": m["channel_id"],
                    "channel": m["channel"],
                    "state": m["state"],
                    "attempts": [
                        {
                            "attempt": a.attempt,
                            "at": a.at.isoformat(),
                            "delivered": a.delivered,
                            "status": a.status,
                            "error": a.error,
                        }
                        for a in attempts
                    ],
                    "next_attempt_at": m["next_attempt_at"].isoformat(),
                    "delivered_at": m["delivered_at"].isoformat() if m["delivered_at"] else None,
                }
            )
    return out
