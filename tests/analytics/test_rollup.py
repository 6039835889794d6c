"""Rollups as data: buckets, exact sums, tags, drift (table tests, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from costwarden.analytics.rollup import (
    Drift,
    Totals,
    day_of,
    drifts,
    hour_of,
    hours_of_day,
    micros,
    row_totals,
    tag_rollup,
    tags_of,
)


def _row(**fields: Any) -> dict[str, Any]:
    row = {
        "org_id": "o1", "tags": "{}", "input_tokens": 10, "cached_input_tokens": 2,
        "cache_write_tokens": 1, "output_tokens": 5, "reasoning_tokens": 0,
        "cost_usd": "0.000000000001", "saved_usd": "0", "latency_ms": 12.3456,
        "ttft_ms": None,
    }  # fmt: skip
    row.update(fields)
    return row


def test_sums_are_exact_in_any_order() -> None:
    rows = [_row(cost_usd=str(Decimal("0.1") / 3 * i), latency_ms=0.1 * i) for i in range(50)]
    forward, backward = Totals(), Totals()
    for row in rows:
        forward.add(row_totals(row))
    for row in reversed(rows):
        backward.add(row_totals(row))
    assert forward == backward
    assert forward.cost_usd == sum(Decimal(r["cost_usd"]) for r in rows)
    assert forward.requests == 50 and forward.input_tokens == 500
    assert forward.latency_us == sum(round(0.1 * i * 1000) for i in range(50))


def test_response_cache_savings_sum_exactly_apart_from_prompt_cache_savings() -> None:
    saved = ["0.000000001", "1.1", "2.25"]
    rows = [_row(status="cached", cost_usd="0", saved_usd=s) for s in saved] + [_row()]
    totals = Totals()
    for row in rows:
        totals.add(row_totals(row))
    assert totals.saved_usd == Decimal("3.350000001") and totals.cost_usd == Decimal("1E-12")
    assert totals.cache_savings_usd == 0  # the provider's prompt caching: another figure
    assert Totals.of(totals.as_dict()) == totals
    (tagged,) = tag_rollup([_row(tags='{"team":"ml"}', saved_usd=s) for s in saved]).values()
    assert tagged.saved_usd == Decimal("3.350000001")


@pytest.mark.parametrize(
    ("ms", "us"), [(None, 0), (0.0, 0), (12.3456, 12346), (0.0004, 0), (1.5, 1500)]
)
def test_micros(ms: float | None, us: int) -> None:
    assert micros(ms) == us


def test_ttft_counts_only_rows_that_had_one() -> None:
    totals = Totals()
    totals.add(row_totals(_row(ttft_ms=3.0)))
    totals.add(row_totals(_row(ttft_ms=None)))
    assert (totals.ttft_us, totals.ttft_count, totals.requests) == (3000, 1, 2)


def test_buckets() -> None:
    ts = datetime(2026, 3, 4, 23, 59, 59, 999999, tzinfo=UTC)
    assert hour_of(ts) == datetime(2026, 3, 4, 23, tzinfo=UTC) and day_of(ts) == "2026-03-04"
    day = hours_of_day("2026-03-04")
    assert len(day) == 24 and day[0] == datetime(2026, 3, 4, tzinfo=UTC)


def test_tags() -> None:
    assert tags_of("{}") == [] and tags_of(None) == []
    assert tags_of('{"team":"ml","env":"prod"}') == ["env=prod", "team=ml"]
    rows = [
        _row(tags='{"team":"ml"}', cost_usd="1"),
        _row(tags='{"team":"ml","env":"prod"}', cost_usd="2"),
        _row(org_id="o2", tags='{"team":"ml"}', cost_usd="4"),
        _row(cost_usd="8"),  # no tag: in no tag rollup
    ]
    got = {k: (t.requests, t.cost_usd) for k, t in tag_rollup(rows).items()}
    assert got == {
        ("o1", "team=ml"): (2, Decimal(3)),
        ("o1", "env=prod"): (1, Decimal(2)),
        ("o2", "team=ml"): (1, Decimal(4)),
    }


def test_drifts() -> None:
    a = Totals(requests=3, cost_usd=Decimal("1.5"))
    same = Totals(requests=3, cost_usd=Decimal("1.500"))
    assert drifts("d", {"o1": a}, {"o1": same}) == []
    short = Totals(requests=2, cost_usd=Decimal("1.0"))
    assert drifts("d", {"o1": a}, {"o1": short}) == [
        Drift("d", "o1", "requests", "3", "2"),
        Drift("d", "o1", "cost_usd", "1.5", "1.0"),
    ]
    assert drifts("d", {"o1": a}, {}) == [
        Drift("d", "o1", "requests", "3", "0"),
        Drift("d", "o1", "cost_usd", "1.5", "0"),
    ]


def test_a_saving_that_differs_drifts() -> None:
    a = Totals(requests=1, saved_usd=Decimal("0.25"))
    assert drifts("d", {"o1": a}, {"o1": Totals(requests=1)}) == [
        Drift("d", "o1", "saved_usd", "0.25", "0")
    ]


def test_a_latency_histogram_that_misses_requests_drifts() -> None:
    a = Totals(requests=3, cost_usd=Decimal("1.5"))
    assert drifts("d", {"o1": a}, {"o1": a}, latency={"o1": 3}) == []
    assert drifts("d", {"o1": a}, {"o1": a}, latency={"o1": 2, "o2": 1}) == [
        Drift("d", "o1", "latency_requests", "3", "2"),
        Drift("d", "o2", "latency_requests", "0", "1"),
    ]
    assert drifts("d", {"o1": a}, {"o1": a}, latency={}) == [
        Drift("d", "o1", "latency_requests", "3", "0")
    ]
