"""Kill switch and feature toggles in the database: the operators' writes and the gateway's feed.

A switch is one row per (scope, feature) that was ever set: platform-wide (``org_id`` NULL,
id ``platform:<feature>``) or for one org (id ``org:<org id>:<feature>``). A switch that is
on is the same as no row; only rows with ``enabled = false`` refuse traffic.

Features (:data:`FEATURES`): ``ai`` is every model call; ``chat.completions``, ``embeddings``
and ``messages`` are one endpoint each; ``streaming`` refuses requests with ``stream: true``.

Rules every write follows:

- Everything is validated first; a write is one transaction holding the switch row *and* its
  audit row (:mod:`costwarden.storage.audit`), so no change goes unaudited. A write that
  changes nothing is still recorded: it is an operator action.
- ``version`` is global: each write stores ``max(version) + 1``, computed inside the write
  transaction while writers are serialized (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
  ``LOCK TABLE switches IN EXCLUSIVE MODE``, which blocks other writers but not readers, so
  the pollers never wait). Versions are therefore distinct and commit in order, and a poller
  that sees ``max(version)`` unchanged knows nothing changed.
"""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from costwarden.core.actors import clean_actor
from costwarden.core.errors import InvalidInput
from costwarden.core.event_kinds import SwitchChanged
from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.repo import org_id_by_name
from costwarden.storage.schema import orgs, switches
from costwarden.storage.sqltypes import utcnow

logger = logging.getLogger(__name__)

FEATURES = ("ai", "chat.completions", "embeddings", "messages", "streaming")
SWITCH_ACTION = "switch.set"
MAX_MESSAGE_LEN = 500


@dataclasses.dataclass(frozen=True, slots=True)
class SwitchRecord:
    id: str
    org_id: str | None  # None: platform-wide
    org_name: str | None
    feature: str
    enabled: bool
    message: str | None
    updated_by: str
    updated_at: datetime
    version: int

    def changed_event(self) -> SwitchChanged:
        """The ``switch_changed`` event this write is (admin API, CLI, honeypot trap)."""
        return SwitchChanged(
            org_id=self.org_id,
            feature=self.feature,
            enabled=self.enabled,
            message=self.message,
            actor=self.updated_by,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": "platform" if self.org_id is None else "org",
            "org": self.org_name,
            "org_id": self.org_id,
            "feature": self.feature,
            "enabled": self.enabled,
            "message": self.message,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat(),
            "version": self.version,
        }


def switch_id(org_id: str | None, feature: str) -> str:
    return f"platform:{feature}" if org_id is None else f"org:{org_id}:{feature}"


def needs_confirmation(org: str | None, feature: str, enabled: bool) -> bool:
    """True for the one change that stops everything: platform-wide ``ai`` off."""
    return org is None and feature == "ai" and not enabled


def check_feature(feature: Any) -> str:
    if not isinstance(feature, str) or feature.strip() not in FEATURES:
        raise InvalidInput(f"unknown feature {feature!r} (known: {', '.join(FEATURES)})")
    return feature.strip()


def clean_message(message: Any) -> str | None:
    """The client-facing message as stored (None: use the configured default)."""
    if message is None:
        return None
    if not isinstance(message, str):
        raise InvalidInput("message must be a string (or null for the default message)")
    text = message.strip()
    if len(text) > MAX_MESSAGE_LEN:
        raise InvalidInput(f"message is longer than {MAX_MESSAGE_LEN} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        raise InvalidInput("message must not contain control characters (one line of text)")
    return text or None


def _insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(switches)
    return sqlite.insert(switches)


def lock_switches(conn: Connection) -> None:
    """Serialize switch writes so max(version) + 1 is unique (SQLite: BEGIN IMMEDIATE did)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("LOCK TABLE switches IN EXCLUSIVE MODE"))


def _select() -> sa.Select[Any]:
    return (
        sa.select(switches, orgs.c.name.label("org_name"))
        .select_from(switches.outerjoin(orgs, orgs.c.id == switches.c.org_id))
        # platform rows first (NULL org), then by org name and feature
        .order_by(switches.c.org_id.is_not(None), orgs.c.name, switches.c.feature)
    )


def _from_row(row: Row[Any]) -> SwitchRecord:
    return SwitchRecord(
        id=row.id,
        org_id=row.org_id,
        org_name=row.org_name,
        feature=row.feature,
        enabled=bool(row.enabled),
        message=row.message,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
        version=int(row.version),
    )


def _state(enabled: bool, message: str | None) -> dict[str, Any]:
    return {"enabled": enabled, "message": message}


def set_switch(
    engine: Bind,
    *,
    org: str | None,
    feature: str,
    enabled: bool,
    message: str | None,
    actor: str,
) -> SwitchRecord:
    """Turn ``feature`` on or off, platform-wide (``org`` None) or for the org named ``org``.

    ``message`` is what refused clients are told (None: the configured default). Writes the
    switch and an audit row (``switch.set``, old and new ``{enabled, message}``) in one
    transaction. Raises InvalidInput (unknown feature, bad message or actor) or NotFound
    (unknown org), having changed nothing.

    Platform-wide ``ai`` off stops every model call; the surfaces (admin API, CLI) ask for an
    explicit confirmation first (:func:`needs_confirmation`).
    """
    name = check_feature(feature)
    if not isinstance(enabled, bool):
        raise InvalidInput("enabled must be true or false")
    text = clean_message(message)
    who = clean_actor(actor)
    if org is not None and (not isinstance(org, str) or not org.strip()):
        raise InvalidInput("org must be an org name, or null for a platform-wide switch")

    with begin_write(engine) as conn:
        lock_switches(conn)
        org_id = org_id_by_name(conn, org) if org is not None else None
        record = write_switch(conn, org_id, name, enabled=enabled, message=text, actor=who)
    logger.log(
        logging.INFO if enabled else logging.WARNING,
        "switch %s %s by %s (switch version %d)",
        record.id,
        "on" if enabled else "OFF",
        who,
        record.version,
    )
    return record


def current_switch(conn: Connection, org_id: str | None, feature: str) -> SwitchRecord | None:
    """The switch of ``feature`` for org ``org_id`` (None: platform-wide) as stored; None if
    it was never set."""
    row = conn.execute(_select().where(switches.c.id == switch_id(org_id, feature))).first()
    return None if row is None else _from_row(row)


def write_switch(
    conn: Connection,
    org_id: str | None,
    feature: str,
    *,
    enabled: bool,
    message: str | None,
    actor: str,
) -> SwitchRecord:
    """One switch write and its audit row in the caller's write transaction, which has taken
    the switches' lock (:func:`lock_switches`); arguments already validated."""
    row_id = switch_id(org_id, feature)
    old = conn.execute(
        sa.select(switches.c.enabled, switches.c.message).where(switches.c.id == row_id)
    ).one_or_none()
    current: int | None = conn.execute(sa.select(sa.func.max(switches.c.version))).scalar()
    version = (current or 0) + 1
    now = utcnow()
    values = {
        "enabled": enabled,
        "message": message,
        "updated_by": actor,
        "updated_at": now,
        "version": version,
    }
    stmt = _insert(conn).values(id=row_id, org_id=org_id, feature=feature, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=values))
    record_audit(
        conn,
        actor,
        SWITCH_ACTION,
        row_id,
        None if old is None else _state(bool(old.enabled), old.message),
        _state(enabled, message),
        ts=now,
    )
    return _from_row(conn.execute(_select().where(switches.c.id == row_id)).one())


def list_switches(engine: Bind) -> list[SwitchRecord]:
    """Every switch ever set (on or off): platform ones first, then by org name and feature."""
    with connect_read(engine) as conn:
        rows = conn.execute(_select()).all()
    return [_from_row(r) for r in rows]


def switches_version(engine: Bind) -> int:
    """The newest switch version (0 before the first write); one indexed query."""
    with connect_read(engine) as conn:
        version: int | None = conn.execute(sa.select(sa.func.max(switches.c.version))).scalar()
    return int(version or 0)


def load_switches(engine: Bind) -> tuple[int, list[SwitchRecord]]:
    """``(version, every switch)`` from one snapshot: the version is the rows' newest."""
    records = list_switches(engine)
    return max((r.version for r in records), default=0), records
