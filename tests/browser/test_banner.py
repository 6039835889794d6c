"""The degradation banner (``<costwarden-banner>``, served by the gateway as
``/v1/costwarden/banner.js``) in Chromium, on an app's page of another origin: hidden while
the status is ok, the operator's emergency message within seconds of the global kill switch
(while the SDK's calls get 503), hidden again once the switch is back on.

Writes docs/screenshots/banner-disabled.png (the disabled banner on an app's page, for the
docs)."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from playwright.async_api import Page, expect

from tests.browser.app_page import app_site
from tests.browser.conftest import ADMIN, WAIT_MS, Screenshot, Serve
from tests.helpers import LiveGateway

pytestmark = pytest.mark.serial

MESSAGE = "The assistant is paused for maintenance. Back at 3 pm."
HI = [{"role": "user", "content": "hi"}]

async def _app_key(gw: LiveGateway) -> str:
    """A new org's virtual key for the browser, made through the admin API."""
    async with httpx.AsyncClient(base_url=gw.base_url, headers=ADMIN) as admin:
        r = await admin.post("/admin/keys", json={"org": "acme-web", "name": "banner"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["org"] == "acme-web"
    key: str = body["key"]
    return key


async def _kill_switch(gw: LiveGateway, *, on: bool) -> None:
    """The global kill switch (feature ``ai``, platform-wide) through the admin API."""
    if on:
        body = {"feature": "ai", "enabled": False, "message": MESSAGE, "confirm": "disable-all"}
    else:
        body = {"feature": "ai", "enabled": True}
    async with httpx.AsyncClient(base_url=gw.base_url, headers=ADMIN) as admin:
        r = await admin.put("/admin/switches", json=body)
    assert r.status_code == 200, r.text
    assert (r.json()["org"], r.json()["enabled"]) == (None, not on)


async def test_the_kill_switch_shows_and_hides_the_banner(
    gw: LiveGateway, serve: Serve, page: Page, screenshot: Screenshot
) -> None:
    key = await _app_key(gw)
    site = await app_site(serve, gw.base_url, key)
    assert site != gw.base_url
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=key, max_retries=0) as sdk:
        answer = await sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert answer.choices[0].message.content

        await page.goto(site)
        banner = page.locator("costwarden-banner")
        box = banner.locator("[role=status]")  # in its open shadow root
        await expect(banner).to_have_attribute("status", "ok", timeout=WAIT_MS)
        await expect(box).to_be_hidden()

        await _kill_switch(gw, on=True)
        await expect(banner).to_have_attribute("status", "disabled", timeout=WAIT_MS)
        await expect(box).to_be_visible()
        await expect(box).to_have_text(MESSAGE)
        await expect(box).to_have_class(re.compile(r"\bdisabled\b"))
        await expect(box).to_have_attribute("aria-live", "assertive")
        await screenshot(page, "banner-disabled")
        with pytest.raises(openai.APIStatusError) as refused:
            await sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert refused.value.status_code == 503
        assert MESSAGE in str(refused.value)

        await _kill_switch(gw, on=False)
        await expect(banner).to_have_attribute("status", "ok", timeout=WAIT_MS)
        await expect(box).to_be_hidden()
        assert await page.evaluate("window.statuses") == ["ok", "disabled", "ok"]
        again = await sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
        assert again.choices[0].message.content
