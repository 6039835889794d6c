"""The ledger's month partitions and the retention cutoff as data (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from costwarden.storage.partitions import (
    Month,
    epoch_ms,
    id_bound,
    is_partition,
    month_named,
    months_ahead,
    months_between,
    prune_cutoff,
    wholly_before,
)


def _at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def _request_id(at: datetime, tail: int = 0) -> str:
    # What gateway.proxy.new_request_id makes at ``at``.
    return f"req_{epoch_ms(at):012x}{tail:012x}"


@pytest.mark.parametrize(
    ("month", "name", "start", "end"),
    [
        (Month(2026, 11), "ledger_p202611", _at(2026, 11, 1), _at(2026, 12, 1)),
        (Month(2026, 12), "ledger_p202612", _at(2026, 12, 1), _at(2027, 1, 1)),
        (Month(2024, 2), "ledger_p202402", _at(2024, 2, 1), _at(2024, 3, 1)),
    ],
)
def test_a_month_names_its_partition_and_bounds(
    month: Month, name: str, start: datetime, end: datetime
) -> None:
    assert (month.name, month.start, month.end) == (name, start, end)
    assert month.lower == f"req_{int(start.timestamp() * 1000):012x}"
    assert month.upper == f"req_{int(end.timestamp() * 1000):012x}"
    assert month_named(name) == month
    assert month.create_sql() == (
        f"CREATE TABLE {name} PARTITION OF ledger "
        f"FOR VALUES FROM ('{month.lower}') TO ('{month.upper}')"
    )


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (_at(2026, 11, 1), True),  # the first millisecond
        (_at(2026, 11, 30, 23, 59, 59, 999_000), True),  # the last
        (_at(2026, 12, 1), False),  # the next month's first
        (_at(2026, 10, 31, 23, 59, 59, 999_000), False),  # the month before's last
    ],
)
def test_request_ids_fall_in_their_month_as_strings(at: datetime, inside: bool) -> None:
    month = Month(2026, 11)
    for tail in (0, 2**48 - 1):  # the random part never moves an id out of its month
        rid = _request_id(at, tail)
        assert (month.lower <= rid < month.upper) is inside


def test_bounds_are_exact_milliseconds() -> None:
    at = _at(2026, 11, 21, 12, 0, 0, 123_999)
    assert epoch_ms(at) == 1_795_262_400_123
    assert id_bound(at) == "req_" + format(1_795_262_400_123, "012x")
    # Another timezone's clock, the same instant: the same bound.
    assert id_bound(at.astimezone(ZoneInfo("Asia/Tokyo"))) == id_bound(at)


def test_months_between_and_ahead() -> None:
    assert months_between(_at(2026, 11, 30), _at(2027, 2, 1)) == [
        Month(2026, 11), Month(2026, 12), Month(2027, 1), Month(2027, 2),
    ]  # fmt: skip
    assert months_between(_at(2026, 11, 3), _at(2026, 11, 29)) == [Month(2026, 11)]
    assert months_ahead(_at(2026, 12, 31, 23)) == [Month(2026, 12), Month(2027, 1), Month(2027, 2)]


@pytest.mark.parametrize(
    ("name", "partition"),
    [
        ("ledger_p202611", True),
        ("ledger_default", True),
        ("ledger_p202613", False),  # no 13th month
        ("ledger_p2026111", False),
        ("ledger", False),
        ("ledger_0007", False),
        ("rollup_hourly", False),
    ],
)
def test_which_names_are_partitions(name: str, partition: bool) -> None:
    assert is_partition(name) is partition


def test_only_months_wholly_before_the_cutoff_are_due() -> None:
    names = ["ledger_default", "ledger_p202612", "ledger_p202609", "ledger_p202610",
             "ledger_p202611"]  # fmt: skip
    # Nov 15: October and before are wholly past; November is partly after: it stays.
    assert wholly_before(names, _at(2026, 11, 15)) == [Month(2026, 9), Month(2026, 10)]
    # A cutoff on a month's first day: that month is not past yet, the one before is.
    assert wholly_before(names, _at(2026, 11, 1)) == [Month(2026, 9), Month(2026, 10)]
    assert wholly_before(names, _at(2026, 10, 31, 23)) == [Month(2026, 9)]
    assert wholly_before(names, _at(2026, 9, 1)) == []


NOW = _at(2026, 11, 21, 15, 30)


@pytest.mark.parametrize(
    ("keep_days", "rolled_up", "cutoff"),
    [
        (0, NOW, None),  # retention off
        (40, None, None),  # nothing rolled up yet: nothing may go
        (40, NOW, _at(2026, 10, 12)),  # 40 days back, floored to the day
        (40, NOW - timedelta(days=50, hours=3), _at(2026, 10, 2)),  # the watermark is older
        (32, _at(2026, 10, 20, 0, 0), _at(2026, 10, 20)),  # on a day boundary: that day
    ],
)
def test_the_cutoff_is_the_older_of_retention_and_watermark_floored_to_a_day(
    keep_days: int, rolled_up: datetime | None, cutoff: datetime | None
) -> None:
    ms = None if rolled_up is None else epoch_ms(rolled_up)
    assert prune_cutoff(NOW, keep_days, ms) == cutoff
