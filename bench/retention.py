#!/usr/bin/env python
"""Raw-ledger retention on PostgreSQL: a month's partition dropped against its rows deleted.

    python bench/retention.py [--rows 300000]

Writes ``--rows`` ledger rows of June 2026 (ids made at their ts, as the gateway makes them)
and a tenth as many of August, through the ledger's own INSERT, marks them rolled up, then
prunes them with a 40-day retention on 2026-08-20 (cutoff 2026-07-11: June goes whole), in
three scratch PostgreSQL databases:

- ``prune``, partitioned ledger (migration 0008): June's partition dropped;
- ``prune``, the unpartitioned ledger of migration 0007: DELETEs of 10,000 rows a transaction;
- one ``DELETE ... WHERE ts < cutoff`` on the unpartitioned ledger.

Meanwhile a writer inserts a row every 5 ms (the ledger's INSERT, a commit each); its slowest
insert in the second before and during the prune shows how long writers waited. Prints each
variant's seconds, the WAL it wrote, those two, and the ledger's size on disk before and
after (without a VACUUM: a DELETE leaves dead rows).
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from alembic import command
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledgergen import insert_rows  # noqa: E402
from tests.helpers import scratch_pg_database  # noqa: E402

from costwarden.core.records import LedgerRecord  # noqa: E402
from costwarden.storage.db import create_engine_for  # noqa: E402
from costwarden.storage.ledger_rows import DriverInsert  # noqa: E402
from costwarden.storage.migrate import alembic_config, migrate  # noqa: E402
from costwarden.storage.partitions import epoch_ms  # noqa: E402
from costwarden.storage.retention import ensure_partitions, partitioned, prune  # noqa: E402
from costwarden.storage.rollups import WATERMARK, db_now_ms, set_state  # noqa: E402

console = Console()
NOW = datetime(2026, 8, 20, tzinfo=UTC)
KEEP_DAYS = 40
JUNE = datetime(2026, 6, 1, tzinfo=UTC)
AUGUST = datetime(2026, 8, 1, tzinfo=UTC)
BATCH = 4096


def _record(rng: random.Random, ts: datetime) -> LedgerRecord:
    tokens_in, tokens_out = rng.randrange(10, 8000), rng.randrange(0, 2000)
    org = f"org_{rng.randrange(1000):04d}"
    return LedgerRecord(
        request_id=f"req_{epoch_ms(ts):012x}{rng.getrandbits(48):012x}",
        ts=ts,
        endpoint="chat.completions",
        status="success",
        http_status=200,
        org_id=org,
        project_id=f"{org}_prj",
        key_id=f"{org}_key",
        tags={"team": "ml"} if rng.random() < 0.33 else {},
        provider="openai",
        requested_model="gpt-4o-mini",
        served_model="gpt-4o-mini",
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        cost_usd=Decimal(tokens_in * 150 + tokens_out * 600).scaleb(-9),
        latency_ms=rng.uniform(50, 4000),
        overhead_ms=0.3,
    )


def _records(rows: int, start: datetime, days: int, seed: int) -> Iterator[LedgerRecord]:
    rng = random.Random(seed)
    step = days * 86400 / rows
    for i in range(rows):
        yield _record(rng, start + timedelta(seconds=i * step))


def _write(engine: Engine, records: Iterator[LedgerRecord]) -> None:
    insert = DriverInsert(engine)
    batch: list[list[object]] = []
    with engine.connect() as conn:
        for record in records:
            batch.append(insert.params_of(record))
            if len(batch) == BATCH:
                insert_rows(conn, insert, batch)
                batch = []
        if batch:
            insert_rows(conn, insert, batch)


class _Writer:
    """Inserts a row every 5 ms through the ledger's INSERT; records each insert's ms."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(99)
        insert = DriverInsert(self.engine)
        with self.engine.connect() as conn:
            while not self._stop.is_set():
                row = insert.params_of(_record(rng, AUGUST + timedelta(days=15)))
                started = time.perf_counter()
                insert_rows(conn, insert, [row])
                self.times.append((time.perf_counter() - started) * 1000)
                time.sleep(0.005)

    def __enter__(self) -> _Writer:
        self._thread.start()
        time.sleep(1.0)  # the writer's own figures first: the baseline
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _size_mb(engine: Engine) -> float:
    with engine.connect() as conn:
        if partitioned(conn):
            sql = (
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                "WHERE inhparent = 'ledger'::regclass"
            )
        else:
            sql = "SELECT pg_total_relation_size('ledger')"
        return float(conn.exec_driver_sql(sql).scalar_one()) / 2**20


def _wal(engine: Engine) -> int:
    """The WAL position in bytes (the writer's few rows add a little to every variant)."""
    with engine.connect() as conn:
        sql = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"
        return int(conn.exec_driver_sql(sql).scalar_one())


def _variant(rows: int, unpartitioned: bool, step: Callable[[Engine], object]) -> list[str]:
    with scratch_pg_database() as url:
        engine = create_engine_for(url)
        try:
            migrate(engine)
            if unpartitioned:
                cfg = alembic_config()
                with engine.begin() as conn:
                    cfg.attributes["connection"] = conn
                    command.downgrade(cfg, "0007")
            else:
                ensure_partitions(engine, JUNE)  # June, July and August
            with console.status("writing the ledger"):
                _write(engine, _records(rows, JUNE, 30, 1))
                _write(engine, _records(rows // 10, AUGUST, 19, 2))
            with engine.begin() as conn:
                set_state(conn, WATERMARK, db_now_ms(conn))
                conn.exec_driver_sql("ANALYZE ledger")
            before = _size_mb(engine)
            with _Writer(engine) as writer:
                idle = list(writer.times)
                wal = _wal(engine)
                started = time.perf_counter()
                step(engine)
                took = time.perf_counter() - started
                wal = _wal(engine) - wal
                during = writer.times[len(idle) :]
            return [
                f"{took:.2f} s",
                f"{wal / 2**20:.1f} MB",
                f"{max(idle):.1f}",
                f"{max(during):.1f}" if during else "-",
                f"{before:.0f} -> {_size_mb(engine):.0f} MB",
            ]
        finally:
            engine.dispose()


def _one_delete(engine: Engine) -> None:
    cutoff = datetime(2026, 7, 11, tzinfo=UTC)
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM ledger WHERE ts < %(c)s", {"c": cutoff})


def main(rows: int) -> int:
    def pruned(engine: Engine) -> None:
        result = prune(engine, keep_days=KEEP_DAYS, now=NOW)
        assert result.rows >= rows, result

    table = Table(title=f"pruning {rows:,} June rows (PostgreSQL)")
    for column in (
        "how",
        "seconds",
        "WAL",
        "insert worst before, ms",
        "during, ms",
        "ledger on disk",
    ):
        table.add_column(column)
    table.add_row("prune: partition dropped", *_variant(rows, False, pruned))
    table.add_row("prune: DELETE 10,000 a transaction", *_variant(rows, True, pruned))
    table.add_row("one DELETE", *_variant(rows, True, _one_delete))
    console.print(table)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    sys.exit(main(parser.parse_args().rows))
