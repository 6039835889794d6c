"""The workers' scrapes merged: what a scrape of ``serve --workers N`` exports equals what one
process that saw every row would, and the wire form loses nothing."""

from __future__ import annotations

import dataclasses
import math
from decimal import Decimal
from typing import Any

import pytest

from costwarden.metrics import (
    GaugeSources,
    LedgerGauges,
    MetricsExporter,
    RequestMetrics,
    SliceCounts,
)
from costwarden.metrics.requests import HistogramData, RequestSnapshot
from costwarden.metrics.scrape import Scrape, decode, encode, merge
from tests.metrics.test_exporter import row, samples, value

ROWS: list[dict[str, Any]] = [
    dict(input_tokens=10, output_tokens=5, cost_usd=Decimal("0.000123"), latency_ms=120.0,
         overhead_ms=1.5),
    dict(org_id="org_b", input_tokens=7, cost_usd=Decimal("0.5"), latency_ms=40.0,
         overhead_ms=0.2),
    dict(status="blocked", http_status=402, provider=None, latency_ms=0.3, overhead_ms=0.3),
    dict(provider="anthropic", requested_model="claude", ttft_ms=300.0, latency_ms=900.0,
         overhead_ms=2.0, output_tokens=40, cached_input_tokens=3, cost_usd=Decimal("0.01")),
]  # fmt: skip


def _exporter(
    rows: list[dict[str, Any]], worker: str, *, ledger: LedgerGauges, breakers: dict[str, str],
    subscribers: int, mode: str | None = None, slices: SliceCounts | None = None,
) -> MetricsExporter:  # fmt: skip
    requests = RequestMetrics(models=["gpt-4o-mini"])
    for fields in rows:
        requests.observe(row(**fields))
    sources = GaugeSources(
        breakers=lambda: breakers, ledger=lambda: ledger, event_subscribers=lambda: subscribers,
        counters_mode=None if mode is None else lambda: mode,
        slices=None if slices is None else lambda: slices,
    )  # fmt: skip
    exporter = MetricsExporter(requests, sources)
    exporter.worker = worker
    return exporter


def _request_lines(text: str) -> list[str]:
    """The request families' sample lines (not the per-process gauges)."""
    keep = ("costwarden_requests", "costwarden_input", "costwarden_output", "costwarden_cached",
            "costwarden_spend", "costwarden_gateway_overhead", "costwarden_upstream_latency",
            "costwarden_time_to_first_token")  # fmt: skip
    return sorted(line for line in text.splitlines() if line.startswith(keep))


async def test_a_merged_scrape_is_what_one_process_seeing_every_row_exports() -> None:
    first = [ROWS[0], ROWS[1], ROWS[0]]
    second = [ROWS[0], ROWS[2], ROWS[3], ROWS[3]]
    a = _exporter(first, "101", ledger=LedgerGauges(3, 0.5, 10, 1, spooled=5, spooling=True),
                  breakers={"openai:gpt-4o-mini": "closed", "anthropic:claude": "open"},
                  subscribers=1, mode="shared", slices=SliceCounts(90, 4, 7))  # fmt: skip
    b = _exporter(second, "202", ledger=LedgerGauges(4, 1.25, 20, 0, spooled=2),
                  breakers={"openai:gpt-4o-mini": "half_open", "anthropic:claude": "closed"},
                  subscribers=2, mode="local", slices=SliceCounts(10, 1, 3))  # fmt: skip

    async def peers() -> list[Scrape]:
        return [decode(encode(b.snapshot()))]  # as the other worker answers it

    a.peers = peers
    merged = (await a.render()).decode()
    alone = _exporter(first + second, "1", ledger=LedgerGauges(0, 0, 0, 0), breakers={},
                      subscribers=0)  # fmt: skip
    lines = _request_lines(merged)
    assert len(lines) > 40  # series of 3 providers, histogram buckets
    assert lines == _request_lines(alone.render_sync().decode())

    found = samples(merged)
    assert value(found, "costwarden_workers") == 2
    assert value(found, "costwarden_worker_requests_total", pid="101") == 3
    assert value(found, "costwarden_worker_requests_total", pid="202") == 4
    assert sum(s.value for s in found["costwarden_requests_total"]) == 7
    assert value(found, "costwarden_ledger_queue_depth") == 7  # summed
    assert value(found, "costwarden_ledger_flush_lag_seconds") == 1.25  # the oldest
    assert value(found, "costwarden_ledger_rows_written_total") == 30
    assert value(found, "costwarden_ledger_write_failures_total") == 1
    assert value(found, "costwarden_event_subscribers") == 3
    assert value(found, "costwarden_ledger_spool_rows") == 7  # summed
    assert value(found, "costwarden_ledger_spooling") == 1  # any worker's database is away
    # The most degraded mode any worker is in: one admitting on its own counters.
    assert value(found, "costwarden_budget_counters_mode", mode="local") == 1
    assert value(found, "costwarden_budget_counters_mode", mode="shared") == 0
    # Leased slices' admissions and calls: summed.
    assert value(found, "costwarden_budget_slice_decisions_total", path="local") == 100
    assert value(found, "costwarden_budget_slice_decisions_total", path="exact") == 5
    assert value(found, "costwarden_budget_slice_calls_total") == 10
    # The worst state any worker sees.
    assert value(found, "costwarden_breaker_state", deployment="openai:gpt-4o-mini") == 1
    assert value(found, "costwarden_breaker_state", deployment="anthropic:claude") == 2


def test_one_process_exports_no_worker_families() -> None:
    exporter = MetricsExporter(RequestMetrics())
    text = exporter.render_sync().decode()
    assert "costwarden_worker" not in text
    assert "costwarden_budget_slice" not in text  # no leased slices, none of their families


def test_the_wire_form_round_trips() -> None:
    exporter = _exporter(ROWS, "7", ledger=LedgerGauges(1, 0.25, 2, 3, 4, True),
                         breakers={"openai:gpt-4o-mini": "open"}, subscribers=4,
                         mode="refusing", slices=SliceCounts(5, 6, 7))  # fmt: skip
    scrape = exporter.snapshot()
    back = decode(encode(scrape))
    assert back.limits is None  # the answering worker's limits are exported, not these
    assert back == dataclasses.replace(scrape, limits=None)
    assert back.counters_mode == "refusing" and back.ledger == scrape.ledger
    assert back.slices == SliceCounts(5, 6, 7)
    assert math.isinf(back.requests.upstream["openai"].buckets[-1][0])


def test_a_scrape_without_sources_round_trips() -> None:
    empty = Scrape(RequestSnapshot({}, {}, {}, {}, {}), None, None, None, None, None)
    assert decode(encode(empty)) == empty
    assert merge(empty, []) is empty


@pytest.mark.parametrize(
    "data", [b"", b"not json", b"[]", b"{}", b'{"v": 2}', b'{"v": 1, "series": [[1]]}']
)
def test_what_is_not_a_scrape_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="scrape|wire version"):
        decode(data)


def test_histograms_of_different_buckets_are_not_summed() -> None:
    one = HistogramData(((0.1, 1), (math.inf, 1)), 0.05)
    other = HistogramData(((0.2, 1), (math.inf, 1)), 0.05)

    def scrape(h: HistogramData) -> Scrape:
        return Scrape(RequestSnapshot({}, {"p": h}, {}, {}, {}), None, None, None, None)

    with pytest.raises(ValueError, match="disagree"):
        merge(scrape(one), [scrape(other)])
