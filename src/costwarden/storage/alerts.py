"""Alerts in the database: raised once, acted on with an audit trail, delivered per channel.

- :func:`raise_alert` inserts an alert under its unique ``dedupe_key`` (``ON CONFLICT DO
  NOTHING``) and, only if this call inserted it, a pending delivery for every enabled channel
  whose filter takes it, plus an ``alert.fired`` audit row, in one transaction. However many
  processes raise the same draft, and however often after restarts, one alert fires.
- :func:`act_on_alert` applies an operator's action (``alerts.state.apply``) under the row's
  write lock and records who did what and when in the audit log (``alert.<action>``).
- Channels: saved by name (validated by the caller), disabled rather than deleted, so the
  delivery log keeps naming them. A channel of the config file (``source = 'config'``, kept
  in step by :mod:`costwarden.storage.config_channels`) is refused here with Conflict: the
  file would undo the change at the next start. Deliveries are
  :mod:`costwarden.storage.alert_deliveries`'.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from costwarden.alerts.delivery import matches
from costwarden.alerts.model import AlertState, Channel
from costwarden.alerts.rules import AlertDraft
from costwarden.alerts.state import Action, AlertStatus, apply
from costwarden.core.errors import Conflict, NotFound
from costwarden.storage.alert_records import (
    SYSTEM_ACTOR,
    AlertRecord,
    alert_row,
    any_row,
    cancel_pending,
    channel_row,
    channel_values,
    channels_of,
    insert_into,
    new_alert_id,
)
from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.repo import org_id_by_name
from costwarden.storage.schema import alert_channels, alert_deliveries, alerts
from costwarden.storage.sqltypes import utcnow

logger = logging.getLogger(__name__)

_OPEN = alerts.c.state.in_(("firing", "acknowledged"))



# --------------------------------------------------------------------------- alerts


def raise_alert(
    bind: Bind, draft: AlertDraft, *, now: datetime | None = None
) -> AlertRecord | None:
    """Store ``draft`` as a firing alert with its deliveries; None if its key already fired."""
    at = utcnow() if now is None else now
    alert_id = new_alert_id("alr")
    with begin_write(bind) as conn:
        stmt = (
            insert_into(conn, alerts)
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
        for channel in channels_of(conn, enabled_only=True):
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
        return alert_row(conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).one())


def get_alert(bind: Bind, alert_id: str) -> AlertRecord:
    with connect_read(bind) as conn:
        row = conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).first()
    if row is None:
        raise NotFound(f"no alert {alert_id!r}")
    return alert_row(row)


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
        return [alert_row(row) for row in conn.execute(stmt)]


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
        before = alert_row(row)
        after = apply(before.status, action, actor=actor, now=at, until=until)
        conn.execute(
            alerts.update()
            .where(alerts.c.id == alert_id)
            .values(**dataclasses.asdict(after), updated_at=at)
        )
        if after.state == "resolved":
            cancel_pending(conn, [alert_id])
        record_audit(
            conn,
            actor,
            f"alert.{action}",
            alert_id,
            _audited(before.status),
            _audited(after),
            ts=at,
        )
        return alert_row(conn.execute(sa.select(alerts).where(alerts.c.id == alert_id)).one())


def resolve_reset_windows(bind: Bind, *, now: datetime | None = None) -> list[AlertRecord]:
    """Resolve the open alerts whose window has reset; the ones resolved."""
    at = utcnow() if now is None else now
    reset = (alerts.c.resolves_at.is_not(None), alerts.c.resolves_at <= at)
    # Each process asks every few seconds: a read first, so that the usual answer (nothing)
    # takes no write lock (on SQLite, the one the ledger writer needs).
    if not any_row(bind, sa.select(alerts.c.id).where(_OPEN, *reset).limit(1)):
        return []
    return _resolve_where(bind, reset, reason="window reset", at=at)


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
    org_match = alerts.c.org_id.is_(None) if org_id is None else alerts.c.org_id == org_id
    where = (alerts.c.rule == rule, alerts.c.scope_id == scope_id, org_match)
    return _resolve_where(bind, where, reason=reason, at=utcnow() if now is None else now)


def recent_alerts(bind: Bind, rule: str, since: datetime) -> list[AlertRecord]:
    """The alerts of ``rule`` that are open, or fired at or after ``since``: what a watcher
    looks at before raising another (``alerts.error_rate.decide``)."""
    recent = sa.or_(_OPEN, alerts.c.fired_at >= since)
    with connect_read(bind) as conn:
        rows = conn.execute(sa.select(alerts).where(alerts.c.rule == rule, recent))
        return [alert_row(row) for row in rows]


def _resolve_where(
    bind: Bind, where: tuple[sa.ColumnElement[bool], ...], *, reason: str, at: datetime
) -> list[AlertRecord]:
    """Resolve the open alerts matching ``where`` (by costwarden, audited with ``reason``),
    dropping their deliveries not yet sent; the ones resolved."""
    with begin_write(bind) as conn:
        due = [alert_row(row) for row in conn.execute(sa.select(alerts).where(_OPEN, *where))]
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
        cancel_pending(conn, ids)
        for alert in due:
            record_audit(
                conn, SYSTEM_ACTOR, "alert.resolve", alert.id, _audited(alert.status),
                {"state": "resolved", "reason": reason}, ts=at,
            )  # fmt: skip
        rows = conn.execute(sa.select(alerts).where(alerts.c.id.in_(ids)))
        return [alert_row(row) for row in rows]


def _audited(status: AlertStatus) -> dict[str, Any]:
    return {
        k: v.isoformat() if isinstance(v, datetime) else v
        for k, v in dataclasses.asdict(status).items()
    }


# --------------------------------------------------------------------------- channels


def list_channels(bind: Bind) -> list[Channel]:
    with connect_read(bind) as conn:
        return channels_of(conn)


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
    return channel_row(row)


def _config_managed(name: str) -> Conflict:
    return Conflict(
        f"alert channel {name!r} is managed in the config file ([[alerts.channels]]): "
        "change or remove it there"
    )


def save_channel(bind: Bind, channel: Channel, *, actor: str) -> Channel:
    """Create a channel, or replace the one of the same name (validated by the caller);
    Conflict if that one is the config file's."""
    at = utcnow()
    with begin_write(bind) as conn:
        existing = conn.execute(
            sa.select(alert_channels.c.id, alert_channels.c.source).where(
                alert_channels.c.name == channel.name
            )
        ).first()
        if existing is not None and existing.source == "config":
            raise _config_managed(channel.name)
        values = {**channel_values(channel), "updated_at": at}
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
        return channel_row(row.one())


def delete_channel(bind: Bind, ref: str, *, actor: str) -> None:
    """Remove a channel; its deliveries that have not gone out are cancelled (the log stays).
    Conflict if it is the config file's."""
    channel = get_channel(bind, ref)
    with begin_write(bind) as conn:
        # Checked again under the write lock: a gateway starting now may have taken it over.
        source = conn.execute(
            sa.select(alert_channels.c.source).where(alert_channels.c.id == channel.id)
        ).scalar_one()
        if source == "config":
            raise _config_managed(channel.name)
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
