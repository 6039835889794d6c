"""Alert rules: what each event makes of an alert, and the key that makes it fire once."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from costwarden.alerts.rules import (
    breaker_alert,
    cleared,
    error_rate_alert,
    severity_of,
    spike_alert,
    switch_alert,
    threshold_alert,
)
from costwarden.core.event_kinds import BreakerChanged, LimitThresholdCrossed, SwitchChanged

CROSSING = LimitThresholdCrossed(
    org_id="org_1", scope="key", scope_id="key_1", window="day", metric="usd",
    threshold_pct=80, used="8.1", limit="10", window_key="until:1900000000",
    resets_at="2030-03-17T17:46:40+00:00",
)  # fmt: skip


@pytest.mark.parametrize(("pct", "severity"), [(50, "info"), (79, "info"), (80, "warning"),
                                               (99, "warning"), (100, "critical")])
def test_severity_grows_with_the_share(pct: int, severity: str) -> None:
    assert severity_of(pct) == severity


def test_a_crossing_is_keyed_on_rule_scope_window_and_threshold() -> None:
    draft = threshold_alert(CROSSING)
    assert threshold_alert(dataclasses.replace(CROSSING, used="9")).dedupe_key == draft.dedupe_key
    for change in (
        {"window_key": "until:1900086400"},  # the next day
        {"threshold_pct": 100},
        {"scope_id": "key_2"},
        {"org_id": "org_2"},
        {"metric": "tokens"},
    ):
        assert threshold_alert(dataclasses.replace(CROSSING, **change)).dedupe_key != (
            draft.dedupe_key
        ), change
    assert (draft.severity, draft.kind, draft.threshold_pct) == ("warning", "threshold", 80)
    assert draft.resolves_at is not None and draft.resolves_at.isoformat() == CROSSING.resets_at
    assert draft.detail["spent"] == "8.1" and draft.detail["limit"] == "10"
    assert "80%" in draft.title and "key key_1" in draft.title


def test_service_alerts_open_and_clear() -> None:
    opened = BreakerChanged(deployment="openai:gpt-4o", from_state="closed", to_state="open",
                            reason="5 consecutive failures", at=None)
    draft = breaker_alert(7, opened)
    assert draft is not None and draft.dedupe_key == "service-breaker-open|7"
    assert breaker_alert(8, dataclasses.replace(opened, to_state="half_open")) is None
    assert cleared(opened) is None
    closed = dataclasses.replace(opened, from_state="half_open", to_state="closed")
    assert cleared(closed) == ("service-breaker-open", "openai:gpt-4o", None)
    off = SwitchChanged(org_id=None, feature="ai", enabled=False, message=None, actor="ops")
    switch = switch_alert(9, off)
    assert switch is not None and switch.severity == "critical" and "ops" in switch.title
    streaming = switch_alert(10, dataclasses.replace(off, feature="streaming", org_id="org_1"))
    assert streaming is not None and streaming.severity == "warning"
    assert streaming.org_id == "org_1"
    on = dataclasses.replace(off, enabled=True)
    assert switch_alert(11, on) is None
    assert cleared(on) == ("service-kill-switch", "ai", None)


def test_a_spike_is_keyed_per_org_metric_and_hour_and_resolves_after_the_next() -> None:
    hour = 1_900_000_800  # 2030-03-17 18:00 UTC
    args = {"org_id": "org_1", "metric": "usd", "hour": hour, "spent": "31.5", "usual": "10",
            "ratio": "3.2", "reason": "r"}  # fmt: skip
    draft = spike_alert(**args)  # type: ignore[arg-type]
    assert draft.dedupe_key == f"spend-spike|org_1|usd|hour:{hour}"
    assert (draft.kind, draft.rule, draft.severity) == ("spike", "spend-spike", "warning")
    assert draft.resolves_at == datetime(2030, 3, 17, 20, tzinfo=UTC)
    assert "31.5 usd" in draft.title and "18:00 UTC" in draft.title and "3.2 times" in draft.title
    assert (draft.org_id, draft.scope, draft.scope_id) == ("org_1", "org", "org_1")
    for change in ({"hour": hour + 3600}, {"metric": "tokens"}, {"org_id": "org_2"}):
        assert spike_alert(**{**args, **change}).dedupe_key != draft.dedupe_key  # type: ignore[arg-type]
    assert spike_alert(**{**args, "spent": "40"}).dedupe_key == draft.dedupe_key  # type: ignore[arg-type]


def test_an_error_rate_alert_is_keyed_on_its_provider_and_episode() -> None:
    start = 1_900_000_200
    draft = error_rate_alert(
        provider="openai", episode_start=start, pct=20, minutes=5, requests=50, failures=12,
        reason="r",
    )  # fmt: skip
    assert draft.dedupe_key == f"service-error-rate|openai|minute:{start}"
    assert (draft.kind, draft.scope, draft.scope_id) == ("service", "provider", "openai")
    assert draft.resolves_at is None and draft.org_id is None and draft.threshold_pct == 20
    assert draft.detail["percent"] == "24" and "12 of 50 requests (24 %)" in draft.title
    later = error_rate_alert(
        provider="openai", episode_start=start + 60, pct=20, minutes=5, requests=9,
        failures=9, reason="r",
    )  # fmt: skip
    assert later.dedupe_key != draft.dedupe_key
