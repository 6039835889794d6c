"""Fixtures of the real-browser tests: Debian's Chromium (``/usr/bin/chromium``, which
scripts/test.sh installs) driven by Playwright's async API, a live gateway with an admin
token, loopback servers for the pages, a reverse proxy that serves an app under a path prefix,
and screenshots for the docs.

Every browser test is marked ``serial`` (``pytestmark = pytest.mark.serial``): Chromium takes
a core of its own, so they run one at a time after the parallel phase.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright
from starlette.types import ASGIApp

from costwarden.mock import MockServer
from tests.browser.prefix_proxy import prefix_proxy, serve_asgi
from tests.helpers import LiveGateway, live_gateway

CHROMIUM = "/usr/bin/chromium"
# As root on a machine whose network is closed: no sandbox (it needs an unprivileged user),
# and none of Chromium's own calls home (without these they pile up, refused). Playwright
# gives every launch a fresh, temporary --user-data-dir.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
ADMIN_TOKEN = "adm-browser"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
# How long a page may take to show what a test waits for (ms).
WAIT_MS = 10_000

Serve = Callable[[ASGIApp], Awaitable[str]]
Proxy = Callable[[str, str], Awaitable[str]]
Screenshot = Callable[[Page, str], Awaitable[Path]]


def _require_chromium() -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium package "
            "(scripts/test.sh installs it; by hand: apt-get install chromium)",
            pytrace=False,
        )


@pytest.fixture
async def browser(request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    """Chromium, headless, one per test (Playwright's async API is bound to the test's event
    loop); a missing /usr/bin/chromium fails the test."""
    assert request.node.get_closest_marker("serial") is not None, (
        "a browser test runs one at a time: mark it serial (pytestmark = pytest.mark.serial)"
    )
    _require_chromium()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (no cookies, no storage), its pages 1280x800."""
    fresh = await browser.new_context(viewport=VIEWPORT)
    try:
        yield fresh
    finally:
        await fresh.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page of the test's context; an error the page's scripts leave uncaught fails the
    test."""
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def screenshot() -> Screenshot:
    """``await screenshot(page, name)`` saves the page's viewport as
    docs/screenshots/<name>.png (for the docs) and returns the path."""

    async def save(page: Page, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await page.screenshot(path=str(path), animations="disabled", caret="hide")
        return path

    return save


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(app)`` runs an ASGI app on a free loopback port until the test ends, and
    returns its base URL (each call another origin)."""
    async with AsyncExitStack() as stack:

        async def start(app: ASGIApp) -> str:
            return await stack.enter_async_context(serve_asgi(app))

        yield start


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    """``await proxy(prefix, upstream)`` runs a reverse proxy serving ``upstream`` under
    ``/<prefix>`` (tests/browser/prefix_proxy.py) until the test ends, and returns the
    prefix's URL."""
    async with AsyncExitStack() as stack:

        async def start(prefix: str, upstream: str) -> str:
            return await stack.enter_async_context(prefix_proxy(prefix, upstream))

        yield start


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    """A live gateway on the mock upstream (SQLite), its admin API open to ADMIN."""
    database_url = f"sqlite:///{tmp_path}/costwarden.db"
    async with live_gateway(mock, database_url, tmp_path, admin_token=ADMIN_TOKEN) as live:
        yield live


async def sign_in(page: Page, base: str, credential: str = ADMIN_TOKEN) -> None:
    """Sign ``page`` in to the dashboard at ``base`` (a gateway's URL, or a proxy's prefix)
    with its sign-in form, and land on the overview."""
    await page.goto(base + "/dashboard/sign-in")
    await page.get_by_label("Credential").fill(credential)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/dashboard/")
