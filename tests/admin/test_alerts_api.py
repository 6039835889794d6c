"""The alerts admin API: list, show with the delivery log, acknowledge / snooze / resolve
(audited with who, published as alert_changed), and the errors of each."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from costwarden.storage import alerts as store
from costwarden.storage import repo
from costwarden.storage.audit import audit_entries
from tests.admin.conftest import AUTH
from tests.helpers import LiveGateway, raise_threshold_alert


async def test_list_show_and_act_with_who_and_when(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    first = await raise_threshold_alert(gw, 50)
    second = await raise_threshold_alert(gw, 80)
    changes = gw.app.events.subscribe(kinds=frozenset({"alert_changed"}))
    listed = (await client.get("/admin/alerts", headers=AUTH)).json()["data"]
    assert [a["id"] for a in listed] == [second.id, first.id]
    org = (await asyncio.to_thread(repo.list_orgs, gw.app.engine))[0].name
    by_org = await client.get("/admin/alerts", params={"org": org, "state": "firing"},
                              headers=AUTH)
    assert len(by_org.json()["data"]) == 2
    shown = (await client.get(f"/admin/alerts/{first.id}", headers=AUTH)).json()
    assert shown["threshold_pct"] == 50 and shown["deliveries"] == []

    r = await client.post(f"/admin/alerts/{first.id}/acknowledge", json={"actor": "alice"},
                          headers=AUTH)
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["acknowledged_by"]) == ("acknowledged", "alice")
    again = await client.post(f"/admin/alerts/{first.id}/acknowledge", headers=AUTH)
    assert again.status_code == 409 and "alice" in again.json()["error"]["message"]
    snoozed = await client.post(f"/admin/alerts/{second.id}/snooze", json={"minutes": 30},
                                headers=AUTH)
    assert snoozed.status_code == 200 and snoozed.json()["snoozed_until"]
    resolved = await client.post(f"/admin/alerts/{second.id}/resolve", headers=AUTH)
    assert (resolved.status_code, resolved.json()["state"]) == (200, "resolved")
    assert resolved.json()["resolved_by"] == "admin-api"

    seen = []
    while (event := await changes.get(timeout=3)) is not None:
        seen.append((event.payload.alert_id, event.payload.state))  # type: ignore[attr-defined]
        if len(seen) == 3:
            break
    changes.close()
    assert seen == [
        (first.id, "acknowledged"),
        (second.id, "firing"),  # a snooze changes no state
        (second.id, "resolved"),
    ]
    trail = [
        (e.action, e.actor, e.target)
        for e in reversed(await asyncio.to_thread(audit_entries, gw.app.engine, limit=20))
        if e.action.startswith("alert.") and e.action != "alert.fired"
    ]
    assert trail == [
        ("alert.acknowledge", "alice", first.id),
        ("alert.snooze", "admin-api", second.id),
        ("alert.resolve", "admin-api", second.id),
    ]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/admin/alerts?state=burning", None, 400),
        ("GET", "/admin/alerts?limit=0", None, 400),
        ("GET", "/admin/alerts?org=nope", None, 404),
        ("GET", "/admin/alerts/alr_nope", None, 404),
        ("POST", "/admin/alerts/alr_nope/resolve", None, 404),
        ("POST", "/admin/alerts/{id}/snooze", {}, 400),
        ("POST", "/admin/alerts/{id}/snooze", {"minutes": 0}, 400),
        ("POST", "/admin/alerts/{id}/snooze", {"minutes": True}, 400),
        ("POST", "/admin/alerts/{id}/acknowledge", {"actor": "  "}, 400),
        ("POST", "/admin/alerts/{id}/acknowledge", {"by": "x"}, 400),
    ],
)
async def test_bad_input_changes_nothing(
    gw: LiveGateway, client: httpx.AsyncClient, method: str, path: str,
    body: dict[str, object] | None, status: int,
) -> None:  # fmt: skip
    alert = await raise_threshold_alert(gw, 50)
    r = await client.request(method, path.format(id=alert.id), json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]
    after = await asyncio.to_thread(store.get_alert, gw.app.engine, alert.id)
    assert after == alert
    assert (await client.get("/admin/alerts")).status_code == 401
