"""RequestMetrics: the pure counters behind /metrics -- totals, caps, buckets, exact money."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from costwarden.core.money import usd_to_nanos
from costwarden.core.records import LEDGER_STATUSES, LedgerRecord
from costwarden.metrics import OTHER, RequestMetrics
from costwarden.metrics.requests import (
    MAX_LABEL_CHARS,
    OVERHEAD_BUCKETS,
    TTFT_BUCKETS,
    UPSTREAM_BUCKETS,
    HistogramData,
)
from costwarden.storage.sqltypes import to_money

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(**fields: Any) -> LedgerRecord:
    base: dict[str, Any] = {
        "request_id": "req_1",
        "ts": _T0,
        "endpoint": "chat.completions",
        "status": "success",
        "http_status": 200,
        "org_id": "org_a",
        "requested_model": "gpt-4o-mini",
        "provider": "openai",
    }
    base.update(fields)
    return LedgerRecord(**base)


def _usd(text: str) -> Decimal:
    return Decimal(text)


def totals(m: RequestMetrics) -> dict[tuple[str, str, str, str], tuple[int, int, int, int, int]]:
    return m.snapshot().series


def test_observe_adds_every_total_under_its_labels() -> None:
    m = RequestMetrics(models=["gpt-4o-mini"])
    m.observe(row(input_tokens=10, output_tokens=5, cached_input_tokens=4, cost_usd=_usd("0.0001")))
    m.observe(row(input_tokens=1, output_tokens=2, cached_input_tokens=0, cost_usd=_usd("0.00002")))
    m.observe(row(status="blocked", http_status=402, provider=None))
    m.observe(row(org_id="org_b", requested_model="claude-haiku-4-5", provider="anthropic"))
    assert totals(m) == {
        ("org_a", "gpt-4o-mini", "openai", "success"): (2, 11, 7, 4, 120_000),
        ("org_a", "gpt-4o-mini", "", "blocked"): (1, 0, 0, 0, 0),
        ("org_b", "claude-haiku-4-5", "anthropic", "success"): (1, 0, 0, 0, 0),
    }


def test_rows_without_org_or_model_have_empty_labels() -> None:
    m = RequestMetrics()
    m.observe(row(org_id=None, requested_model=None, provider=None, status="client_error"))
    assert totals(m) == {("", "", "", "client_error"): (1, 0, 0, 0, 0)}


@pytest.mark.parametrize(
    ("costs", "nanos"),
    [
        (["0.000000123"], 123),
        (["0.000000123"] * 3, 369),
        (["0.0000001231"], 124),  # up to whole nano-dollars, per row
        (["0.0000001231", "0.0000001231"], 248),  # per row, as the ledger's nanos_sum
        (["0.0000000000004"], 0),  # below the ledger's 12 places: stored as 0
        (["0.0000000000005"], 1),  # stored as 1e-12: one (ceiling) nano-dollar
        (["0"], 0),
        (["12.345678901234"], 12_345_678_902),
        (["0.1", "0.2"], 300_000_000),  # no float anywhere: exactly 0.3 USD
    ],
)
def test_spend_is_exact_nanodollars(costs: list[str], nanos: int) -> None:
    m = RequestMetrics()
    for cost in costs:
        m.observe(row(cost_usd=Decimal(cost)))
    (series,) = totals(m).values()
    assert series[4] == nanos
    # The project's own conversion of each cost as the ledger stores it.
    assert nanos == sum(usd_to_nanos(to_money(Decimal(c))) for c in costs)


def test_statuses_are_the_ledger_statuses() -> None:
    m = RequestMetrics()
    for status in LEDGER_STATUSES:
        m.observe(row(status=status))
    assert {k[3] for k in totals(m)} == set(LEDGER_STATUSES)


# ------------------------------------------------------------------ caps


def test_org_cap_folds_later_orgs_into_other() -> None:
    m = RequestMetrics(max_orgs=10)
    for i in range(50):
        m.observe(row(org_id=f"org_{i:02d}", cost_usd=Decimal("0.000000001")))
    series = totals(m)
    orgs = {k[0] for k in series}
    assert orgs == {f"org_{i:02d}" for i in range(10)} | {OTHER}
    assert series[(OTHER, "gpt-4o-mini", "openai", "success")] == (40, 0, 0, 0, 40)
    assert m.snapshot().folded == {"org": 40, "model": 0}
    assert m.org_labels == 10
    # An admitted org keeps its label; an org over the cap stays folded.
    m.observe(row(org_id="org_03"))
    m.observe(row(org_id="org_49"))
    assert totals(m)[("org_03", "gpt-4o-mini", "openai", "success")][0] == 2
    assert totals(m)[(OTHER, "gpt-4o-mini", "openai", "success")][0] == 41


def test_random_model_names_cannot_grow_the_metrics_or_take_a_routes_label() -> None:
    m = RequestMetrics(max_models=3, models=["gpt-4o-mini", "claude-haiku-4-5"])
    for i in range(1000):
        m.observe(row(requested_model=f"rnd-{i}", status="client_error", http_status=404))
    m.observe(row(requested_model="claude-haiku-4-5"))
    m.observe(row(requested_model="x" * (MAX_LABEL_CHARS + 1), status="client_error"))
    models = {k[1] for k in totals(m)}
    assert models == {"rnd-0", "rnd-1", "rnd-2", OTHER, "claude-haiku-4-5"}
    assert totals(m)[("org_a", OTHER, "openai", "client_error")][0] == 998
    assert m.snapshot().folded["model"] == 998
    # Memory stays bounded: only admitted values are remembered.
    assert len(m._models) == 2 + 3 + 1 and len(m._by_raw) <= 6


def test_caps_must_be_sane() -> None:
    with pytest.raises(ValueError):
        RequestMetrics(max_orgs=0)
    with pytest.raises(ValueError):
        RequestMetrics(max_models=-1)


# ------------------------------------------------------------------ histograms


def _bucket_counts(h: HistogramData) -> dict[float, int]:
    """Non-cumulative count per le."""
    out: dict[float, int] = {}
    previous = 0
    for le, cumulative in h.buckets:
        out[le] = cumulative - previous
        previous = cumulative
    return out


@pytest.mark.parametrize(
    ("upstream_ms", "le"),
    [
        (0.001, 0.05),
        (50.0, 0.05),  # on a bound: that bound's bucket (le is <=)
        (50.0001, 0.1),
        (999.9, 1.0),
        (1000.0, 1.0),
        (299_999.0, 300.0),
        (300_000.5, math.inf),
    ],
)
def test_upstream_latency_bucket_placement(upstream_ms: float, le: float) -> None:
    m = RequestMetrics()
    m.observe(row(latency_ms=upstream_ms + 0.3, overhead_ms=0.3))
    snap = m.snapshot()
    h = snap.upstream["openai"]
    assert _bucket_counts(h)[le] == 1 and h.count == 1
    assert h.sum_seconds == pytest.approx(upstream_ms / 1000)
    assert [le for le, _ in h.buckets] == [*UPSTREAM_BUCKETS, math.inf]
    o = snap.overhead["openai"]
    assert _bucket_counts(o)[0.0005] == 1 and o.sum_seconds == pytest.approx(0.0003)


def test_overhead_counts_refusals_but_not_error_rows_that_include_upstream_time() -> None:
    m = RequestMetrics()
    m.observe(row(status="blocked", provider=None, latency_ms=0.08, overhead_ms=0.08))
    m.observe(row(status="client_error", provider=None, latency_ms=2.0, overhead_ms=2.0))
    # An upstream error answered as an error: overhead_ms is the whole latency (upstream
    # time included), so it is in neither histogram.
    m.observe(row(status="upstream_error", latency_ms=30_000.0, overhead_ms=30_000.0))
    m.observe(row(status="degraded", provider=None, latency_ms=5.0, overhead_ms=5.0))
    snap = m.snapshot()
    assert set(snap.overhead) == {""} and snap.upstream == {}
    counts = _bucket_counts(snap.overhead[""])
    assert counts[0.0001] == 1 and counts[0.0025] == 1 and snap.overhead[""].count == 2
    assert [le for le, _ in snap.overhead[""].buckets] == [*OVERHEAD_BUCKETS, math.inf]
    assert totals(m)[("org_a", "gpt-4o-mini", "openai", "upstream_error")][0] == 1


def test_ttft_only_for_rows_that_have_one() -> None:
    m = RequestMetrics()
    m.observe(row(streamed=True, ttft_ms=120.0, latency_ms=900.0, overhead_ms=0.5))
    m.observe(row(streamed=True, ttft_ms=None, latency_ms=900.0, overhead_ms=0.5))
    m.observe(row(streamed=True, ttft_ms=45_000.0, latency_ms=50_000.0, overhead_ms=0.5))
    h = m.snapshot().ttft["openai"]
    counts = _bucket_counts(h)
    assert h.count == 2 and counts[0.25] == 1 and counts[60.0] == 1
    assert [le for le, _ in h.buckets] == [*TTFT_BUCKETS, math.inf]
    assert h.sum_seconds == pytest.approx(45.12)


def test_snapshot_is_a_copy() -> None:
    m = RequestMetrics()
    m.observe(row(latency_ms=100.0, overhead_ms=1.0))
    snap = m.snapshot()
    m.observe(row(latency_ms=100.0, overhead_ms=1.0))
    assert snap.series[("org_a", "gpt-4o-mini", "openai", "success")][0] == 1
    assert snap.upstream["openai"].count == 1
    assert m.snapshot().upstream["openai"].count == 2
