"""Leader leases: which process runs a scheduled job (alert forecasts, ...), once across replicas.

A lease is a row (``leases``): its name, its holder and when it expires. :func:`try_lead`
takes a free or lapsed lease, or renews the caller's own, in one write transaction (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: the row locked ``FOR UPDATE``, and two first takers race on
the primary key, one losing). A holder that dies stops renewing, and another process takes
the lease once it lapses. In the database rather than Redis so that it works the same on the
embedded default and across replicas.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from costwarden.storage.db import Bind, begin_write
from costwarden.storage.schema import leases


def try_lead(bind: Bind, name: str, holder: str, *, ttl: timedelta, now: datetime) -> bool:
    """Whether ``holder`` holds lease ``name`` until ``now + ttl`` (taken or renewed)."""
    try:
        with begin_write(bind) as conn:
            stmt = sa.select(leases.c.holder, leases.c.expires_at).where(leases.c.name == name)
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            row = conn.execute(stmt).first()
            if row is None:
                conn.execute(leases.insert().values(name=name, holder=holder, expires_at=now + ttl))
                return True
            if row.holder != holder and row.expires_at > now:
                return False
            conn.execute(
                leases.update()
                .where(leases.c.name == name)
                .values(holder=holder, expires_at=now + ttl)
            )
            return True
    except IntegrityError:  # another process inserted it first
        return False
