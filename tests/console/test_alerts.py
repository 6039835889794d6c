"""The alerts page: alerts raised as the gateway raises them, acknowledged, snoozed and
resolved from the page (audited with the dashboard's actor, published as alert_changed),
every refusal leaving the alert unchanged; an org_admin sees and acts on its own org's
alerts only; the channels (platform-wide visitors only) without a secret, with their
delivery log from a real signed delivery."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from costwarden.alerts.rules import threshold_alert
from costwarden.console.alerts import alert_rows, destination, snooze_minutes
from costwarden.core.errors import InvalidInput
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.storage import alert_records as records
from costwarden.storage import alerts as store
from costwarden.storage import repo
from costwarden.storage.audit import audit_entries
from tests.console.conftest import TOKEN, Orgs, Signed, sign_in
from tests.helpers import (
    LiveGateway,
    WebhookReceiver,
    raise_threshold_alert,
    webhook_receiver,
)

SECRET = "whsec_" + base64.b64encode(b"dashboard-alerts-key-0123456789ab").decode()
HOOK_TOKEN = "hooktoken-SECRET-42"
SLACK_PATH = "/services/T0SECRET/B0SECRET/xoxbSecretPath"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def hook() -> AsyncIterator[WebhookReceiver]:
    async with webhook_receiver(SECRET) as r:
        yield r


async def _org_id(gw: LiveGateway, name: str) -> str:
    for org in await asyncio.to_thread(repo.list_orgs, gw.app.engine):
        if org.name == name:
            return org.id
    raise AssertionError(f"no org {name}")


async def _get(gw: LiveGateway, alert_id: str) -> records.AlertRecord:
    return await asyncio.to_thread(store.get_alert, gw.app.engine, alert_id)


def _row(html: str, alert_id: str) -> str:
    found = re.search(rf'<tr id="alert-{alert_id}"(.*?)</tr>', html, re.S)
    assert found is not None, f"no row for {alert_id}"
    return found.group(1)


def _state(html: str, alert_id: str) -> str:
    found = re.search(r'data-testid="alert-state">([a-z]+)<', _row(html, alert_id))
    assert found is not None
    return found.group(1)


async def _actions(gw: LiveGateway) -> list[tuple[str, str, str]]:
    entries = await asyncio.to_thread(audit_entries, gw.app.engine, limit=50)
    return [
        (e.action, e.actor, e.target)
        for e in reversed(entries)
        if e.action.startswith("alert.") and e.action != "alert.fired"
    ]


# --------------------------------------------------------------------------- pure


def test_rows_offer_what_each_state_allows() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)

    def record(i: str, state: str, org: str | None, snoozed: datetime | None = None) -> object:
        return records.AlertRecord(
            id=i, kind="threshold", rule="r", severity="warning", org_id=org, scope=None,
            scope_id=None, window_key="w", threshold_pct=None, state=state,  # type: ignore[arg-type]
            title=i, detail={}, fired_at=now, resolves_at=None, snoozed_until=snoozed,
            acknowledged_by=None, acknowledged_at=None, resolved_by=None, resolved_at=None,
            updated_at=now,
        )  # fmt: skip

    later, earlier = now + timedelta(hours=1), now - timedelta(hours=1)
    rows = alert_rows(
        [
            record("a", "firing", "o1", later),  # type: ignore[list-item]
            record("b", "acknowledged", "o1", earlier),  # type: ignore[list-item]
            record("c", "resolved", "o1"),  # type: ignore[list-item]
            record("d", "firing", "o2"),  # type: ignore[list-item]
            record("e", "firing", None),  # type: ignore[list-item]
        ],
        {"o1": "acme", "o2": "globex"},
        now=now,
        may_write=lambda org: org == "o1",
    )
    assert [(r.id, r.org, r.can_act, r.can_acknowledge, r.snoozed_until) for r in rows] == [
        ("a", "acme", True, True, later),
        ("b", "acme", True, False, None),  # a snooze that ended is not shown
        ("c", "acme", False, False, None),  # resolved: nothing to do
        ("d", "globex", False, False, None),  # another org's
        ("e", "platform", False, False, None),
    ]


@pytest.mark.parametrize(("raw", "minutes"), [("15", 15), (" 60 ", 60), ("10080", 10080)])
def test_snooze_minutes(raw: str, minutes: int) -> None:
    assert snooze_minutes(raw) == minutes


@pytest.mark.parametrize("raw", [None, "", "0", "-5", "1.5", "10081", "abc"])
def test_snooze_minutes_refused(raw: str | None) -> None:
    with pytest.raises(InvalidInput):
        snooze_minutes(raw)


def test_destination_comes_from_the_redacted_form() -> None:
    assert destination({"url": "https://h.example/…", "email": None}) == "https://h.example/…"
    mail = {"url": None, "email": {"to": ["a@x", "b@x"], "host": "smtp.x", "port": 587}}
    assert destination(mail) == "to a@x, b@x via smtp.x:587"


# --------------------------------------------------------------------------- the page


async def test_the_page_lists_alerts_and_channels_without_their_secrets(
    gw: LiveGateway, orgs: Orgs, admin: Signed, hook: WebhookReceiver
) -> None:
    url = f"http://127.0.0.1:{hook.port}/hook?token={HOOK_TOKEN}"
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.put(
            "/admin/alert-channels/ops-hook",
            json={"type": "webhook", "url": url, "secret": SECRET},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        slack = {"type": "slack", "url": "https://hooks.slack.example" + SLACK_PATH,
                 "min_severity": "critical"}  # fmt: skip
        r = await client.put("/admin/alert-channels/chat", json=slack, headers=AUTH)
        assert r.status_code == 200, r.text
    acme = await raise_threshold_alert(gw, 50, "acme")
    globex = await raise_threshold_alert(gw, 80, "globex")
    for _ in range(100):  # the gateway's delivery loop sends it, signed
        if len(hook.verified) == 2:
            break
        await asyncio.sleep(0.1)
    assert sorted(m["data"]["alert_id"] for m in hook.verified) == sorted([acme.id, globex.id])

    r = await admin.client.get("/dashboard/alerts")
    assert r.status_code == 200, r.text
    html = r.text
    assert 'data-testid="alerts-table"' in html and '<th scope="col">Severity</th>' in html
    assert html.index(f'id="alert-{globex.id}"') < html.index(f'id="alert-{acme.id}"')  # newest
    row = _row(html, acme.id)
    assert _state(html, acme.id) == "firing" and '<span class="badge info">info</span>' in row
    assert acme.title in row and "<td>acme</td>" in row
    assert '<span class="badge warning">warning</span>' in _row(html, globex.id)
    assert "<td>globex</td>" in _row(html, globex.id)
    assert 'data-testid="acknowledge"' in row and 'data-testid="snooze"' in row
    assert '<label for="snooze-' in row
    # the channels, as the admin API shows them: no secret, no credential, no path
    assert 'data-testid="channels-table"' in html and "ops-hook" in html and "chat" in html
    assert f"http://127.0.0.1:{hook.port}/…" in html
    assert "https://hooks.slack.example/…" in html
    for leak in (SECRET, SECRET.removeprefix("whsec_"), HOOK_TOKEN, SLACK_PATH,
                 f"{hook.port}/hook"):  # fmt: skip
        assert leak not in html
    # the delivery log: both alerts went out on the first attempt to the webhook
    log = re.search(r'data-testid="delivery-log" data-channel="ops-hook"(.*?)</table>', html, re.S)
    assert log is not None
    assert log.group(1).count(">delivered</span>") == 2 and "(HTTP 204)" in log.group(1)
    assert 'data-testid="delivery-log" data-channel="chat"' not in html  # critical only

    # filtered by state; a bad state is a 400
    firing = await admin.client.get("/dashboard/alerts", params={"state": "resolved"})
    assert firing.status_code == 200 and 'data-testid="alerts-none"' in firing.text
    bad = await admin.client.get("/dashboard/alerts", params={"state": "burning"})
    assert bad.status_code == 400
    frag = await admin.client.get("/dashboard/alerts/table", headers={"hx-request": "true"})
    assert frag.status_code == 200 and "<html" not in frag.text and acme.id in frag.text


async def test_acknowledge_snooze_and_resolve(gw: LiveGateway, admin: Signed) -> None:
    first = await raise_threshold_alert(gw, 50, "acme")
    second = await raise_threshold_alert(gw, 80, "acme")
    changes = gw.app.events.subscribe(kinds=frozenset({"alert_changed"}))

    r = await admin.post(f"/dashboard/alerts/{first.id}/acknowledge")
    assert r.status_code == 303
    assert r.headers["location"] == f"/dashboard/alerts?done=acknowledge#alert-{first.id}"
    acked = await _get(gw, first.id)
    assert (acked.state, acked.acknowledged_by) == ("acknowledged", "dashboard:admin-token")
    page = await admin.client.get(r.headers["location"])
    assert _state(page.text, first.id) == "acknowledged"
    assert "Alert acknowledged." in page.text
    assert "acknowledged by dashboard:admin-token" in _row(page.text, first.id)
    assert 'data-testid="acknowledge"' not in _row(page.text, first.id)  # done already

    again = await admin.post(f"/dashboard/alerts/{first.id}/acknowledge")
    assert again.status_code == 409 and "already acknowledged" in again.text
    assert await _get(gw, first.id) == acked

    before = datetime.now(UTC)
    r = await admin.post(f"/dashboard/alerts/{second.id}/snooze", {"minutes": "60"})
    assert r.status_code == 303
    snoozed = await _get(gw, second.id)
    assert snoozed.state == "firing" and snoozed.snoozed_until is not None
    until = snoozed.snoozed_until.replace(tzinfo=snoozed.snoozed_until.tzinfo or UTC)
    assert timedelta(minutes=59) < until - before < timedelta(minutes=61)
    page = await admin.client.get("/dashboard/alerts")
    assert 'data-testid="alert-snoozed"' in _row(page.text, second.id)

    for minutes in ("0", "99999", "soon"):
        r = await admin.post(f"/dashboard/alerts/{second.id}/snooze", {"minutes": minutes})
        assert r.status_code == 400
    assert await _get(gw, second.id) == snoozed

    r = await admin.post(f"/dashboard/alerts/{second.id}/resolve")
    assert r.status_code == 303
    assert (await _get(gw, second.id)).state == "resolved"
    missing = await admin.post("/dashboard/alerts/alr_nope/acknowledge")
    assert missing.status_code == 404

    seen = []
    while (event := await changes.get(timeout=3)) is not None:
        seen.append((event.data["alert_id"], event.data["state"]))
        if len(seen) == 3:
            break
    changes.close()
    assert seen == [(first.id, "acknowledged"), (second.id, "firing"), (second.id, "resolved")]
    actor = "dashboard:admin-token"
    assert await _actions(gw) == [
        ("alert.acknowledge", actor, first.id),
        ("alert.snooze", actor, second.id),
        ("alert.resolve", actor, second.id),
    ]


async def test_without_csrf_or_as_a_viewer_nothing_changes(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    alert = await raise_threshold_alert(gw, 50, "acme")
    r = await admin.client.post(f"/dashboard/alerts/{alert.id}/acknowledge")
    assert r.status_code == 403
    for credential in (orgs.acme_viewer, orgs.platform_viewer):
        viewer = await sign_in(gw.base_url, credential)
        try:
            page = await viewer.client.get("/dashboard/alerts")
            assert page.status_code == 200 and _state(page.text, alert.id) == "firing"
            for button in ("acknowledge", "snooze", "resolve"):
                assert f'data-testid="{button}"' not in page.text
            for action, data in (("acknowledge", {}), ("snooze", {"minutes": "15"}),
                                 ("resolve", {})):  # fmt: skip
                r = await viewer.post(f"/dashboard/alerts/{alert.id}/{action}", data)
                assert r.status_code == 403, r.text
        finally:
            await viewer.client.aclose()
    assert await _get(gw, alert.id) == alert
    assert await _actions(gw) == []


async def test_an_org_admin_sees_and_acts_on_its_own_org_only(
    gw: LiveGateway, orgs: Orgs, admin: Signed, hook: WebhookReceiver
) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as client:
        r = await client.put(
            "/admin/alert-channels/ops-hook",
            json={"type": "webhook", "url": hook.url, "secret": SECRET},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
    mine = await raise_threshold_alert(gw, 50, "acme")
    theirs = await raise_threshold_alert(gw, 80, "globex")
    globex_id = await _org_id(gw, "globex")
    platform = await asyncio.to_thread(
        store.raise_alert,
        gw.app.engine,
        threshold_alert(
            LimitThresholdCrossed(
                org_id=None, scope="platform", scope_id=None, window="day", metric="usd",
                threshold_pct=90, used="9", limit="10", window_key="until:1",
            )  # fmt: skip
        ),
    )
    assert platform is not None
    signed = await sign_in(gw.base_url, orgs.acme_admin)
    try:
        page = await signed.client.get("/dashboard/alerts")
        assert page.status_code == 200
        html = page.text
        assert _state(html, mine.id) == "firing" and 'data-testid="acknowledge"' in html
        for other in (theirs.id, theirs.title, globex_id, "globex", platform.id, platform.title):
            assert other not in html
        # no channel: they are the platform's
        assert "ops-hook" not in html and 'data-testid="channels-table"' not in html
        frag = await signed.client.get("/dashboard/alerts/table")
        assert theirs.id not in frag.text and mine.id in frag.text

        for target in (theirs, platform):
            for action, data in (("acknowledge", {}), ("snooze", {"minutes": "15"}),
                                 ("resolve", {})):  # fmt: skip
                r = await signed.post(f"/dashboard/alerts/{target.id}/{action}", data)
                assert r.status_code == 403, r.text
                assert theirs.title not in r.text and globex_id not in r.text
            assert await _get(gw, target.id) == target

        r = await signed.post(f"/dashboard/alerts/{mine.id}/acknowledge")
        assert r.status_code == 303
        acked = await _get(gw, mine.id)
        assert acked.state == "acknowledged"
        assert acked.acknowledged_by is not None
        assert acked.acknowledged_by.startswith("dashboard:admin-key:")
    finally:
        await signed.client.aclose()
    # the platform's view has all three
    everything = (await admin.client.get("/dashboard/alerts")).text
    for alert in (mine, theirs, platform):
        assert f'id="alert-{alert.id}"' in everything
