"""Who a change is audited as: the admin token is shared, so the ``actor`` its body names is
taken as given; an admin key is a known identity that a body cannot replace -- the name it
gives is kept beside the key's id."""

from __future__ import annotations

import asyncio

import httpx

from costwarden.storage import repo
from costwarden.storage.admin_keys import create_admin_key
from costwarden.storage.audit import audit_entries
from tests.admin.conftest import AUTH
from tests.helpers import LiveGateway, raise_threshold_alert


async def test_an_admin_key_cannot_pass_for_someone_else(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    org = repo.list_orgs(gw.app.engine)[0].name
    key, record = create_admin_key(gw.app.engine, role="org_admin", org=org, actor="test")
    first = await raise_threshold_alert(gw, 80)
    second = await raise_threshold_alert(gw, 90)
    as_key = {"authorization": f"Bearer {key}"}
    r = await client.post(
        f"/admin/alerts/{first.id}/acknowledge", json={"actor": "admin-api"}, headers=as_key
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        f"/admin/alerts/{second.id}/acknowledge", json={"actor": "ana (on call)"}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    entries = await asyncio.to_thread(audit_entries, gw.app.engine, limit=10)
    actors = {e.target: e.actor for e in entries if e.action == "alert.acknowledge"}
    assert actors == {
        first.id: f"admin-key:{record.id} for admin-api",
        second.id: "ana (on call)",
    }
    r = await client.post(
        f"/admin/alerts/{first.id}/resolve", json={"actor": "x\u0007"}, headers=as_key
    )
    assert r.status_code == 400


async def test_an_actor_named_null_is_refused_and_nothing_changes(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    alert = await raise_threshold_alert(gw, 80)
    for path in (f"/admin/alerts/{alert.id}/acknowledge", "/admin/breakers/nowhere/reset"):
        r = await client.post(path, json={"actor": None}, headers=AUTH)
        assert r.status_code == 400, (path, r.text)
        assert "actor" in r.json()["error"]["message"]
    r = await client.post(f"/admin/alerts/{alert.id}/acknowledge", json={}, headers=AUTH)
    assert r.status_code == 200, r.text  # no actor named: the principal itself
    entries = await asyncio.to_thread(audit_entries, gw.app.engine, limit=10)
    assert [e.actor for e in entries if e.action == "alert.acknowledge"] == ["admin-api"]
