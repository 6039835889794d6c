"""The config file's alert channels kept in step with ``alert_channels``: inserted, updated
only when changed, released when gone (disabled, history kept), an admin API channel of the
same name taken over once, and concurrent starts neither failing nor duplicating, on SQLite
and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.alerts.model import Channel, ChannelFilter
from costwarden.alerts.rules import threshold_alert
from costwarden.core.errors import Conflict
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.storage import alert_deliveries as deliveries
from costwarden.storage import alerts as store
from costwarden.storage.audit import audit_entries
from costwarden.storage.config_channels import ChannelSync, sync_config_channels
from costwarden.storage.schema import alert_channels

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


def _config(name: str = "ops", **kw: object) -> Channel:
    fields: dict[str, object] = {
        "id": "", "name": name, "type": "webhook", "url": "http://127.0.0.1:9/hook",
        "secret": SECRET, "source": "config",
    }  # fmt: skip
    fields.update(kw)
    return Channel(**fields)  # type: ignore[arg-type]


def _crossing() -> LimitThresholdCrossed:
    return LimitThresholdCrossed(
        org_id="org_1", scope="org", scope_id="org_1", window="day", metric="usd",
        threshold_pct=50, used="5.1", limit="10", window_key="until:1904688000",
        resets_at="2030-05-07T00:00:00+00:00",
    )  # fmt: skip


def _shown(engine: Engine) -> dict[str, Channel]:
    return {c.name: c for c in store.list_channels(engine)}


def test_config_channels_are_inserted_then_left_alone_until_they_change(engine: Engine) -> None:
    first = sync_config_channels(
        engine, [_config("ops"), _config("chat", type="slack", secret=None)]
    )
    assert first == ChannelSync(saved=("chat", "ops"))
    shown = _shown(engine)
    assert shown["ops"].source == shown["chat"].source == "config"
    assert dataclasses.replace(shown["ops"], id="") == _config("ops")
    # A restart with the same file changes (and audits) nothing.
    audited = len(audit_entries(engine, limit=1000))
    assert (
        sync_config_channels(engine, [_config("ops"), _config("chat", type="slack", secret=None)])
        == ChannelSync()
    )
    assert len(audit_entries(engine, limit=1000)) == audited
    # A changed entry is updated in place: same id, so its delivery log stays its own.
    changed = _config("ops", filter=ChannelFilter(min_severity="critical"), enabled=False)
    assert sync_config_channels(
        engine, [changed, _config("chat", type="slack", secret=None)]
    ) == ChannelSync(saved=("ops",))
    after = _shown(engine)["ops"]
    assert after.id == shown["ops"].id
    assert (after.filter.min_severity, after.enabled) == ("critical", False)


def test_a_channel_gone_from_the_file_is_disabled_and_handed_back(engine: Engine) -> None:
    sync_config_channels(engine, [_config("ops"), _config("old")])
    alert = store.raise_alert(engine, threshold_alert(_crossing()), now=T0)
    assert alert is not None
    result = sync_config_channels(engine, [_config("ops")])
    assert result == ChannelSync(released=("old",))
    old = _shown(engine)["old"]
    # Kept, not deleted: the delivery log still names it; its pending delivery is dropped.
    assert (old.enabled, old.source) == (False, "api")
    logs = {d["channel"]: d for d in deliveries.delivery_log(engine, alert_id=alert.id)}
    assert logs["old"]["state"] == "cancelled" and logs["ops"]["state"] == "pending"
    # It is the admin API's again: it can be replaced or removed there.
    store.save_channel(engine, _config("old", source="api"), actor="test")
    assert _shown(engine)["old"].enabled is True
    # And nothing more happens to it at the next start.
    assert sync_config_channels(engine, [_config("ops")]) == ChannelSync()
    # An empty file releases every config channel; API channels are never touched.
    assert sync_config_channels(engine, []) == ChannelSync(released=("ops",))
    assert _shown(engine)["old"].enabled is True


def test_an_api_channel_of_the_same_name_is_taken_over_once(engine: Engine) -> None:
    api = store.save_channel(
        engine, _config("ops", source="api", url="http://10.0.0.1/x"), actor="alice"
    )
    assert api.source == "api"
    result = sync_config_channels(engine, [_config("ops")])
    assert result == ChannelSync(saved=("ops",), taken_over=("ops",))
    ops = _shown(engine)["ops"]
    assert (ops.id, ops.source, ops.url) == (api.id, "config", "http://127.0.0.1:9/hook")
    assert sync_config_channels(engine, [_config("ops")]) == ChannelSync()


def test_the_api_cannot_change_or_remove_a_config_channel(engine: Engine) -> None:
    sync_config_channels(engine, [_config("ops")])
    with pytest.raises(Conflict, match="managed in the config file"):
        store.save_channel(engine, _config("ops", source="api"), actor="alice")
    with pytest.raises(Conflict, match=r"\[\[alerts.channels\]\]"):
        store.delete_channel(engine, "ops", actor="alice")
    ops = _shown(engine)["ops"]
    assert (ops.enabled, ops.source, ops.url) == (True, "config", "http://127.0.0.1:9/hook")


def test_concurrent_starts_neither_fail_nor_duplicate(
    db_url: str, make_engine: Callable[[str], Engine]
) -> None:
    engine = make_engine(db_url)
    store.save_channel(engine, _config("taken", source="api"), actor="alice")
    sync_config_channels(engine, [_config("gone")])
    wanted = [_config(f"ch{i}") for i in range(5)] + [_config("taken")]
    results: list[ChannelSync] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        try:
            own = make_engine(db_url)
            barrier.wait()
            results.append(sync_config_channels(own, wanted))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 6
    # Each change made, and reported, by exactly one of them.
    assert sorted(n for r in results for n in r.saved) == sorted(c.name for c in wanted)
    assert [n for r in results for n in r.taken_over] == ["taken"]
    assert [n for r in results for n in r.released] == ["gone"]
    with engine.connect() as conn:
        names = conn.execute(sa.select(alert_channels.c.name)).scalars().all()
    assert sorted(names) == sorted([c.name for c in wanted] + ["gone"])  # no duplicate
