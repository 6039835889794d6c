"""Raw-ledger retention: raw rows older than ``[analytics] raw_retention_days`` go, once
rolled up; the rollups stay. On PostgreSQL the ledger's monthly partitions are kept ahead.

**What goes** (:func:`prune`): the rows whose ``ts`` is before the cutoff
(``storage.partitions.prune_cutoff``: now minus the retention, never past the rollup job's
watermark, floored to a UTC day) and that the job has rolled up (``written_ms`` at or below
its watermark, or NULL: rows from before migration 0007, which the first run took). A row
written later, even one of an old hour, stays until a later run has added it (see
``storage.rollups``). The cutoff is recorded first, as the pruned horizon
(``retention.pruned_before_ms``), in its own transaction: from then on the rollup job never
recomputes an hour before it, and the reconciliation skips its days.

- PostgreSQL, partitioned: each month partition whose whole id range lies before the
  cutoff is dropped (a month partly after it stays until it is wholly before a later
  cutoff: raw rows are kept at least the retention, and up to a month longer), then the
  DEFAULT partition's old rows are deleted in batches. A partition holding a row that must
  stay (an id of another shape, a row not rolled up yet) is not dropped: its old rows are
  deleted in batches instead. The drop takes the ledger's ACCESS EXCLUSIVE lock for a few
  milliseconds; ``lock_timeout`` bounds the wait for it (writers queue behind a waiting
  lock), and a timeout is retried next time.
- SQLite (and an unpartitioned PostgreSQL ledger): DELETE in batches of ``BATCH_ROWS`` by
  ``ts`` (``ix_ledger_ts``), one transaction each, so writers wait for one batch at most.

**Partitions** (:func:`ensure_partitions`, PostgreSQL): the current month's and the next
two's, made when missing. A month whose ids already sit in the DEFAULT partition (PostgreSQL
refuses to make the partition then) has them moved in the same transaction: copied aside,
deleted, the partition made, inserted back (``written_ms`` kept, so rollups see no change).

Blocking: the app runs these in a worker thread of the rollup lease's holder.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from costwarden.storage.db import Bind, begin_write, connect_read
from costwarden.storage.partitions import (
    DEFAULT_PARTITION,
    Month,
    epoch_ms,
    months_ahead,
    prune_cutoff,
    wholly_before,
)
from costwarden.storage.rollups import PRUNED, set_state, state, watermark
from costwarden.storage.schema import ledger
from costwarden.storage.sqltypes import UTCDateTime

logger = logging.getLogger(__name__)

BATCH_ROWS = 10_000
# How long a partition change waits for the ledger's lock. Writers queue behind a waiting
# ACCESS EXCLUSIVE request, so the wait is short; a timeout is retried at the next round.
LOCK_TIMEOUT_MS = 1000
# pg_advisory_xact_lock key serialising partition changes across processes ("cwpt").
PARTITIONS_LOCK_ID = 0x63777074
_MOVING = "cw_moving_rows"


@dataclasses.dataclass(frozen=True, slots=True)
class Pruned:
    """What one prune did: its cutoff (None: nothing may go yet), the raw rows removed
    (deleted, and those of the partitions dropped), the partitions dropped."""

    cutoff: datetime | None
    rows: int = 0
    partitions: tuple[str, ...] = ()


def _part(name: str) -> sa.TableClause:
    """A partition (or the ledger) as far as retention reads and deletes it."""
    return sa.table(
        name,
        sa.column("request_id", sa.Text()),
        sa.column("ts", UTCDateTime()),
        sa.column("written_ms", sa.BigInteger()),
    )


def partitioned(conn: Connection) -> bool:
    """Whether the ledger is partitioned (PostgreSQL after migration 0009)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.exec_driver_sql(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass('ledger')"
    ).scalar_one_or_none()
    return kind == "p"


def partitions(conn: Connection) -> list[str]:
    """The names of the ledger's partitions (none unless partitioned), sorted."""
    if not partitioned(conn):
        return []
    found = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass('ledger') ORDER BY c.relname"
    ).scalars()
    return [str(name) for name in found]


def _lock_ledger(conn: Connection) -> None:
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
    conn.exec_driver_sql("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")


def _create(conn: Connection, month: Month) -> int:
    """Make ``month``'s partition, moving its ids out of the DEFAULT partition first;
    how many rows moved. In the caller's transaction, the ledger locked."""
    where = f"request_id >= '{month.lower}' AND request_id < '{month.upper}'"
    moved = conn.exec_driver_sql(
        f"SELECT count(*) FROM {DEFAULT_PARTITION} WHERE {where}"
    ).scalar_one()
    if moved:
        conn.exec_driver_sql(
            f"CREATE TEMP TABLE {_MOVING} ON COMMIT DROP AS "
            f"SELECT * FROM {DEFAULT_PARTITION} WHERE {where}"
        )
        conn.exec_driver_sql(f"DELETE FROM {DEFAULT_PARTITION} WHERE {where}")
    conn.exec_driver_sql(month.create_sql())
    if moved:
        conn.exec_driver_sql(f"INSERT INTO ledger SELECT * FROM {_MOVING}")
        conn.exec_driver_sql(f"DROP TABLE {_MOVING}")
    return int(moved)


def ensure_partitions(bind: Bind, now: datetime) -> list[str]:
    """Make the missing partitions of the current month and the next two (PostgreSQL; a
    no-op elsewhere, or while the ledger is not partitioned); their names."""
    with connect_read(bind) as conn:
        present = set(partitions(conn))
        if not present:  # not partitioned (SQLite, or PostgreSQL before migration 0009)
            return []
    missing = [m for m in months_ahead(now) if m.name not in present]
    if not missing:
        return []
    made: list[str] = []
    moved = 0
    with begin_write(bind) as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PARTITIONS_LOCK_ID})
        present = set(partitions(conn))  # another process may have made them meanwhile
        missing = [m for m in missing if m.name not in present]
        if missing:
            _lock_ledger(conn)
        for month in missing:
            moved += _create(conn, month)
            made.append(month.name)
    if made:
        logger.info(
            "ledger partitions made: %s (%d row(s) moved from %s)",
            ", ".join(made), moved, DEFAULT_PARTITION,
        )  # fmt: skip
    return made


def _delete_batches(bind: Bind, name: str, cutoff: datetime, rolled: int) -> int:
    """Delete the rolled-up rows of ``name`` before ``cutoff``, about ``BATCH_ROWS`` a
    transaction, oldest first; how many. A batch is a range of ts (up to the ts of its
    BATCH_ROWS-th row), deleted through the ts index, starting after the last batch's: a
    ``request_id IN (SELECT ... LIMIT n)`` batch was a hash join over the whole table on
    PostgreSQL, and a range from the start again would rescan the index entries of rows
    deleted before (they stay until a vacuum): either made the whole quadratic."""
    t = ledger if name == ledger.name else _part(name)
    c: Any = t.c
    old = sa.and_(c.ts < cutoff, sa.or_(c.written_ms.is_(None), c.written_ms <= rolled))
    total = 0
    after: datetime | None = None
    while True:
        this = old if after is None else sa.and_(old, c.ts > after)
        with begin_write(bind) as conn:
            edge = conn.execute(
                sa.select(c.ts).where(this).order_by(c.ts).offset(BATCH_ROWS - 1).limit(1)
            ).scalar()
            batch = this if edge is None else sa.and_(this, c.ts <= edge)
            total += conn.execute(t.delete().where(batch)).rowcount
        if edge is None:  # fewer than BATCH_ROWS were left: all gone now
            return total
        after = edge


def _drop_partitions(bind: Bind, cutoff: datetime, rolled: int) -> tuple[list[str], int, list[str]]:
    """Drop the month partitions wholly before ``cutoff`` whose rows may all go: (dropped,
    their rows, the due ones kept because a row must stay)."""
    with connect_read(bind) as conn:
        due = wholly_before(partitions(conn), cutoff)
        # Counted before the lock (only for the log): writers do not wait for a count.
        counts = {
            m.name: int(conn.execute(sa.select(sa.func.count()).select_from(_part(m.name)))
                        .scalar_one())
            for m in due
        }  # fmt: skip
    if not due:
        return [], 0, []
    dropped: list[str] = []
    kept: list[str] = []
    with begin_write(bind) as conn:
        _lock_ledger(conn)
        for month in due:
            c: Any = _part(month.name).c
            newest, last_written = conn.execute(
                sa.select(sa.func.max(c.ts), sa.func.max(c.written_ms))
            ).one()
            if (newest is not None and newest >= cutoff) or (
                last_written is not None and last_written > rolled
            ):
                kept.append(month.name)
                continue
            conn.exec_driver_sql(f"DROP TABLE {month.name}")
            dropped.append(month.name)
    return dropped, sum(counts[n] for n in dropped), kept


def prune(bind: Bind, *, keep_days: int, now: datetime) -> Pruned:
    """Remove the raw ledger rows older than ``keep_days`` that are rolled up (see the
    module docstring); what was removed."""
    with connect_read(bind) as conn:
        rolled = watermark(conn)
        is_partitioned = partitioned(conn)
    cutoff = prune_cutoff(now, keep_days, rolled)
    if cutoff is None or rolled is None:
        return Pruned(None)
    with begin_write(bind) as conn:
        # First, and committed: from now on no hour before the cutoff is recomputed from
        # its raw rows (storage.rollups), so none is recomputed from what is left of it.
        # Waits for a rollup transaction holding the horizon (FOR SHARE) on PostgreSQL.
        before = state(conn, PRUNED)
        set_state(conn, PRUNED, max(before or 0, epoch_ms(cutoff)))
    dropped: list[str] = []
    rows = 0
    tables = [ledger.name]
    if is_partitioned:
        dropped, rows, kept = _drop_partitions(bind, cutoff, rolled)
        tables = [DEFAULT_PARTITION, *kept]
    for name in tables:
        rows += _delete_batches(bind, name, cutoff, rolled)
    if rows or dropped:
        logger.info(
            "ledger retention: %d raw row(s) before %s removed%s",
            rows, cutoff.date().isoformat(),
            f" ({len(dropped)} partition(s) dropped: {', '.join(dropped)})" if dropped else "",
        )  # fmt: skip
    return Pruned(cutoff, rows, tuple(dropped))
