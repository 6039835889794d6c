"""The config file's alert channels (``[[alerts.channels]]``) kept in step with the
``alert_channels`` table, at each gateway start.

- A channel of the file is upserted by name with ``source = 'config'``: inserted, or updated
  when it differs (an unchanged one is not written, nor audited, so a restart changes
  nothing).
- A channel of that name the admin API made (``source = 'api'``) is taken over: the file
  wins, as it would at every later start anyway; :attr:`ChannelSync.taken_over` names it so
  that the app warns about it. It happens once: the next start finds it the file's already.
- A channel of the file that is no longer in it is disabled (its deliveries not yet sent are
  dropped) and handed back to the admin API (``source = 'api'``), never deleted: deliveries
  reference it, and the delivery log keeps naming it, as for a channel removed through the
  API. Being the API's again, it can be re-enabled, replaced or reused by name there.

Every change is audited (actor ``config``). Several processes starting at once serialize on a
transaction-scoped advisory lock (PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already does), so
each change is made, audited and reported by exactly one of them, and none fails.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.alerts.model import Channel
from costwarden.storage.alert_records import channel_values, insert_into, new_alert_id
from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write
from costwarden.storage.schema import alert_channels, alert_deliveries
from costwarden.storage.sqltypes import utcnow

CONFIG_ACTOR = "config"
# Fixed key for pg_advisory_xact_lock serializing config channel syncs ("cwch" in ASCII).
SYNC_LOCK_ID = 0x63776368
_COMPARED = ("type", "config", "filter", "enabled")


@dataclasses.dataclass(frozen=True, slots=True)
class ChannelSync:
    """What one sync changed, by channel name."""

    saved: tuple[str, ...] = ()  # inserted or updated (including the taken over)
    taken_over: tuple[str, ...] = ()  # were the admin API's, now the file's
    released: tuple[str, ...] = ()  # no longer in the file: disabled, the API's again


def sync_config_channels(bind: Bind, channels: Sequence[Channel]) -> ChannelSync:
    """Make ``alert_channels`` hold exactly ``channels`` as the config file's (see the module
    docstring); what changed. ``channels`` are validated, with unique names."""
    at = utcnow()
    wanted = {c.name: c for c in channels}
    saved: list[str] = []
    taken_over: list[str] = []
    released: list[str] = []
    with begin_write(bind) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": SYNC_LOCK_ID})
        stored = {row.name: row for row in conn.execute(sa.select(alert_channels))}
        for name in sorted(wanted):
            values = channel_values(wanted[name])
            row = stored.get(name)
            if row is None:
                channel_id = _insert(conn, values, at)
            elif row.source != "config" or any(row._mapping[k] != values[k] for k in _COMPARED):
                channel_id = row.id
                conn.execute(
                    alert_channels.update()
                    .where(alert_channels.c.id == row.id)
                    .values(**values, source="config", updated_at=at)
                )
                if row.source != "config":
                    taken_over.append(name)
            else:
                continue
            saved.append(name)
            record_audit(
                conn, CONFIG_ACTOR, "alert_channel.save", channel_id, None,
                {"name": name, "type": values["type"], "enabled": values["enabled"]}, ts=at,
            )  # fmt: skip
        for name in sorted(set(stored) - set(wanted)):
            row = stored[name]
            if row.source == "config":
                _release(conn, row.id, name, at)
                released.append(name)
    return ChannelSync(tuple(saved), tuple(taken_over), tuple(released))


def _insert(conn: Connection, values: dict[str, Any], at: datetime) -> str:
    """Insert a channel of the file; if an admin API write of that name got in since this
    sync read the table, the file wins over it as over any API channel."""
    stmt = insert_into(conn, alert_channels).values(
        id=new_alert_id("chn"), source="config", created_at=at, updated_at=at, **values
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={**{k: stmt.excluded[k] for k in values}, "source": "config", "updated_at": at},
    ).returning(alert_channels.c.id)
    channel_id: str = conn.execute(stmt).scalar_one()
    return channel_id


def _release(conn: Connection, channel_id: str, name: str, at: datetime) -> None:
    conn.execute(
        alert_deliveries.update()
        .where(alert_deliveries.c.channel_id == channel_id, alert_deliveries.c.state == "pending")
        .values(state="cancelled", claimed_until=None)
    )
    conn.execute(
        alert_channels.update()
        .where(alert_channels.c.id == channel_id)
        .values(enabled=False, source="api", updated_at=at)
    )
    record_audit(conn, CONFIG_ACTOR, "alert_channel.delete", channel_id, name, None, ts=at)
