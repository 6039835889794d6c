"""Signing in and out of the dashboard, the session cookie and CSRF: bad credentials,
forged and expired cookies, missing CSRF tokens -> sign-in or 403, nothing changed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from costwarden.mock import MockServer
from costwarden.storage.admin_keys import find_admin_key, revoke_admin_key
from tests.console.conftest import TOKEN, Orgs, Signed, sign_in
from tests.helpers import LiveGateway, live_gateway


async def test_a_visitor_without_a_session_is_sent_to_sign_in(gw: LiveGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.get("/dashboard/?since=7d")
        assert r.status_code == 303
        assert r.headers["location"] == "/dashboard/sign-in?next=/dashboard/%3Fsince%3D7d"
        page = await c.get(r.headers["location"])
        assert page.status_code == 200
        assert 'name="credential"' in page.text and "<label" in page.text
        # htmx fragments are told where to go instead of being handed the sign-in page
        frag = await c.get("/dashboard/", headers={"hx-request": "true"})
        assert frag.status_code == 401 and frag.headers["hx-redirect"].startswith(
            "/dashboard/sign-in"
        )


async def test_sign_in_sets_a_hardened_cookie_and_never_shows_the_credential(
    gw: LiveGateway,
) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.post("/dashboard/sign-in", data={"credential": TOKEN, "next": "/dashboard/"})
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/"
        cookie = r.headers["set-cookie"]
        for part in ("HttpOnly", "SameSite=Strict", "Path=/dashboard", "Max-Age=28800"):
            assert part in cookie
        assert TOKEN not in cookie
        page = await c.get("/dashboard/")
        assert page.status_code == 200 and TOKEN not in page.text
        assert "platform_admin" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp


async def test_a_wrong_credential_is_refused_alike(gw: LiveGateway, orgs: Orgs) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        for wrong in ("nope", TOKEN + "x", "cwa-" + "A" * 43, orgs.acme_key, "a.b.c"):
            r = await c.post("/dashboard/sign-in", data={"credential": wrong})
            assert r.status_code == 401
            assert "does not sign anyone in" in r.text
            assert "set-cookie" not in r.headers
            assert wrong not in r.text


async def test_next_never_leaves_the_dashboard(gw: LiveGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        for target in ("https://evil.example/", "//evil.example/", "/admin/keys", "/\\evil"):
            r = await c.post("/dashboard/sign-in", data={"credential": TOKEN, "next": target})
            assert r.headers["location"] == "/dashboard/"


async def test_forged_and_tampered_cookies_send_to_sign_in(gw: LiveGateway) -> None:
    signed = await sign_in(gw.base_url, TOKEN)
    try:
        good = signed.client.cookies["costwarden_session"]
        payload, stamp, sig = good.rsplit(".", 2)
        middle = len(payload) // 2
        other = "A" if payload[middle] != "A" else "B"
        for forged in (
            f"{payload[:middle]}{other}{payload[middle + 1:]}.{stamp}.{sig}",
            f"{payload}.{stamp}.{'A' * len(sig)}",
            "garbage",
        ):
            async with httpx.AsyncClient(
                base_url=gw.base_url, cookies={"costwarden_session": forged}
            ) as c:
                r = await c.get("/dashboard/")
                assert r.status_code == 303 and "/dashboard/sign-in" in r.headers["location"]
    finally:
        await signed.client.aclose()


async def test_an_expired_session_sends_to_sign_in(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    now = [time.time()]
    async with live_gateway(
        mock, database_url, tmp_path, admin_token=TOKEN, clock=lambda: now[0]
    ) as gw:
        signed = await sign_in(gw.base_url, TOKEN)
        try:
            now[0] += 8 * 3600 - 5
            assert (await signed.client.get("/dashboard/")).status_code == 200
            now[0] += 10
            r = await signed.client.get("/dashboard/")
            assert r.status_code == 303 and "/dashboard/sign-in" in r.headers["location"]
        finally:
            await signed.client.aclose()


async def test_a_form_without_its_csrf_token_changes_nothing(admin: Signed) -> None:
    for data in ({}, {"_csrf": "A" * 43}, {"_csrf": admin.csrf[:-1]}):
        r = await admin.client.post("/dashboard/sign-out", data=data)
        # refused: the session is not ended (a cross-site form cannot sign anyone out)
        assert r.status_code == 403 and "CSRF" in r.text
        assert "set-cookie" not in r.headers
        assert (await admin.client.get("/dashboard/")).status_code == 200


async def test_a_revoked_admin_key_ends_its_sessions(gw: LiveGateway, orgs: Orgs) -> None:
    signed = await sign_in(gw.base_url, orgs.acme_admin)
    try:
        page = await signed.client.get("/dashboard/")
        assert page.status_code == 200 and "org_admin" in page.text
        record = find_admin_key(gw.app.engine, orgs.acme_admin)
        assert record is not None
        revoke_admin_key(gw.app.engine, record.id, actor="test")
        r = await signed.client.get("/dashboard/")
        assert r.status_code == 303 and "/dashboard/sign-in" in r.headers["location"]
        again = await signed.client.post(
            "/dashboard/sign-in", data={"credential": orgs.acme_admin}
        )
        assert again.status_code == 401
    finally:
        await signed.client.aclose()


async def test_sign_out_clears_the_cookie(admin: Signed) -> None:
    r = await admin.post("/dashboard/sign-out")
    assert r.status_code == 303
    assert "Max-Age=0" in r.headers["set-cookie"]
    after = await admin.client.get("/dashboard/")
    assert after.status_code == 303


async def test_an_unknown_dashboard_path_is_a_page(admin: Signed) -> None:
    r = await admin.client.get("/dashboard/nowhere")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Not found" in r.text and 'aria-label="Dashboard pages"' in r.text
    r = await admin.client.delete("/dashboard/costs")
    assert r.status_code == 405 and "Not allowed" in r.text
