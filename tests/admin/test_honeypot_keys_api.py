"""Honeypot keys through the admin API (SQLite and PostgreSQL): made like any other key (the
same form and length, the same prefix), listed with the others but marked; bad input is the
API's 400 and creates nothing (no key, no org)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from costwarden.storage import repo
from tests.admin.conftest import AUTH
from tests.helpers import LiveGateway

KEY_FORM = re.compile(r"^cw-[A-Za-z0-9_-]{43}$")


async def _create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/admin/keys", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


async def test_a_honeypot_key_is_made_and_listed_like_any_other_but_marked(
    client: httpx.AsyncClient, gw: LiveGateway
) -> None:
    plain = await _create(client, org="acme", name="deploy")
    trap = await _create(client, org="acme", name="wiki", honeypot=True)
    fuse = await _create(
        client, org="acme", project="web", honeypot=True, honeypot_action="switch_off_org"
    )
    for made in (plain, trap, fuse):
        assert KEY_FORM.match(made["key"]) and made["prefix"] == made["key"][:10]
        assert set(made) == set(plain)  # the same fields, whatever the kind
    assert len({len(m["key"]) for m in (plain, trap, fuse)}) == 1
    assert (plain["honeypot"], plain["honeypot_action"]) == (False, None)
    assert (trap["honeypot"], trap["honeypot_action"]) == (True, "alert")
    assert (fuse["honeypot"], fuse["honeypot_action"]) == (True, "switch_off_org")
    assert fuse["project"] == "web"

    listed = (await client.get("/admin/keys", params={"org": "acme"}, headers=AUTH)).json()
    by_id = {k["id"]: k for k in listed["data"]}
    for made in (plain, trap, fuse):
        shown = by_id[made["id"]]
        assert shown == {k: v for k, v in made.items() if k != "key"}
        assert "key" not in shown
    for made in (plain, trap, fuse):
        assert made["key"] not in str(listed)
    # In the gateway's key cache at once, as a honeypot.
    cached = gw.app.keys.lookup(fuse["key"])
    assert cached is not None and cached.honeypot and cached.honeypot_action == "switch_off_org"
    # Revoked like any other key, and still marked.
    revoked = await client.post(f"/admin/keys/{trap['id']}/revoke", headers=AUTH)
    assert revoked.json()["honeypot"] is True and revoked.json()["revoked_at"]


@pytest.mark.parametrize(
    "body",
    [
        {"honeypot": "yes"},
        {"honeypot": 1},
        {"honeypot": None},
        {"honeypot": True, "honeypot_action": "nuke"},
        {"honeypot": True, "honeypot_action": "ALERT"},
        {"honeypot": True, "honeypot_action": 5},
        {"honeypot": True, "honeypot_action": ["alert"]},
        {"honeypot_action": "switch_off_org"},  # not a honeypot
        {"honeypot": False, "honeypot_action": "alert"},
        {"honeypot": True, "honeypot_actions": "alert"},  # unknown field
    ],
)
async def test_bad_honeypot_input_is_400_and_creates_nothing(
    client: httpx.AsyncClient, gw: LiveGateway, body: dict[str, Any]
) -> None:
    before_keys = await asyncio.to_thread(repo.list_keys, gw.app.engine)
    r = await client.post("/admin/keys", json={"org": "fresh-org", **body}, headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and "honeypot" in error["message"]
    assert "cw-" not in r.text
    assert await asyncio.to_thread(repo.list_keys, gw.app.engine) == before_keys
    assert await asyncio.to_thread(repo.get_org_by_name, gw.app.engine, "fresh-org") is None
    assert len(gw.app.keys) == len(before_keys)
