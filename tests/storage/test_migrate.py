"""Migrations: idempotent, concurrency-safe, and producing exactly schema.metadata; 0009
(the ledger partitioned by month on PostgreSQL) keeps every row up and down."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from costwarden.core.errors import StorageError
from costwarden.core.records import LedgerRecord
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.migrate import alembic_config, current_revision, head_revision, migrate
from costwarden.storage.partitions import (
    DEFAULT_PARTITION,
    is_partition,
    month_of,
    months_ahead,
    months_between,
)
from costwarden.storage.schema import ROLLUP_MEASURES, ledger, metadata
from tests.storage.conftest import ledger_placement, random_record, timed_record


def _not_a_partition(name: str | None, type_: str, _parents: object) -> bool:
    # The ledger's partitions on PostgreSQL are a DDL detail the metadata does not express
    # (storage/partitions.py); the partitioned parent itself is compared like any table.
    return not (type_ == "table" and name is not None and is_partition(name))


def _diffs(engine: Engine, target: sa.MetaData) -> list[object]:
    with engine.connect() as conn:
        opts = {"compare_type": True, "include_name": _not_a_partition}
        ctx = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(ctx, target))


def test_migrate_twice_is_a_noop(fresh_db_url: str, make_engine: Callable[[str], Engine]) -> None:
    engine = make_engine(fresh_db_url)
    assert current_revision(engine) is None
    migrate(engine)
    assert current_revision(engine) == head_revision()
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO orgs (id, name, created_at) VALUES ('org_x', 'x', :t)"),
            {"t": "2024-01-01 00:00:00"},
        )
    migrate(engine)
    migrate(fresh_db_url)  # by URL too
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM orgs")).scalar() == 1
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert [v[0] for v in versions] == [head_revision()]


def test_migrated_schema_matches_metadata(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    migrate(engine)
    assert _diffs(engine, metadata) == []
    inspector = sa.inspect(engine)
    tables = {t for t in inspector.get_table_names() if not is_partition(t)}
    assert tables == set(metadata.tables) | {"alembic_version"}
    for table in metadata.sorted_tables:
        reflected = {c["name"] for c in inspector.get_columns(table.name)}
        assert reflected == set(table.columns.keys()), table.name
        indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes(table.name)}
        for ix in table.indexes:
            assert tuple(c.name for c in ix.columns) in indexed


def test_comparison_would_catch_a_difference(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    """Guard against a vacuous comparison: an altered metadata must show diffs."""
    engine = make_engine(fresh_db_url)
    migrate(engine)
    altered = sa.MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(altered)
    sa.Table("extra", altered, sa.Column("id", sa.Integer, primary_key=True))
    altered.tables["ledger"].append_column(sa.Column("surprise", sa.Text))
    diffs = _diffs(engine, altered)
    kinds = {d[0] for d in diffs if isinstance(d, tuple)}
    assert {"add_table", "add_column"} <= kinds


def test_concurrent_migrations(fresh_db_url: str, make_engine: Callable[[str], Engine]) -> None:
    """Several processes starting at once: every migrate succeeds, the schema is made once."""
    engines = [make_engine(fresh_db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        barrier.wait()
        try:
            migrate(engine)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert current_revision(engines[0]) == head_revision()
    assert _diffs(engines[0], metadata) == []


def test_unreachable_database_is_storage_error() -> None:
    with pytest.raises(StorageError) as info:
        migrate("postgresql://cw:topsecret@127.0.0.1:1/nope")
    assert "topsecret" not in str(info.value)


# --------------------------------------------------------------------------- 0009


NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
FIRST = datetime(2026, 6, 1, tzinfo=UTC)


def _partitions(engine: Engine) -> list[str]:
    """The ledger's partitions (PostgreSQL; none on SQLite or while unpartitioned)."""
    if engine.dialect.name != "postgresql":
        return []
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('ledger')"
        )
        return sorted(found.scalars())


def _migrate_to(engine: Engine, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)


def _indexes(engine: Engine) -> set[str]:
    return {str(ix["name"]) for ix in sa.inspect(engine).get_indexes("ledger")}


def test_migration_0009_keeps_every_row_up_and_down(
    fresh_db_url: str, backend: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    _migrate_to(engine, "0008")
    rng = random.Random(8)
    span = (NOW - FIRST).total_seconds()
    stamps = [FIRST + timedelta(seconds=rng.uniform(0, span)) for _ in range(60)]
    records = [timed_record(rng, ts) for ts in stamps]
    records.append(dataclasses.replace(random_record(rng, NOW), request_id="legacy-x"))
    # The ledger as 0008 has it: without the columns later migrations add (0015's security,
    # 0016's route_reason and saved_usd, 0019's slice_holder).
    later = ("security", "route_reason", "saved_usd", "slice_holder")
    old_ledger = sa.Table(
        "ledger", sa.MetaData(), *(c._copy() for c in ledger.columns if c.name not in later)
    )

    def old_row(record: LedgerRecord) -> dict[str, Any]:
        return {k: v for k, v in record_to_row(record).items() if k not in later}

    with engine.begin() as conn:
        conn.execute(old_ledger.insert(), [{**old_row(r), "written_ms": 77} for r in records])
        # and a row from before written_ms existed
        conn.execute(old_ledger.insert(), old_row(timed_record(rng, FIRST + timedelta(hours=5))))

    def contents() -> list[tuple[Any, ...]]:
        with engine.connect() as conn:
            query = sa.select(old_ledger).order_by(old_ledger.c.request_id)
            return list(conn.execute(query).all())

    before = contents()
    assert len(before) == 62 and "ix_ledger_org_id" in _indexes(engine)
    _migrate_to(engine, "0009")
    assert contents() == before
    assert "ix_ledger_org_id_ts" in _indexes(engine) and "ix_ledger_org_id" not in _indexes(engine)
    if backend == "postgresql":
        names = _partitions(engine)
        # Every month from the oldest row's to the newest's, and the months ahead.
        spanned = months_between(min(r.ts for r in records), max(r.ts for r in records))
        ahead = months_ahead(datetime.now(UTC))
        assert set(names) == {DEFAULT_PARTITION, *(m.name for m in [*spanned, *ahead])}
        placed = ledger_placement(engine)
        assert all(placed[r.request_id] == month_of(r.ts).name for r in records[:-1])
        assert placed["legacy-x"] == DEFAULT_PARTITION
    _migrate_to(engine, "0008", down=True)
    assert contents() == before
    assert "ix_ledger_org_id" in _indexes(engine) and "ix_ledger_org_id_ts" not in _indexes(engine)
    assert _partitions(engine) == []
    with engine.connect() as conn:
        if backend == "postgresql":
            leftovers = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'ledger\\_%%' AND relkind = 'r'"
            ).scalar_one()
            assert leftovers == 0  # no partition left behind as a table
    _migrate_to(engine, "head")
    assert contents() == before


def test_migration_0011_ranks_the_daily_slices_already_there(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    _migrate_to(engine, "0010")
    costs = ["0.000000000001", "12.5", "3"]
    later = ("cost_usd", "cache_savings_usd", "saved_usd")  # money, and 0016's
    columns = [c for c in ROLLUP_MEASURES if c not in later]
    with engine.begin() as conn:
        for i, cost in enumerate(costs):
            conn.execute(
                sa.text(
                    "INSERT INTO rollup_slices_daily (day, slice, org_id, value, cost_usd, "
                    f"cache_savings_usd, {', '.join(columns)}) VALUES ('2026-11-01', 'org', "
                    f":org, '', :cost, 0, {', '.join('1' for _ in columns)})"
                ),
                {"org": f"org_{i}", "cost": cost},
            )
    _migrate_to(engine, "head")

    def ranked() -> list[tuple[str, float]]:
        with engine.connect() as conn:
            return [
                (org, rank)
                for org, rank in conn.exec_driver_sql(
                    "SELECT org_id, cost_rank FROM rollup_slices_daily ORDER BY cost_rank DESC"
                )
            ]

    assert ranked() == [("org_1", 12.5), ("org_2", 3.0), ("org_0", 1e-12)]
    _migrate_to(engine, "0010", down=True)
    with engine.connect() as conn:
        names = {c["name"] for c in sa.inspect(conn).get_columns("rollup_slices_daily")}
    assert "cost_rank" not in names
    _migrate_to(engine, "head")
    assert [org for org, _ in ranked()] == ["org_1", "org_2", "org_0"]


# --------------------------------------------------------------------------- 0016

_ROLLUPS = (
    "rollup_hourly", "rollup_daily", "rollup_tags_hourly", "rollup_tags_daily",
    "rollup_slices_hourly", "rollup_slices_daily",
)  # fmt: skip


def _files(engine: Engine, names: list[str]) -> dict[str, int]:
    """Each table's file on PostgreSQL: a table rewritten gets a new one."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT relname, relfilenode FROM pg_class WHERE relname = ANY(%(n)s)", {"n": names}
        )
        return {str(name): int(node) for name, node in rows}


def _columns(engine: Engine, table: str) -> dict[str, dict[str, Any]]:
    return {str(c["name"]): dict(c) for c in sa.inspect(engine).get_columns(table)}


def test_migration_0016_adds_route_reason_and_saved_usd_to_rows_already_there(
    fresh_db_url: str, backend: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(fresh_db_url)
    _migrate_to(engine, "0015")
    rng = random.Random(16)
    records = [timed_record(rng, NOW - timedelta(days=40 * i)) for i in range(3)]
    later = ("route_reason", "saved_usd", "slice_holder")  # (and 0019's)
    old_ledger = sa.Table(
        "ledger", sa.MetaData(), *(c._copy() for c in ledger.columns if c.name not in later)
    )
    rows = [{k: v for k, v in record_to_row(r).items() if k not in later} for r in records]
    measures = [m for m in ROLLUP_MEASURES if m not in later]
    with engine.begin() as conn:
        conn.execute(old_ledger.insert(), rows)
        conn.execute(
            sa.text(
                f"INSERT INTO rollup_daily (day, org_id, project_id, key_id, end_user, provider, "
                f"model, status, {', '.join(measures)}) VALUES ('2026-11-01', 'o', '', '', '', "
                f"'', '', 'success', {', '.join('2' for _ in measures)})"
            )
        )
    partitions = _partitions(engine)
    before = _files(engine, [*partitions, *_ROLLUPS]) if backend == "postgresql" else {}
    _migrate_to(engine, "0016")
    if backend == "postgresql":
        # A constant default: no partition of the ledger and no rollup table was rewritten,
        # and the columns reached every partition.
        assert len(partitions) > 3 and _files(engine, [*partitions, *_ROLLUPS]) == before
        for name in partitions:
            assert {"route_reason", "saved_usd"} <= set(_columns(engine, name)), name
    with engine.connect() as conn:
        read = conn.execute(
            sa.select(ledger.c.request_id, ledger.c.route_reason, ledger.c.saved_usd)
        ).all()
        rolled = conn.execute(sa.text("SELECT saved_usd FROM rollup_daily")).scalar_one()
    assert sorted(read) == sorted((r.request_id, None, Decimal(0)) for r in records)
    assert all(type(saved) is Decimal for _, _, saved in read)
    assert Decimal(rolled) == 0
    for table in ("ledger", *_ROLLUPS):
        saved = _columns(engine, table)["saved_usd"]
        assert saved["nullable"] is False and saved["default"] is not None, table
    # New rows: the columns written and read back, exact.
    new = dataclasses.replace(
        timed_record(rng, NOW), status="cached", cost_usd=Decimal(0),
        saved_usd=Decimal("123.000000000001"), route_reason="weighted: openai:gpt-4o-mini",
    )  # fmt: skip
    with engine.begin() as conn:
        row = {k: v for k, v in record_to_row(new).items() if k != "slice_holder"}  # (0019's)
        conn.execute(ledger.insert(), row)
    with engine.connect() as conn:
        got = conn.execute(
            sa.select(ledger.c.route_reason, ledger.c.saved_usd).where(
                ledger.c.request_id == new.request_id
            )
        ).one()
    assert tuple(got) == ("weighted: openai:gpt-4o-mini", Decimal("123.000000000001"))
    _migrate_to(engine, "0015", down=True)
    assert not set(later) & set(_columns(engine, "ledger"))
    for table in _ROLLUPS:
        assert "saved_usd" not in _columns(engine, table), table
    with engine.connect() as conn:
        kept = conn.execute(sa.select(old_ledger.c.request_id)).scalars().all()
        assert conn.execute(sa.text("SELECT count(*) FROM rollup_daily")).scalar_one() == 1
    assert sorted(kept) == sorted([*(r.request_id for r in records), new.request_id])
    if backend == "sqlite":  # the tables remade, with their indexes
        assert "ix_ledger_org_id_ts" in _indexes(engine)
        slices = {ix["name"] for ix in sa.inspect(engine).get_indexes("rollup_slices_daily")}
        assert "ix_rollup_slices_daily_day_slice_cost_rank" in slices
    _migrate_to(engine, "head")
    assert _diffs(engine, metadata) == []


def test_migration_0019_adds_slice_holder_to_the_ledger(
    fresh_db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    """A nullable column: rows already there read NULL, new rows keep what they carry, and
    the way down drops it and keeps every row."""
    engine = make_engine(fresh_db_url)
    _migrate_to(engine, "0018")
    rng = random.Random(19)
    old = timed_record(rng, NOW)
    with engine.begin() as conn:
        conn.execute(ledger.insert(), {k: v for k, v in record_to_row(old).items()
                                       if k != "slice_holder"})  # fmt: skip
    _migrate_to(engine, "0019")
    assert _columns(engine, "ledger")["slice_holder"]["nullable"] is True
    new = dataclasses.replace(timed_record(rng, NOW), slice_holder="S:123-abc")
    with engine.begin() as conn:
        conn.execute(ledger.insert(), record_to_row(new))
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(ledger.c.request_id, ledger.c.slice_holder)).all())
    assert got == {old.request_id: None, new.request_id: "S:123-abc"}
    _migrate_to(engine, "0018", down=True)
    assert "slice_holder" not in _columns(engine, "ledger")
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT request_id FROM ledger")).scalars().all()
    assert sorted(kept) == sorted([old.request_id, new.request_id])
