"""MetricsExporter: the exposition text parses, says what the counters and sources hold, and
belongs to one app (no global registry)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from costwarden.core.records import LedgerRecord
from costwarden.metrics import (
    OTHER,
    GaugeSources,
    LedgerGauges,
    LimitGauge,
    LimitGauges,
    MetricsExporter,
    RequestMetrics,
)
from costwarden.metrics.sources import BREAKER_STATE_VALUES
from costwarden.routing.breaker import STATES


def row(**fields: Any) -> LedgerRecord:
    base: dict[str, Any] = {
        "request_id": "req_1",
        "ts": datetime(2026, 1, 1, tzinfo=UTC),
        "endpoint": "chat.completions",
        "status": "success",
        "http_status": 200,
        "org_id": "org_a",
        "requested_model": "gpt-4o-mini",
        "provider": "openai",
    }
    base.update(fields)
    return LedgerRecord(**base)


def samples(text: str) -> dict[str, list[Sample]]:
    """Every sample of the exposition text by sample name (parsed by prometheus_client)."""
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(found: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matches = [s.value for s in found.get(name, []) if s.labels == labels]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_request_counters_parse_and_match() -> None:
    m = RequestMetrics(models=["gpt-4o-mini"])
    exporter = MetricsExporter(m)
    for _ in range(3):
        m.observe(
            row(
                input_tokens=100,
                output_tokens=20,
                cached_input_tokens=40,
                cost_usd=Decimal("0.000123456789012"),
                latency_ms=250.0,
                overhead_ms=0.4,
                ttft_ms=80.0,
            )
        )
    m.observe(
        row(status="blocked", http_status=402, provider=None, latency_ms=0.1, overhead_ms=0.1)
    )
    text = exporter.render_sync().decode()
    found = samples(text)
    labels = {"org": "org_a", "model": "gpt-4o-mini", "provider": "openai", "status": "success"}
    assert value(found, "costwarden_requests_total", **labels) == 3
    assert value(found, "costwarden_input_tokens_total", **labels) == 300
    assert value(found, "costwarden_output_tokens_total", **labels) == 60
    assert value(found, "costwarden_cached_input_tokens_total", **labels) == 120
    # 0.000123456789012 -> ceil(123456.789012) = 123457 nano-dollars a row.
    assert value(found, "costwarden_spend_nanodollars_total", **labels) == 3 * 123457
    assert value(found, "costwarden_spend_usd_total", **labels) == pytest.approx(0.000370371)
    blocked = {**labels, "provider": "", "status": "blocked"}
    assert value(found, "costwarden_requests_total", **blocked) == 1
    assert value(found, "costwarden_spend_nanodollars_total", **blocked) == 0
    # Histograms by provider, in seconds.
    assert value(found, "costwarden_upstream_latency_seconds_count", provider="openai") == 3
    assert (
        value(found, "costwarden_upstream_latency_seconds_bucket", provider="openai", le="0.25")
        == 3
    )
    assert (
        value(found, "costwarden_upstream_latency_seconds_bucket", provider="openai", le="0.1") == 0
    )
    assert value(found, "costwarden_upstream_latency_seconds_sum", provider="openai") == (
        pytest.approx(3 * 0.2496)
    )
    assert value(found, "costwarden_gateway_overhead_seconds_count", provider="openai") == 3
    assert value(found, "costwarden_gateway_overhead_seconds_count", provider="") == 1
    assert (
        value(found, "costwarden_time_to_first_token_seconds_bucket", provider="openai", le="+Inf")
        == 3
    )
    assert value(found, "costwarden_metrics_label_overflow_total", label="org") == 0
    assert types(text)["costwarden_spend_nanodollars"] == "counter"
    assert types(text)["costwarden_upstream_latency_seconds"] == "histogram"


def test_cardinality_cap_fifty_orgs_cap_ten() -> None:
    m = RequestMetrics(max_orgs=10)
    exporter = MetricsExporter(m)
    for i in range(50):
        m.observe(row(org_id=f"org_{i:02d}", cost_usd=Decimal("0.000001")))
    found = samples(exporter.render_sync().decode())
    orgs = {s.labels["org"] for s in found["costwarden_requests_total"]}
    assert len(orgs) == 11 and OTHER in orgs
    assert orgs - {OTHER} == {f"org_{i:02d}" for i in range(10)}
    assert sum(s.value for s in found["costwarden_requests_total"]) == 50
    assert (
        value(
            found,
            "costwarden_spend_nanodollars_total",
            org=OTHER,
            model="gpt-4o-mini",
            provider="openai",
            status="success",
        )
        == 40 * 1000
    )
    assert value(found, "costwarden_metrics_label_overflow_total", label="org") == 40


def test_gauge_sources_are_read_at_scrape_time() -> None:
    state = {"breakers": {"openai:gpt-4o-mini": "closed", "anthropic:claude": "open"}}
    ledger = LedgerGauges(queue_depth=7, flush_lag_seconds=0.25, written=1000, failures=2)
    limits = LimitGauges(
        (
            LimitGauge(
                "", "platform", "", "daily_usd", 5_000_000_000, 1_250_000_000, 10, 3_749_999_990
            ),
            LimitGauge("org_a", "org", "org_a", "requests_per_minute", 60),  # counters in Redis
        ),
        omitted=3,
    )
    subscribers = [2]
    mode = ["shared"]
    exporter = MetricsExporter(
        RequestMetrics(),
        GaugeSources(
            breakers=lambda: state["breakers"],
            limits=lambda: limits,
            ledger=lambda: ledger,
            event_subscribers=lambda: subscribers[0],
            counters_mode=lambda: mode[0],
        ),
    )
    found = samples(exporter.render_sync().decode())
    assert value(found, "costwarden_breaker_state", deployment="openai:gpt-4o-mini") == 0
    assert value(found, "costwarden_breaker_state", deployment="anthropic:claude") == 2
    assert value(found, "costwarden_ledger_queue_depth") == 7
    assert value(found, "costwarden_ledger_flush_lag_seconds") == 0.25
    assert value(found, "costwarden_ledger_rows_written_total") == 1000
    assert value(found, "costwarden_ledger_write_failures_total") == 2
    assert value(found, "costwarden_event_subscribers") == 2
    modes = {s.labels["mode"]: s.value for s in found["costwarden_budget_counters_mode"]}
    assert modes == {"shared": 1, "refusing": 0, "local": 0, "reconciling": 0}
    platform = {"org": "", "scope": "platform", "scope_id": "", "limit": "daily_usd"}
    assert value(found, "costwarden_limit_amount", **platform) == 5_000_000_000
    assert value(found, "costwarden_limit_spent", **platform) == 1_250_000_000
    assert value(found, "costwarden_limit_reserved", **platform) == 10
    assert value(found, "costwarden_limit_remaining", **platform) == 3_749_999_990
    rpm = {"org": "org_a", "scope": "org", "scope_id": "org_a", "limit": "requests_per_minute"}
    assert value(found, "costwarden_limit_amount", **rpm) == 60
    assert all(s.labels != rpm for s in found.get("costwarden_limit_spent", []))
    assert value(found, "costwarden_limits_not_exported") == 3
    # Read again at the next scrape, not cached.
    state["breakers"] = {"openai:gpt-4o-mini": "half_open"}
    subscribers[0] = 0
    mode[0] = "local"
    found = samples(exporter.render_sync().decode())
    assert value(found, "costwarden_budget_counters_mode", mode="local") == 1
    assert value(found, "costwarden_budget_counters_mode", mode="shared") == 0
    assert [s.labels["deployment"] for s in found["costwarden_breaker_state"]] == [
        "openai:gpt-4o-mini"
    ]
    assert value(found, "costwarden_breaker_state", deployment="openai:gpt-4o-mini") == 1
    assert value(found, "costwarden_event_subscribers") == 0


def test_every_breaker_state_has_a_value() -> None:
    assert set(BREAKER_STATE_VALUES) == set(STATES)
    assert sorted(BREAKER_STATE_VALUES.values()) == [0, 1, 2]


def test_a_failing_source_is_left_out_and_the_rest_exported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> Mapping[str, str]:
        raise RuntimeError("boom")

    m = RequestMetrics()
    m.observe(row())
    exporter = MetricsExporter(m, GaugeSources(breakers=broken, event_subscribers=lambda: 1))
    found = samples(exporter.render_sync().decode())
    assert "costwarden_breaker_state" not in found
    assert value(found, "costwarden_event_subscribers") == 1
    assert sum(s.value for s in found["costwarden_requests_total"]) == 1
    assert any(
        "metrics source breakers failed: RuntimeError: boom" in r.message for r in caplog.records
    )


def test_unknown_breaker_state_is_skipped() -> None:
    exporter = MetricsExporter(RequestMetrics(), GaugeSources(breakers=lambda: {"d": "weird"}))
    assert "costwarden_breaker_state" not in samples(exporter.render_sync().decode())


async def test_two_exporters_share_nothing_and_the_global_registry_is_untouched() -> None:
    a, b = MetricsExporter(RequestMetrics()), MetricsExporter(RequestMetrics())
    a.observe(row(org_id="only_a"))
    text_a, text_b = await asyncio.gather(a.render(), b.render())
    orgs_a = {s.labels["org"] for s in samples(text_a.decode())["costwarden_requests_total"]}
    assert orgs_a == {"only_a"}
    assert "costwarden_requests_total" not in samples(text_b.decode())
    assert a.registry is not b.registry
    assert "costwarden" not in prometheus_client.generate_latest().decode()


async def test_concurrent_scrapes_each_get_a_whole_answer() -> None:
    m = RequestMetrics()
    exporter = MetricsExporter(m)
    for i in range(200):
        m.observe(row(org_id=f"org_{i}"))
    texts = await asyncio.gather(*(exporter.render() for _ in range(5)))
    for text in texts:
        found = samples(text.decode())
        assert sum(s.value for s in found["costwarden_requests_total"]) == 200
