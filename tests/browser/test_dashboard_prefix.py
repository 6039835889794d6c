"""The dashboard served under a reverse proxy's prefix (``[server] root_path =
"/costwarden"``), in Chromium: sign-in, then every page of the navigation, each link and
asset (stylesheet, htmx, Chart.js, the dashboard's script) loaded through the prefix, the live
stream connected through it; nothing requested outside the prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, Response, expect

from costwarden.console.render import PAGES
from costwarden.mock import MockServer
from tests.browser.conftest import ADMIN_TOKEN, WAIT_MS, Proxy
from tests.helpers import live_gateway

pytestmark = pytest.mark.serial

PREFIX = "/costwarden"


async def test_every_link_and_asset_works_under_a_prefix(
    mock: MockServer, tmp_path: Path, proxy: Proxy, page: Page
) -> None:
    async with live_gateway(
        mock,
        f"sqlite:///{tmp_path}/prefix.db",
        tmp_path,
        admin_token=ADMIN_TOKEN,
        env={"COSTWARDEN_ROOT_PATH": PREFIX},
    ) as gw:
        base = await proxy(PREFIX.strip("/"), gw.base_url)
        origin = base.removesuffix(PREFIX)
        seen: list[Response] = []
        page.on("response", lambda response: seen.append(response))

        await page.goto(base + "/dashboard/")
        # not signed in: the sign-in page, under the prefix
        await expect(page).to_have_url(f"{base}/dashboard/sign-in?next={PREFIX}/dashboard/")
        await page.get_by_label("Credential").fill(ADMIN_TOKEN)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page).to_have_url(base + "/dashboard/")
        cookies = await page.context.cookies()
        assert [c["path"] for c in cookies if c["name"] == "costwarden_session"] == [
            PREFIX + "/dashboard"
        ]
        # htmx and its SSE extension loaded through the prefix, the stream open
        await page.wait_for_function("() => window.htmx !== undefined", timeout=WAIT_MS)

        nav = page.get_by_role("navigation", name="Dashboard pages")
        for sub, label in PAGES:
            await nav.get_by_role("link", name=label, exact=True).click()
            want = base + "/dashboard" + ("/" if sub == "/" else sub)
            await expect(page).to_have_url(want)
            await expect(page.get_by_role("heading", level=1)).to_have_text(label)
            link = nav.get_by_role("link", name=label, exact=True)
            await expect(link).to_have_attribute("aria-current", "page")

        # every request the pages made went through the prefix and succeeded
        assert seen
        for response in seen:
            url = response.url
            assert url.startswith(base + "/"), f"requested outside the prefix: {url}"
            assert response.status < 400, f"{response.status} for {url}"
        fetched = {r.url.removeprefix(origin) for r in seen}
        for asset in (
            "/dashboard/static/dashboard/dashboard.css",
            "/dashboard/static/dashboard/dashboard.js",
            "/dashboard/static/vendor/htmx-2.0.11.min.js",
            "/dashboard/static/vendor/htmx-ext-sse-2.2.4.min.js",
        ):
            assert PREFIX + asset in fetched, asset
        assert PREFIX + "/dashboard/stream" in fetched
