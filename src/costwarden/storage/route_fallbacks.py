"""Fallback chains set through the admin API (table ``route_fallbacks``), with their audit.

A row overrides the config file's ``fallbacks`` of one route; ``null`` (kept as a row, so
``max(version)`` never goes down for pollers) hands the route back to the config file.
Each write stores ``max(version) + 1`` and an audit entry in the same transaction. The
chain itself is validated by the caller (``routing.chains``) before it is stored.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from costwarden.storage.audit import record_audit
from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.schema import route_fallbacks
from costwarden.storage.sqltypes import utcnow

logger = logging.getLogger(__name__)


def set_fallbacks(engine: Bind, route: str, fallbacks: list[str] | None, *, actor: str) -> int:
    """Store ``route``'s fallbacks (None: as configured); returns the new version."""
    with begin_write(engine) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("LOCK TABLE route_fallbacks IN EXCLUSIVE MODE"))
        old = conn.execute(
            sa.select(route_fallbacks.c.fallbacks).where(route_fallbacks.c.route == route)
        ).scalar()
        current = conn.execute(sa.select(sa.func.max(route_fallbacks.c.version))).scalar()
        version = int(current or 0) + 1
        now = utcnow()
        values = {
            "route": route,
            "fallbacks": orjson.dumps(fallbacks).decode(),
            "updated_by": actor,
            "updated_at": now,
            "version": version,
        }
        insert = _insert(conn).values(**values)
        conn.execute(insert.on_conflict_do_update(index_elements=["route"], set_=values))
        record_audit(
            conn,
            actor,
            "route.fallbacks",
            route,
            {"fallbacks": orjson.loads(old) if old else None},
            {"fallbacks": fallbacks},
            ts=now,
        )
    logger.info("route %s fallbacks set to %s by %s", route, fallbacks, actor)
    return version


def fallbacks_version(engine: Bind) -> int:
    with connect_read(engine) as conn:
        version = conn.execute(sa.select(sa.func.max(route_fallbacks.c.version))).scalar()
    return int(version or 0)


def load_fallbacks(engine: Bind) -> tuple[int, dict[str, list[str]]]:
    """``(version, {route: fallbacks})`` of the routes the admin API changed."""
    with connect_read(engine) as conn:
        rows = conn.execute(sa.select(route_fallbacks)).all()
    version = max((int(r.version) for r in rows), default=0)
    found: dict[str, list[str]] = {}
    for row in rows:
        value: Any = orjson.loads(row.fallbacks)
        if isinstance(value, list):
            found[row.route] = [str(v) for v in value]
    return version, found


class SqlFallbackStore:
    """This table as the route table's fallback store
    (:class:`costwarden.routing.table.FallbackStore`), bound to one engine."""

    def __init__(self, engine: Bind) -> None:
        self._engine = engine

    def set_fallbacks(self, route: str, fallbacks: list[str] | None, *, actor: str) -> int:
        return set_fallbacks(self._engine, route, fallbacks, actor=actor)

    def fallbacks_version(self) -> int:
        return fallbacks_version(self._engine)

    def load_fallbacks(self) -> tuple[int, dict[str, list[str]]]:
        return load_fallbacks(self._engine)


def _insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(route_fallbacks)
    return sqlite.insert(route_fallbacks)
