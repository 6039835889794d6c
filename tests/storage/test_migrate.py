"""Migrations: idempotent, concurrency-safe, and producing exactly schema.metadata."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from costwarden.core.errors import StorageError
from costwarden.storage.migrate import current_revision, head_revision, migrate
from costwarden.storage.schema import metadata


def _diffs(engine: Engine, target: sa.MetaData) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
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
    assert set(inspector.get_table_names()) == set(metadata.tables) | {"alembic_version"}
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
