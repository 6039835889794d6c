"""Alerts in the database: once per key across writers, actions audited, deliveries claimed
once and retried, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine

from costwarden.alerts.model import Channel, ChannelFilter
from costwarden.alerts.rules import threshold_alert
from costwarden.core.errors import Conflict, NotFound
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.storage import alert_deliveries as deliveries
from costwarden.storage import alerts as store
from costwarden.storage.audit import audit_entries

T0 = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _crossing(pct: int = 50, window_key: str = "until:1904688000", org: str = "org_1") -> (
    LimitThresholdCrossed
):
    return LimitThresholdCrossed(
        org_id=org,
        scope="org",
        scope_id=org,
        window="day",
        metric="usd",
        threshold_pct=pct,
        used="5.1",
        limit="10",
        window_key=window_key,
        resets_at="2030-05-07T00:00:00+00:00",
    )


def _channel(name: str = "ops", **kw: object) -> Channel:
    fields: dict[str, object] = {
        "id": "",
        "name": name,
        "type": "webhook",
        "url": "http://127.0.0.1:9/hook",
        "secret": SECRET,
    }
    fields.update(kw)
    return Channel(**fields)  # type: ignore[arg-type]


def test_a_draft_fires_once_however_many_writers_race(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(db_url)
    store.save_channel(engine, _channel(), actor="test")
    draft = threshold_alert(_crossing())
    results: list[object] = []

    def raise_it() -> None:
        results.append(store.raise_alert(make_engine(db_url), draft, now=T0))

    threads = [threading.Thread(target=raise_it) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fired = [r for r in results if r is not None]
    assert len(fired) == 1 and len(results) == 8
    assert store.raise_alert(engine, draft, now=T0 + timedelta(hours=1)) is None  # a restart
    # The next window, or the next threshold, is a new alert.
    assert store.raise_alert(engine, threshold_alert(_crossing(80)), now=T0) is not None
    assert store.raise_alert(
        engine, threshold_alert(_crossing(window_key="until:1904774400")), now=T0
    ) is not None
    assert len(store.list_alerts(engine)) == 3
    (delivery,) = deliveries.delivery_log(engine, alert_id=fired[0].id)  # type: ignore[attr-defined]
    assert delivery["channel"] == "ops" and delivery["state"] == "pending"
    fired_audit = [e for e in audit_entries(engine, limit=50) if e.action == "alert.fired"]
    assert len(fired_audit) == 3


def test_actions_are_audited_with_who_and_when(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(db_url)
    alert = store.raise_alert(engine, threshold_alert(_crossing()), now=T0)
    assert alert is not None and alert.state == "firing" and alert.severity == "info"
    acked = store.act_on_alert(
        engine, alert.id, "acknowledge", actor="alice", now=T0 + timedelta(minutes=3)
    )
    assert (acked.state, acked.acknowledged_by) == ("acknowledged", "alice")
    assert acked.acknowledged_at == T0 + timedelta(minutes=3)
    with pytest.raises(Conflict):
        store.act_on_alert(engine, alert.id, "acknowledge", actor="bob")
    resolved = store.act_on_alert(
        engine, alert.id, "resolve", actor="bob", now=T0 + timedelta(minutes=5)
    )
    assert (resolved.state, resolved.resolved_by) == ("resolved", "bob")
    with pytest.raises(NotFound):
        store.act_on_alert(engine, "alr_nope", "resolve", actor="bob")
    trail = [
        (e.action, e.actor)
        for e in reversed(audit_entries(engine, limit=50))
        if e.target == alert.id
    ]
    assert trail == [
        ("alert.fired", "costwarden"),
        ("alert.acknowledge", "alice"),
        ("alert.resolve", "bob"),
    ]


def test_deliveries_are_claimed_once_retried_and_logged(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(db_url)
    store.save_channel(engine, _channel("a"), actor="test")
    store.save_channel(engine, _channel("b", filter=ChannelFilter(min_severity="critical")),
                       actor="test")
    alert = store.raise_alert(engine, threshold_alert(_crossing()), now=T0)
    assert alert is not None
    lease = timedelta(seconds=30)
    (due,) = deliveries.claim_deliveries(engine, now=T0, lease=lease)  # "b" takes critical only
    assert due.channel.name == "a" and due.channel.secret == SECRET
    assert deliveries.claim_deliveries(engine, now=T0, lease=lease) == []  # claimed: not twice
    state = deliveries.record_attempt(
        engine, due, delivered=False, status=503, error="HTTP 503",
        next_attempt_at=T0 + timedelta(seconds=10), now=T0,
    )
    assert state == "pending"
    assert deliveries.claim_deliveries(engine, now=T0 + timedelta(seconds=5), lease=lease) == []
    (again,) = deliveries.claim_deliveries(engine, now=T0 + timedelta(seconds=10), lease=lease)
    assert again.attempts == 1 and again.first_attempt_at == T0
    state = deliveries.record_attempt(
        engine, again, delivered=True, status=200, error=None, next_attempt_at=None,
        now=T0 + timedelta(seconds=10),
    )
    assert state == "delivered"
    (log,) = deliveries.delivery_log(engine, alert_id=alert.id)
    assert log["state"] == "delivered"
    assert [(a["attempt"], a["delivered"], a["status"]) for a in log["attempts"]] == [
        (1, False, 503),
        (2, True, 200),
    ]
    # A lapsed claim (its process died mid-send) is taken by another.
    second = store.raise_alert(engine, threshold_alert(_crossing(80)), now=T0)
    assert second is not None
    (first_claim,) = deliveries.claim_deliveries(engine, now=T0, lease=lease)
    (retaken,) = deliveries.claim_deliveries(engine, now=T0 + lease, lease=lease)
    assert retaken.id == first_claim.id


def test_a_snoozed_alert_waits_and_a_reset_window_resolves(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(db_url)
    store.save_channel(engine, _channel(), actor="test")
    alert = store.raise_alert(engine, threshold_alert(_crossing()), now=T0)
    assert alert is not None
    until = T0 + timedelta(minutes=30)
    snoozed = store.act_on_alert(engine, alert.id, "snooze", actor="alice", until=until, now=T0)
    assert snoozed.snoozed_until == until
    lease = timedelta(seconds=30)
    assert deliveries.claim_deliveries(engine, now=T0 + timedelta(minutes=1), lease=lease) == []
    assert deliveries.claim_deliveries(engine, now=until - timedelta(seconds=1), lease=lease) == []
    (due,) = deliveries.claim_deliveries(engine, now=until, lease=lease)
    assert due.alert.id == alert.id
    # The day's window resets: the alert resolves itself, its pending delivery is dropped.
    assert store.resolve_reset_windows(engine, now=T0) == []
    (resolved,) = store.resolve_reset_windows(
        engine, now=datetime(2030, 5, 7, tzinfo=UTC)
    )
    assert (resolved.state, resolved.resolved_by) == ("resolved", "costwarden")
    (log,) = deliveries.delivery_log(engine, alert_id=alert.id)
    assert log["state"] == "cancelled"


def test_channels_keep_their_secrets_and_replace_by_name(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(db_url)
    saved = store.save_channel(engine, _channel(), actor="test")
    assert saved.id.startswith("chn_") and saved.secret == SECRET
    replaced = store.save_channel(
        engine, dataclasses.replace(_channel(), url="https://hooks.example/x"), actor="test"
    )
    assert replaced.id == saved.id and replaced.url == "https://hooks.example/x"
    assert store.get_channel(engine, "ops") == replaced == store.get_channel(engine, saved.id)
    store.delete_channel(engine, "ops", actor="test")
    assert store.get_channel(engine, "ops").enabled is False
    with pytest.raises(NotFound):
        store.get_channel(engine, "nope")
