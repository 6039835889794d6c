"""The dashboard in Chromium against a live gateway with real traffic (the openai SDK through
the gateway to the mock upstream): every page signed in and used, with a screenshot of each
for docs/screenshots; a limit set on the limits page refusing the org's next request; the
emergency stop behind its confirmation dialog answering 503 and switching an app's banner to
disabled; an alert acknowledged; an escalation raised while two browsers watch, approved in
one and gone from the other without a reload; every page's controls labelled and its
skip link and navigation reachable by keyboard."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import httpx
import openai
import pytest
from playwright.async_api import Browser, Page, expect

from costwarden.console.render import PAGES, money
from costwarden.storage import alerts as alert_store
from costwarden.storage import repo
from costwarden.storage.sessions import escalation_of
from tests.browser.app_page import app_site
from tests.browser.conftest import ADMIN, VIEWPORT, WAIT_MS, Screenshot, Serve, sign_in
from tests.helpers import LiveGateway, ledger_row, pause_session, raise_threshold_alert

pytestmark = pytest.mark.serial

MODEL = "gpt-4o-mini"
MESSAGE = "AI is paused while we investigate a billing problem."


async def _globex_key(gw: LiveGateway) -> str:
    async with httpx.AsyncClient(base_url=gw.base_url, headers=ADMIN) as admin:
        r = await admin.post("/admin/keys", json={"org": "globex", "name": "globex-app"})
    assert r.status_code == 201, r.text
    key: str = r.json()["key"]
    return key


async def _traffic(gw: LiveGateway, key: str, n: int) -> Decimal:
    """``n`` chat completions with ``key``; the exact cost the ledger holds for them."""
    total = Decimal(0)
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=key, max_retries=0) as sdk:
        for i in range(n):
            raw = await sdk.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": f"hello {i}"}], max_tokens=20
            )
            assert raw.parse().choices[0].message.content
            row = await ledger_row(gw, raw.headers["x-request-id"])
            total += row.cost_usd
    return total


async def _org_of(gw: LiveGateway) -> str:
    orgs = await asyncio.to_thread(repo.list_orgs, gw.app.engine)
    return orgs[0].name


async def test_every_page_with_real_traffic(
    gw: LiveGateway, page: Page, screenshot: Screenshot
) -> None:
    globex = await _globex_key(gw)
    acme = await _org_of(gw)
    async with httpx.AsyncClient(base_url=gw.base_url, headers=ADMIN) as admin:
        for org, daily in ((acme, "5"), ("globex", "2.50")):
            r = await admin.put(
                "/admin/limits",
                json={"org": org, "scope": "org", "limits": {"daily_usd": daily}},
            )
            assert r.status_code == 200, r.text
    cost = await _traffic(gw, gw.key, 3) + await _traffic(gw, globex, 2)
    await raise_threshold_alert(gw, 80, acme)
    await sign_in(page, gw.base_url)

    # overview: the 24 h figures are the ledger's, to the nano-dollar
    await expect(page.get_by_test_id("requests-24h")).to_have_text("5")
    await expect(page.get_by_test_id("cost-24h")).to_have_text(money(cost))
    await expect(page.get_by_test_id("service-status")).to_have_text("ok")
    await screenshot(page, "overview")

    # live activity: a request made now appears in the feed without a reload
    await _traffic(gw, globex, 1)
    feed = page.get_by_test_id("activity")
    await expect(feed.locator("tr").first).to_contain_text("globex", timeout=WAIT_MS)
    await expect(feed).to_contain_text("request_settled")

    async def visit(sub: str, heading: str, name: str) -> None:
        nav = page.get_by_role("navigation", name="Dashboard pages")
        await nav.get_by_role("link", name=heading, exact=True).click()
        await page.wait_for_url(gw.base_url + "/dashboard" + sub)
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        await screenshot(page, name)

    await visit("/costs", "Cost analytics", "costs")
    await expect(page.locator("canvas").first).to_be_visible()
    assert await page.evaluate("() => typeof Chart !== 'undefined'")
    await expect(page.get_by_text("globex").first).to_be_visible()
    await visit("/limits", "Budgets and limits", "limits")
    await expect(page.get_by_test_id("set-limit-form")).to_be_visible()
    await visit("/health", "Service health", "health")
    await expect(page.get_by_text("openai:gpt-4o-mini").first).to_be_visible()
    await visit("/alerts", "Alerts", "alerts")
    await expect(page.get_by_test_id("alert-row")).to_have_count(1)
    await visit("/sessions", "Agent sessions", "sessions")
    await visit("/security", "Security", "security")
    await visit("/settings", "Settings", "settings")
    await expect(page.get_by_test_id("ai-state")).to_have_text("enabled")
    # no secret on any page: not the admin token, not a virtual key
    for secret in ("adm-browser", gw.key, globex):
        assert secret not in await page.content()


async def test_a_limit_set_on_the_page_refuses_the_next_request(
    gw: LiveGateway, page: Page
) -> None:
    globex = await _globex_key(gw)
    await _traffic(gw, globex, 1)
    await sign_in(page, gw.base_url)
    await page.goto(gw.base_url + "/dashboard/limits")
    form = page.get_by_test_id("set-limit-form")
    await form.get_by_label("Applies to").select_option("org")
    await form.get_by_label("Org", exact=True).select_option("globex")
    await form.get_by_label("Limit", exact=True).select_option("daily_usd")
    await form.get_by_label(re.compile(r"^Amount")).fill("0.000001")
    await form.get_by_test_id("set-limit").click()
    row = page.locator('[data-testid="limit-row"][data-org="globex"][data-limit="daily_usd"]')
    await expect(row).to_have_count(1, timeout=WAIT_MS)
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=globex, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as refused:
            await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=20
            )
    assert refused.value.status_code == 402
    # the org without the limit is served
    assert await _traffic(gw, gw.key, 1) > 0


async def test_the_emergency_stop_refuses_every_request_and_shows_the_banner(
    gw: LiveGateway, page: Page, serve: Serve, screenshot: Screenshot
) -> None:
    site = await app_site(serve, gw.base_url, gw.key)
    banner_page = await page.context.new_page()
    await banner_page.goto(site)
    banner = banner_page.locator("costwarden-banner")
    await expect(banner).to_have_attribute("status", "ok", timeout=WAIT_MS)

    await sign_in(page, gw.base_url)
    await page.goto(gw.base_url + "/dashboard/settings")
    dialog = page.locator("#emergency-dialog")
    await expect(dialog).to_be_hidden()
    await page.get_by_test_id("emergency-disable").click()
    await expect(dialog).to_be_visible()
    # cancelling changes nothing
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(dialog).to_be_hidden()
    assert await _traffic(gw, gw.key, 1) > 0

    await page.get_by_test_id("emergency-disable").click()
    await page.get_by_test_id("emergency-message").fill(MESSAGE)
    await screenshot(page, "settings-confirm")
    await page.get_by_test_id("emergency-confirm").click()
    await expect(page.get_by_test_id("ai-state")).to_have_text("disabled", timeout=WAIT_MS)

    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as refused:
            await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=20
            )
    assert refused.value.status_code == 503 and MESSAGE in str(refused.value)
    await expect(banner).to_have_attribute("status", "disabled", timeout=WAIT_MS)
    await expect(banner.locator("[role=status]")).to_have_text(MESSAGE)

    await page.goto(gw.base_url + "/dashboard/")
    await expect(page.get_by_test_id("service-status")).to_have_text("disabled")
    await page.goto(gw.base_url + "/dashboard/settings")
    await page.get_by_test_id("emergency-enable").click()
    await expect(page.get_by_test_id("ai-state")).to_have_text("enabled", timeout=WAIT_MS)
    await expect(banner).to_have_attribute("status", "ok", timeout=WAIT_MS)
    assert await _traffic(gw, gw.key, 1) > 0


async def test_an_alert_acknowledged_on_the_page(gw: LiveGateway, page: Page) -> None:
    alert = await raise_threshold_alert(gw, 90)
    await sign_in(page, gw.base_url)
    await page.goto(gw.base_url + "/dashboard/alerts")
    row = page.locator(f"#alert-{alert.id}")
    await expect(row.get_by_test_id("alert-state")).to_have_text("firing")
    await row.get_by_test_id("acknowledge").click()
    row = page.locator(f"#alert-{alert.id}")
    await expect(row.get_by_test_id("alert-state")).to_have_text(
        "acknowledged", timeout=WAIT_MS
    )
    stored = await asyncio.to_thread(alert_store.get_alert, gw.app.engine, alert.id)
    assert stored.state == "acknowledged" and stored.acknowledged_by
    assert stored.acknowledged_by.startswith("dashboard:")


async def test_an_escalation_approved_in_one_browser_leaves_the_other_live(
    gw: LiveGateway, browser: Browser, screenshot: Screenshot
) -> None:
    first = await browser.new_context(viewport=VIEWPORT)
    second = await browser.new_context(viewport=VIEWPORT)
    try:
        one, two = await first.new_page(), await second.new_page()
        for each in (one, two):
            await sign_in(each, gw.base_url)
            await each.goto(gw.base_url + "/dashboard/sessions")
        # raised while both pages are open: it appears in both without a reload
        escalation, _ = await pause_session(gw, "agent-7")
        for each in (one, two):
            row = each.get_by_test_id(f"escalation-{escalation}")
            await expect(row).to_be_visible(timeout=WAIT_MS)
        await screenshot(one, "sessions-escalation")

        await one.get_by_test_id(f"approve-{escalation}").click()
        await expect(one.get_by_test_id(f"escalation-{escalation}")).to_have_count(
            0, timeout=WAIT_MS
        )
        # the other browser did nothing: the stream told its fragment to reload
        await expect(two.get_by_test_id(f"escalation-{escalation}")).to_have_count(
            0, timeout=WAIT_MS
        )
        stored = await asyncio.to_thread(escalation_of, gw.app.engine, escalation)
        assert stored is not None and stored.status == "approved"
        # the session runs again
        assert await _traffic(gw, gw.key, 1) > 0
    finally:
        await first.close()
        await second.close()


async def test_every_page_is_labelled_and_keyboard_usable(gw: LiveGateway, page: Page) -> None:
    await sign_in(page, gw.base_url)
    for sub, label in PAGES:
        await page.goto(gw.base_url + "/dashboard" + sub)
        # every form control a person fills has a label (or an aria-label)
        unlabelled = await page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                .filter(c => c.type !== 'hidden')
                .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label'))
                .map(c => c.name || c.id)"""
        )
        assert unlabelled == [], (label, unlabelled)
        # the first Tab reaches "Skip to content", which moves focus into the page's main
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
        await page.keyboard.press("Enter")
        await expect(page.locator("main")).to_be_focused()
    # the keyboard reaches the header, then the navigation's links in order, and follows them
    await page.goto(gw.base_url + "/dashboard/")
    await page.keyboard.press("Tab")  # the skip link
    await page.keyboard.press("Tab")  # the brand
    names = []
    for _ in range(3):  # the sign-out button, then the first two pages of the navigation
        await page.keyboard.press("Tab")
        names.append(await page.evaluate("document.activeElement.textContent.trim()"))
    assert names == ["Sign out", "Overview", "Cost analytics"]
    await page.keyboard.press("Enter")
    await page.wait_for_url(gw.base_url + "/dashboard/costs")
