"""cost_nanos: a record's cost as the ledger stores it, in nano-dollars, computed once per
cost and recomputed when the cost changes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from costwarden.core.money import ledger_nanos, usd_to_nanos
from costwarden.core.records import LedgerRecord, cost_nanos


def _record(cost: str) -> LedgerRecord:
    return LedgerRecord(
        request_id="req_1",
        ts=datetime(2027, 1, 1, tzinfo=UTC),
        endpoint="chat.completions",
        status="success",
        http_status=200,
        cost_usd=Decimal(cost),
    )


@pytest.mark.parametrize(
    ("cost", "nanos"),
    [
        ("0", 0),
        ("0.000021300000", 21_300),
        ("0.0000000010000004", 1),  # 12 places first (as stored), then up: 1, not 2
        ("0.000000001001", 2),
        ("12.5", 12_500_000_000),
    ],
)
def test_cost_nanos_is_the_ledger_s(cost: str, nanos: int) -> None:
    record = _record(cost)
    assert cost_nanos(record) == nanos == ledger_nanos(Decimal(cost))
    # never below what the ledger stores (12 places), however it was rounded
    assert nanos >= usd_to_nanos(Decimal(cost).quantize(Decimal("1E-12")))


def test_computed_once_per_cost() -> None:
    record = _record("0.5")
    assert cost_nanos(record) == 500_000_000
    assert record.nanos_cache == (record.cost_usd, 500_000_000)
    record.cost_usd = Decimal("0.25")  # billed again: the cache no longer applies
    assert cost_nanos(record) == 250_000_000
    assert record == _record("0.25")  # the cache takes no part in equality
