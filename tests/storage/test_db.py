"""Engine configuration: URLs, SQLite pragmas, exact money sums on both dialects."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput
from costwarden.core.records import LedgerRecord
from costwarden.storage.db import (
    DecimalSum,
    create_engine_for,
    money_sum,
    normalize_url,
    redact_url,
)
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.schema import ledger


def test_postgres_urls_map_to_psycopg() -> None:
    for url in ("postgres://u:p@h:5/db", "postgresql://u:p@h:5/db", "postgresql+psycopg://u@h/db"):
        assert normalize_url(url).drivername == "postgresql+psycopg"


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "sqlite://", "sqlite:///:memory:", "postgresql+psycopg2://h/db"]
)
def test_unsupported_urls_are_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput):
        normalize_url(url)


def test_sqlite_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "cw.db"
    engine = create_engine_for(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert path.exists()
    finally:
        engine.dispose()


def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = create_engine_for("sqlite:///data/dir/cw.db")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        assert (tmp_path / "data" / "dir" / "cw.db").exists()
    finally:
        engine.dispose()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        with engine.connect() as conn:

            def pragma(name: str) -> object:
                return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 1  # NORMAL
            assert pragma("busy_timeout") == 10000
            assert pragma("foreign_keys") == 1
    finally:
        engine.dispose()


def test_redact_url_hides_passwords() -> None:
    redacted = redact_url("postgresql://alice:s3cr3t@db.example:5432/cw")
    assert "s3cr3t" not in redacted
    assert "alice" in redacted and "db.example" in redacted
    assert "hunter2" not in redact_url("postgresql://db/cw?password=hunter2&sslmode=require")
    assert "pw" not in redact_url("not a url://user:pw@host/x")


def test_decimal_sum_aggregate_unit() -> None:
    agg = DecimalSum()
    assert agg.finalize() is None
    for value in ("0.000000037500", None, "1", 2, "-0.5"):
        agg.step(value)
    assert agg.finalize() == "2.500000037500"
    with pytest.raises(ValueError):
        DecimalSum().step(0.1)


def test_dsum_in_sqlite_is_exact(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (v TEXT)")
            conn.execute(sa.text("INSERT INTO t VALUES (:v)"), [{"v": "0.1"}] * 10)
            assert conn.exec_driver_sql("SELECT dsum(v) FROM t").scalar() == "1.0"
            # the float sum would not be exact
            assert conn.exec_driver_sql("SELECT sum(v) FROM t").scalar() != 1.0
            assert conn.exec_driver_sql("SELECT dsum(v) FROM t WHERE 0").scalar() is None
    finally:
        engine.dispose()


def test_money_sum_per_dialect(engine: Engine) -> None:
    compiled = str(sa.select(money_sum(ledger.c.cost_usd)).compile(dialect=engine.dialect))
    expected = "dsum(" if engine.dialect.name == "sqlite" else "sum("
    assert expected in compiled
    with engine.connect() as conn:
        empty = conn.execute(sa.select(money_sum(ledger.c.cost_usd))).scalar()
    assert empty is None


def test_money_sum_exact_on_both(engine: Engine, make_record: Callable[..., LedgerRecord]) -> None:
    costs = [Decimal("0.000000037500") * (i % 7 + 1) + Decimal("0.1") for i in range(3000)]
    rows = [record_to_row(make_record(cost_usd=c)) for c in costs]
    with engine.begin() as conn:
        conn.execute(ledger.insert(), rows)
    with engine.connect() as conn:
        total = conn.execute(sa.select(money_sum(ledger.c.cost_usd))).scalar()
    assert isinstance(total, Decimal)
    assert total == sum(costs, Decimal(0))
