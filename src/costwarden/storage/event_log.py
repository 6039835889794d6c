"""The event log in the database: the durable, globally ordered stream behind
``core.events.EventBus`` (see its docstring for why ids are ordered across processes).

An append is one write transaction: first ``UPDATE event_sequence ... RETURNING last_id``
(taking the counter row's lock, on PostgreSQL a row lock and on SQLite the database's write
lock, held until commit), then one row for the whole batch under the ids it reserved
(``first_id`` .. ``last_id``, the events as one JSON array). A second process's append waits
on that lock, so the ids commit in the order they were handed out and a rolled-back append
gives its ids back: no gaps, no reordering. One row per batch rather than per event: an
event then costs the writer a share of one JSON array, not an index insert of its own.

Methods block; the bus calls them in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.core.errors import StorageError
from costwarden.core.event_kinds import EventPayload
from costwarden.core.events import Batch, encode_batch
from costwarden.storage.db import begin_write, connect_read
from costwarden.storage.schema import event_log, event_sequence

logger = logging.getLogger(__name__)

SEQUENCE = "events"

class SqlEventLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # Straight to the driver's cursor, as the ledger writer does: SQLAlchemy's statement
        # machinery cost more than the two statements themselves.
        mark = "?" if engine.dialect.name == "sqlite" else "%s"
        self._next = (
            f"UPDATE event_sequence SET last_id = last_id + {mark} WHERE name = {mark} "
            "RETURNING last_id"
        )
        self._insert = (
            f"INSERT INTO event_log (first_id, last_id, ts_ms, events) "
            f"VALUES ({mark}, {mark}, {mark}, {mark})"
        )

    def append(self, count: int, ts_ms: int, data: bytes) -> int:
        with begin_write(self._engine) as conn:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(self._next, (count, SEQUENCE))
                row = cursor.fetchone()
                if row is None:
                    raise StorageError(
                        "the event_sequence row is missing (run costwarden migrate)"
                    )
                last = int(row[0])
                cursor.execute(self._insert, (last - count + 1, last, ts_ms, data.decode()))
            finally:
                cursor.close()
        return last

    def read(self, after: int, limit: int) -> list[Batch]:
        """Batches with an event above ``after``: the one holding ``after + 1`` (found by
        its first id, the primary key) and those after it, until ``limit`` events."""
        c = event_log.c
        holding = (
            sa.select(c.first_id)
            .where(c.first_id <= after + 1)
            .order_by(c.first_id.desc())
            .limit(1)
            .scalar_subquery()
        )
        query = (
            sa.select(c.first_id, c.last_id, c.events)
            .where(c.first_id >= sa.func.coalesce(holding, 0), c.last_id > after)
            .order_by(c.first_id)
        )
        out: list[Batch] = []
        count = 0
        with connect_read(self._engine) as conn:
            for row in conn.execute(query):
                out.append((int(row.first_id), row.events.encode()))
                count += int(row.last_id) - max(int(row.first_id) - 1, after)
                if count >= limit:
                    break
        return out

    def last_id(self) -> int:
        query = sa.select(event_sequence.c.last_id).where(event_sequence.c.name == SEQUENCE)
        with connect_read(self._engine) as conn:
            value = conn.execute(query).scalar()
        return int(value or 0)

    def prune(self, before_ms: int) -> int:
        with begin_write(self._engine) as conn:
            result = conn.execute(sa.delete(event_log).where(event_log.c.ts_ms < before_ms))
        return int(result.rowcount or 0)


def append_events(engine: Engine, payloads: Sequence[EventPayload], now: float) -> int:
    """Raise events from a process that runs no event bus (the CLI): appended to the log as
    one batch, they reach every gateway process's subscribers (alerts, the live stream) with
    its next read of the log. Returns the last id."""
    batch = [(now, p) for p in payloads]
    return SqlEventLog(engine).append(len(batch), int(now * 1000), encode_batch(batch))
