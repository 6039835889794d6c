"""The event log in the database: the durable, globally ordered stream behind
``core.events.EventBus`` (see its docstring for why ids are ordered across processes).

An append is one write transaction: first ``UPDATE event_sequence ... RETURNING last_id``
(taking the counter row's lock, on PostgreSQL a row lock and on SQLite the database's write
lock, held until commit), then the rows under the ids it reserved. A second process's append
waits on that lock, so the ids commit in the order they were handed out and a rolled-back
append gives its ids back: no gaps, no reordering. Inserts go straight to the driver's cursor
(one ``executemany``) for the same reason the ledger's do: SQLAlchemy's per-row machinery
costs more than the row.

Methods block; the bus calls them in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.core.errors import StorageError
from costwarden.core.events import LogRow, StoredRow
from costwarden.storage.db import begin_write, connect_read
from costwarden.storage.schema import event_log, event_sequence

logger = logging.getLogger(__name__)

SEQUENCE = "events"

_NEXT = sa.text(
    "UPDATE event_sequence SET last_id = last_id + :n WHERE name = :name RETURNING last_id"
)


class SqlEventLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        mark = "?" if engine.dialect.name == "sqlite" else "%s"
        self._insert = (
            f"INSERT INTO event_log (id, ts_ms, kind, org_id, data) "
            f"VALUES ({mark}, {mark}, {mark}, {mark}, {mark})"
        )

    def append(self, rows: Sequence[LogRow]) -> int:
        if not rows:
            return self.last_id()
        with begin_write(self._engine) as conn:
            last = conn.execute(_NEXT, {"n": len(rows), "name": SEQUENCE}).scalar()
            if last is None:
                raise StorageError("the event_sequence row is missing (run costwarden migrate)")
            first = int(last) - len(rows) + 1
            cursor = conn.connection.cursor()
            try:
                cursor.executemany(
                    self._insert,
                    [(first + i, ts, kind, org, data.decode()) for i, (ts, kind, org, data)
                     in enumerate(rows)],
                )
            finally:
                cursor.close()
        return int(last)

    def read(self, after: int, limit: int) -> list[StoredRow]:
        query = (
            sa.select(event_log.c.id, event_log.c.ts_ms, event_log.c.kind, event_log.c.org_id,
                      event_log.c.data)
            .where(event_log.c.id > after)
            .order_by(event_log.c.id)
            .limit(limit)
        )
        with connect_read(self._engine) as conn:
            return [
                (int(r.id), int(r.ts_ms), r.kind, r.org_id, r.data.encode())
                for r in conn.execute(query)
            ]

    def last_id(self) -> int:
        query = sa.select(event_sequence.c.last_id).where(event_sequence.c.name == SEQUENCE)
        with connect_read(self._engine) as conn:
            value = conn.execute(query).scalar()
        return int(value or 0)

    def prune(self, before_ms: int) -> int:
        with begin_write(self._engine) as conn:
            result = conn.execute(sa.delete(event_log).where(event_log.c.ts_ms < before_ms))
        return int(result.rowcount or 0)
