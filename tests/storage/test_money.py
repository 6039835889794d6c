"""Money and timestamps: exact and UTC on both backends, never a float in between."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError

from costwarden.core.errors import InvalidInput
from costwarden.core.records import LedgerRecord
from costwarden.storage.db import money_sum
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.schema import ledger, orgs
from costwarden.storage.sqltypes import money_str, to_money

AMOUNTS = [
    Decimal("0.000000037500"),
    Decimal("0.0000000375"),
    Decimal("0.1"),
    Decimal("0"),
    Decimal("-0.000000000001"),
    Decimal("123.456789012345"),
    Decimal("999999999999.999999999999"),
]


def test_to_money() -> None:
    assert to_money(Decimal("0.0000000375")) == Decimal("0.000000037500")
    assert to_money("1.5") == Decimal("1.5")
    assert to_money(3) == Decimal(3)
    assert to_money(Decimal("0.0000000000005")) == Decimal("0.000000000001")  # half up
    for bad in (0.1, float("nan"), Decimal("NaN"), Decimal("Infinity"), "abc", True, None):
        with pytest.raises(InvalidInput):
            to_money(bad)
    for huge in (Decimal("1000000000000"), Decimal("1E+68"), "9" * 80, Decimal("-1E+300")):
        with pytest.raises(InvalidInput, match="out of range"):  # never InvalidOperation
            to_money(huge)
    with pytest.raises(InvalidInput, match="out of range"):  # rounded up to the limit
        to_money(Decimal("999999999999.9999999999999"))


def test_money_str() -> None:
    assert money_str(Decimal("0.000000037500")) == "0.0000000375"
    assert money_str(Decimal("0E-12")) == "0"
    assert money_str(Decimal("100.000000000000")) == "100"
    assert money_str(Decimal("1E+3")) == "1000"
    assert money_str(Decimal("-2.50")) == "-2.5"


def _insert(engine: Engine, rows: list[dict[str, object]]) -> None:
    with engine.begin() as conn:
        conn.execute(ledger.insert(), rows)


def test_money_round_trips_exactly(
    engine: Engine, make_record: Callable[..., LedgerRecord]
) -> None:
    rows = []
    for i, amount in enumerate(AMOUNTS):
        if amount < 0:  # the ledger's writer refuses a negative cost; the column keeps one
            with pytest.raises(InvalidInput, match="must not be negative"):
                record_to_row(make_record(cost_usd=amount))
            rows.append({**record_to_row(make_record(request_id=f"r{i}")), "cost_usd": amount})
        else:
            rows.append(record_to_row(make_record(request_id=f"r{i}", cost_usd=amount)))
    _insert(engine, rows)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(ledger.c.request_id, ledger.c.cost_usd)).all())
    for i, amount in enumerate(AMOUNTS):
        value = got[f"r{i}"]
        assert isinstance(value, Decimal)
        assert value == amount
        assert value.as_tuple().exponent == -12  # same representation on both backends
    assert got["r0"] == Decimal("0.000000037500") and format(got["r0"], "f") == "0.000000037500"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sqlite_stores_money_as_text(
    engine: Engine, make_record: Callable[..., LedgerRecord]
) -> None:
    _insert(engine, [record_to_row(make_record(request_id="r", cost_usd=Decimal("0.0000000375")))])
    with engine.connect() as conn:
        kind, raw = conn.exec_driver_sql("SELECT typeof(cost_usd), cost_usd FROM ledger").one()
    assert (kind, raw) == ("text", "0.000000037500")


def test_many_small_values_sum_exactly(
    engine: Engine, make_record: Callable[..., LedgerRecord]
) -> None:
    rng = random.Random(42)
    costs = [Decimal(rng.randint(1, 10**7)).scaleb(-12) for _ in range(5000)]
    costs += [Decimal("0.000000037500")] * 1000 + [Decimal("0.1")] * 10
    _insert(engine, [record_to_row(make_record(cost_usd=c)) for c in costs])
    with engine.connect() as conn:
        total = conn.execute(sa.select(money_sum(ledger.c.cost_usd))).scalar_one()
    exact = sum(costs, Decimal(0))
    assert total == exact
    assert float(total) == float(exact)  # and, obviously, the float of it too
    assert sum(float(c) for c in costs) != exact  # what floats would have given


def test_float_money_is_refused_by_the_column(
    engine: Engine, make_record: Callable[..., LedgerRecord]
) -> None:
    row = record_to_row(make_record())
    row["cost_usd"] = 0.5
    with pytest.raises(StatementError, match="Decimal"):
        _insert(engine, [row])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger)).scalar_one() == 0


def test_timestamps_are_utc_aware(engine: Engine) -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2024, 3, 1, 1, 30, 15, 123456, tzinfo=plus_two)
    with engine.begin() as conn:
        conn.execute(orgs.insert(), {"id": "o1", "name": "a", "created_at": moment})
    with engine.connect() as conn:
        got = conn.execute(sa.select(orgs.c.created_at)).scalar_one()
        later = conn.execute(
            sa.select(sa.func.count()).where(
                orgs.c.created_at >= moment - timedelta(microseconds=1)
            )
        ).scalar_one()
        earlier = conn.execute(
            sa.select(sa.func.count()).where(orgs.c.created_at > moment)
        ).scalar_one()
    assert got == moment and got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert got.hour == 23 and got.day == 29  # 2024-02-29 23:30:15.123456Z
    assert (later, earlier) == (1, 0)


def test_naive_timestamps_are_refused(engine: Engine) -> None:
    with pytest.raises(StatementError), engine.begin() as conn:
        conn.execute(orgs.insert(), {"id": "o", "name": "n", "created_at": datetime(2024, 1, 1)})


def test_ledger_nanos_is_usd_to_nanos_of_the_stored_amount() -> None:
    """core.money.ledger_nanos(x) == usd_to_nanos(to_money(x)): the nano-dollars the ledger's
    row of ``x`` sums to (nanos_sum), for amounts with more places than the ledger keeps too."""
    from costwarden.core.money import ledger_nanos, usd_to_nanos

    table = [
        (Decimal("0.000000123"), 123),
        (Decimal("0.0000001231"), 124),  # up to whole nano-dollars
        (Decimal("0.0000000000005"), 1),  # 12 places, half up: 1e-12, then up to 1 nano
        (Decimal("0.0000000000004999"), 0),  # 12 places: 0, so no nano at all
        (Decimal("0.0000010000004"), 1000),  # 12 places: 0.000001000000
        (Decimal("0.0000010000005"), 1001),  # 12 places: 0.000001000001
        (Decimal(0), 0),
        (Decimal("1.5"), 1_500_000_000),
        (Decimal("-0.0000000015"), -1),  # ceiling, as usd_to_nanos
    ]
    for amount, nanos in table:
        assert ledger_nanos(amount) == nanos == usd_to_nanos(to_money(amount)), amount
    rng = random.Random(7)
    for _ in range(2000):
        amount = Decimal(rng.randrange(0, 10**18)).scaleb(-rng.randrange(7, 25))
        assert ledger_nanos(amount) == usd_to_nanos(to_money(amount)), amount
    for amount in AMOUNTS:
        assert ledger_nanos(amount) == usd_to_nanos(to_money(amount))
