"""Alert deliveries: claimed once across processes, retried, logged (the delivery log).

A delivery is claimed with a conditional ``UPDATE`` (``claimed_until`` in the past or unset),
so one process sends each attempt; a process that dies mid-send leaves the claim to lapse and
another retries. Every attempt is a row of ``alert_attempts``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from costwarden.alerts.model import Channel
from costwarden.storage.alert_records import (
    AlertRecord,
    alert_row,
    any_row,
    channels_of,
    new_alert_id,
)
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.schema import alert_attempts, alert_channels, alert_deliveries, alerts
from costwarden.storage.sqltypes import utcnow

DeliveryState = Literal["pending", "delivered", "dead", "cancelled"]


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
    due = sa.select(alert_deliveries.c.id).where(
        alert_deliveries.c.state == "pending", alert_deliveries.c.next_attempt_at <= at
    )
    if not any_row(bind, due.limit(1)):  # the usual answer, without a write lock (see above)
        return claimed
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
        channels = {c.id: c for c in channels_of(conn)}
        for row in rows:
            alert = alert_row(
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
