"""A record's row parameters: the one-pass conversion equals the field-by-field checked one.

``DriverInsert.params_of`` recognises the usual record with a few checks over all its fields
and builds its parameters in one pass; anything else goes through ``record_to_row``. Whatever
the record, both must give the same parameters or refuse it the same way, on SQLite and on
PostgreSQL (whose driver parameters differ).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from costwarden.core.errors import InvalidInput
from costwarden.core.records import LEDGER_STATUSES, LedgerRecord
from costwarden.storage.ledger_rows import DriverInsert, record_to_row

_TEXT = st.one_of(
    st.none(),
    st.sampled_from(["", "openai", "gpt-4o-mini", "org_1", "a\x00b", "caf\u00e9", "\ud800"]),
    st.text(max_size=8),
    st.integers(0, 2),  # not text at all
)
_INT = st.one_of(
    st.integers(0, 10_000),
    st.sampled_from([-1, 2**63 - 1, 2**63, True, 999, 1000]),
    st.floats(0, 10).map(float),
)
_FLOAT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, 100),
    st.just(True),
)
_OVERRIDES = st.fixed_dictionaries(
    {},
    optional={
        "request_id": _TEXT,
        "endpoint": _TEXT,
        "org_id": _TEXT,
        "key_id": _TEXT,
        "end_user": _TEXT,
        "error": _TEXT,
        "provider": _TEXT,
        "status": st.sampled_from([*sorted(LEDGER_STATUSES), "weird"]),
        "http_status": _INT,
        "input_tokens": _INT,
        "reasoning_tokens": _INT,
        "cost_usd": st.one_of(
            st.decimals(allow_nan=True, allow_infinity=True),
            st.sampled_from([Decimal("1E+12"), Decimal("-1E+12"), Decimal("0.1234567890125")]),
            st.integers(0, 5),
            st.just(0.5),
        ),
        "ts": st.one_of(
            st.datetimes(timezones=st.just(UTC)),
            st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))),
            st.datetimes(),  # naive
        ),
        "tags": st.one_of(
            st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
            st.just({1: "x"}),
            st.just({"k": object()}),
            st.just([("k", "v")]),
        ),
        # At most 500 characters are written: a longer reason is cut, never refused.
        "route_reason": st.one_of(
            _TEXT,
            st.sampled_from(["a" * 500, "a" * 501, "\u00e9" * 600, "x" * 499 + "\x00\ud800"]),
        ),
        "saved_usd": st.one_of(
            st.decimals(min_value=-10, max_value=10**6, places=13),
            st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("1E+12")]),
            st.sampled_from([Decimal("-0.000000000001"), Decimal("0.0000000000005")]),
            st.integers(0, 5),
            st.just(0.5),
        ),
        "latency_ms": _FLOAT,
        "ttft_ms": st.one_of(st.none(), _FLOAT),
        "streamed": st.sampled_from([True, False, 1, "", None]),
    },
)


def _checked(insert: DriverInsert, record: LedgerRecord) -> list[Any] | str:
    try:
        return insert.params(record_to_row(record))
    except InvalidInput as exc:
        return f"refused: {exc}"


def _one_pass(insert: DriverInsert, record: LedgerRecord) -> list[Any] | str:
    try:
        return insert.params_of(record)
    except InvalidInput as exc:
        return f"refused: {exc}"


@pytest.fixture
def insert(db_url: str, make_engine: Callable[[str], Engine]) -> DriverInsert:
    return DriverInsert(make_engine(db_url))


# The fixtures are read-only here: one insert and one record factory serve every example.
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(overrides=_OVERRIDES)
def test_one_pass_equals_the_checked_conversion(
    insert: DriverInsert, make_record: Callable[..., LedgerRecord], overrides: dict[str, Any]
) -> None:
    record = make_record(**overrides)
    expected = _checked(insert, record)
    assert _one_pass(insert, record) == expected
    # The checked path may have been taken: the usual record must take the one pass.
    usual = dataclasses.replace(make_record(), tags={"team": "ml"}, ttft_ms=1.5)
    assert _one_pass(insert, usual) == _checked(insert, usual) != []


def test_the_usual_record_is_converted_without_the_checked_path(
    insert: DriverInsert, make_record: Callable[..., LedgerRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    usual = make_record(tags={"b": "2", "a": "1"}, ts=datetime(2030, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    expected = _checked(insert, usual)
    import costwarden.storage.ledger_rows as rows

    def refuse(record: LedgerRecord) -> dict[str, Any]:
        raise AssertionError("the checked path ran for a usual record")

    monkeypatch.setattr(rows, "record_to_row", refuse)
    assert insert.params_of(usual) == expected
    assert '{"a":"1","b":"2"}' in expected and "2030-01-02" in expected
    cached = make_record(
        status="cached", cost_usd=Decimal(0), saved_usd=Decimal("0.0012"),
        route_reason="cheapest: openai:gpt-4o-mini (skipped openai:gpt-4o: breaker open)",
    )  # fmt: skip
    assert insert.params_of(cached) == _checked(insert, cached)


def test_a_long_route_reason_is_cut_to_500_characters_and_a_saving_is_exact() -> None:
    record = LedgerRecord(
        request_id="req_1", ts=datetime(2026, 12, 2, tzinfo=UTC), endpoint="chat.completions",
        status="cached", http_status=200, route_reason="r" * 499 + "\u00e9" * 20,
        saved_usd=Decimal("0.000000001"),
    )  # fmt: skip
    row = record_to_row(record)
    assert row["route_reason"] == "r" * 499 + "\u00e9" and len(row["route_reason"]) == 500
    assert row["saved_usd"] == Decimal("0.000000001") and type(row["saved_usd"]) is Decimal
    for bad in (Decimal("-0.01"), 0.5, Decimal("NaN")):
        with pytest.raises(InvalidInput):
            record_to_row(dataclasses.replace(record, saved_usd=bad))  # type: ignore[arg-type]
