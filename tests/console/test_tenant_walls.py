"""Tenants are walls on the dashboard: the test walks every route of the dashboard app (it
fails when a route is added without being walked) as acme's org_admin and acme's viewer,
with globex holding real data of every kind -- requests through the gateway, a limit, an org
switch, an alert, a paused agent session with its escalation.

- every page, fragment, the CSV and the live stream: 200 and nothing of globex (name, org
  id, key prefix, alert or escalation id) in what acme's visitors get;
- every change aimed at globex (or platform-wide): 403, and globex's state unchanged;
- acme's viewer: every change, even of acme's own things, 403 and nothing changed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest

from costwarden.alerts.rules import threshold_alert
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.storage import alerts as alert_store
from costwarden.storage import policy, repo
from costwarden.storage import switches as switch_store
from costwarden.storage.sessions import escalation_of
from tests.console.conftest import Orgs, Signed, dashboard_routes, sign_in
from tests.helpers import LiveGateway, pause_session

MODEL = "gpt-4o-mini"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The walk on both databases (the rest of tests/console: SQLite)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/costwarden.db"
    url: str = request.getfixturevalue("pg_url")
    return url
HI = [{"role": "user", "content": "hi"}]


async def _globex(gw: LiveGateway, orgs: Orgs) -> dict[str, str]:
    """Globex's data of every kind; what of it must never show to acme's visitors."""
    engine = gw.app.engine
    org = await asyncio.to_thread(repo.get_org_by_name, engine, "globex")
    assert org is not None
    async with openai.AsyncOpenAI(
        base_url=gw.openai_url, api_key=orgs.globex_key, max_retries=0
    ) as sdk:
        for _ in range(2):
            await sdk.chat.completions.create(model=MODEL, messages=HI)
    escalation = (await pause_session(gw, "globex-agent", orgs.globex_key))[0]
    await asyncio.to_thread(
        policy.set_limits, engine, org="globex", scope="org", subject="",
        amounts={"daily_usd": "7"},
    )  # fmt: skip
    await asyncio.to_thread(
        switch_store.set_switch, engine, org="globex", feature="embeddings", enabled=False,
        message="globex embeddings paused", actor="test",
    )  # fmt: skip
    crossing = LimitThresholdCrossed(
        org_id=org.id, scope="org", scope_id=org.id, window="day", metric="usd",
        threshold_pct=90, used="9", limit="10", window_key="until:1",
    )  # fmt: skip
    alert = await asyncio.to_thread(alert_store.raise_alert, engine, threshold_alert(crossing))
    assert alert is not None
    await gw.app.ledger.flush()
    if gw.app.sessions is not None:
        await gw.app.sessions.flush()
    key = next(k for k in repo.list_keys(engine, "globex"))
    return {
        "name": "globex",
        "org_id": org.id,
        "key_prefix": key.prefix,
        "alert": alert.id,
        "escalation": escalation,
    }


Posts = dict[tuple[str, str], list[tuple[str, dict[str, str]]]]


def _changes(g: dict[str, str], acme: str) -> Posts:
    """Per POST route: the posts acme's org_admin must be refused (globex's or
    platform-wide things)."""
    d = "/dashboard"
    return {
        ("POST", d + "/alerts/{alert_id}/acknowledge"): [
            (f"/alerts/{g['alert']}/acknowledge", {})
        ],
        ("POST", d + "/alerts/{alert_id}/snooze"): [
            (f"/alerts/{g['alert']}/snooze", {"minutes": "60"})
        ],
        ("POST", d + "/alerts/{alert_id}/resolve"): [(f"/alerts/{g['alert']}/resolve", {})],
        ("POST", d + "/limits/set"): [
            ("/limits/set", {"scope": "org", "org": "globex", "limit_name": "daily_usd",
                             "amount": "1000"}),
            ("/limits/set", {"scope": "platform", "org": "", "limit_name": "daily_usd",
                             "amount": "1000"}),
        ],  # fmt: skip
        ("POST", d + "/limits/remove"): [
            ("/limits/remove", {"scope": "org", "org": "globex", "subject": "",
                                "limit_name": "daily_usd"}),
        ],  # fmt: skip
        ("POST", d + "/limits/tier"): [("/limits/tier", {"org": acme, "tier": ""})],
        ("POST", d + "/health/reset"): [("/health/reset", {"deployment": "openai:gpt-4o-mini"})],
        ("POST", d + "/escalations/{escalation_id}/resolve"): [
            (f"/escalations/{g['escalation']}/resolve", {"decision": "approve"})
        ],
        ("POST", d + "/settings/switch"): [
            ("/settings/switch", {"org": "globex", "feature": "embeddings", "enabled": "true"}),
            ("/settings/switch", {"org": "", "feature": "streaming", "enabled": "false"}),
        ],
        ("POST", d + "/settings/emergency"): [
            ("/settings/emergency", {"enabled": "false", "confirm": "disable-all"})
        ],
    }


async def _state(gw: LiveGateway, g: dict[str, str]) -> tuple[object, ...]:
    """Everything the refused changes could have touched."""
    engine = gw.app.engine
    limits = await asyncio.to_thread(policy.load_policy, engine)
    alert = await asyncio.to_thread(alert_store.get_alert, engine, g["alert"])
    escalation = await asyncio.to_thread(escalation_of, engine, g["escalation"])
    _, switches = await asyncio.to_thread(switch_store.load_switches, engine)
    return (
        repr(limits),
        (alert.state, alert.snoozed_until, alert.acknowledged_by),
        escalation.status if escalation else None,
        sorted((s.id, s.enabled, s.message) for s in switches),
        repr(gw.app.breakers.health()),
    )


async def _stream_lines(signed: Signed, gw: LiveGateway, orgs: Orgs) -> str:
    """What the live stream sends acme's visitor while both orgs make requests."""
    got: list[str] = []

    async def read() -> None:
        async with signed.client.stream("GET", "/dashboard/stream") as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                got.append(line)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.3)
    for key in (orgs.globex_key, orgs.acme_key, orgs.globex_key):
        async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=key, max_retries=0) as s:
            await s.chat.completions.create(model=MODEL, messages=HI)
    for _ in range(100):
        if any("acme" in line for line in got):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # globex's events, were they sent, would be here by now
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return "\n".join(got)


async def test_every_route_keeps_acme_inside_its_walls(gw: LiveGateway, orgs: Orgs) -> None:
    g = await _globex(gw, orgs)
    acme = repo.list_orgs(gw.app.engine)[0].name
    assert acme != "globex"
    secrets = [g["name"], g["org_id"], g["key_prefix"], g["alert"], g["escalation"]]
    changes = _changes(g, acme)
    walked: set[tuple[str, str]] = set()

    for credential in (orgs.acme_admin, orgs.acme_viewer):
        signed = await sign_in(gw.base_url, credential)
        try:
            # reads: every page and fragment, the CSV
            gets = {
                "/dashboard/": "/dashboard/", "/dashboard/costs": "/dashboard/costs",
                "/dashboard/costs.csv": "/dashboard/costs.csv",
                "/dashboard/limits": "/dashboard/limits?org=globex",
                "/dashboard/health": "/dashboard/health",
                "/dashboard/health/table": "/dashboard/health/table",
                "/dashboard/alerts": "/dashboard/alerts",
                "/dashboard/alerts/table": "/dashboard/alerts/table",
                "/dashboard/sessions": "/dashboard/sessions",
                "/dashboard/sessions/escalations": "/dashboard/sessions/escalations",
                "/dashboard/security": "/dashboard/security",
                "/dashboard/security/recent": "/dashboard/security/recent",
                "/dashboard/settings": "/dashboard/settings",
                "/dashboard/sign-in": "/dashboard/sign-in",
            }  # fmt: skip
            for template, path in gets.items():
                r = await signed.client.get(path)
                assert r.status_code in (200, 403), (path, r.status_code)
                for secret in secrets:
                    assert secret not in r.text, (credential[:8], path, secret)
                walked.add(("GET", template))
            lines = await _stream_lines(signed, gw, orgs)
            assert "acme" in lines
            for secret in secrets:
                assert secret not in lines
            walked.add(("GET", "/dashboard/stream"))

            # changes: refused, nothing changed
            before = await _state(gw, g)
            for route, posts in changes.items():
                for path, data in posts:
                    r = await signed.post("/dashboard" + path, data)
                    assert r.status_code == 403, (credential[:8], path, r.status_code, r.text)
                    for secret in secrets:
                        assert secret not in r.text
                walked.add(route)
            assert await _state(gw, g) == before
        finally:
            out = await signed.post("/dashboard/sign-out")
            assert out.status_code == 303
            walked.add(("POST", "/dashboard/sign-out"))
            await signed.client.aclose()
    walked.add(("POST", "/dashboard/sign-in"))  # sign_in itself
    assert walked == dashboard_routes(), f"not walked: {dashboard_routes() - walked}"


async def test_acmes_viewer_changes_nothing_even_of_acme(gw: LiveGateway, orgs: Orgs) -> None:
    engine = gw.app.engine
    acme = repo.list_orgs(engine)[0].name
    viewer = await sign_in(gw.base_url, orgs.acme_viewer)
    try:
        before = await asyncio.to_thread(policy.load_policy, engine)
        for path, data in (
            ("/limits/set", {"scope": "org", "org": acme, "limit_name": "daily_usd",
                             "amount": "1"}),
            ("/settings/switch", {"org": acme, "feature": "embeddings", "enabled": "false"}),
        ):  # fmt: skip
            r = await viewer.post("/dashboard" + path, data)
            assert r.status_code == 403 and "viewer" in r.text
        assert repr(await asyncio.to_thread(policy.load_policy, engine)) == repr(before)
        _, switches = await asyncio.to_thread(switch_store.load_switches, engine)
        assert switches == []
        page = await viewer.client.get("/dashboard/limits")
        assert page.status_code == 200 and 'data-testid="set-limit"' not in page.text
    finally:
        await viewer.client.aclose()


async def test_the_csv_of_an_org_admin_holds_its_org_only(gw: LiveGateway, orgs: Orgs) -> None:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        assert (await c.get("/dashboard/costs.csv")).status_code == 303
    g = await _globex(gw, orgs)
    admin = await sign_in(gw.base_url, orgs.acme_admin)
    try:
        r = await admin.client.get("/dashboard/costs.csv")
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        assert g["name"] not in r.text and g["org_id"] not in r.text
    finally:
        await admin.client.aclose()
