"""The prefix reverse proxy (tests/browser/prefix_proxy.py) in front of a small app: the
prefix stripped, the method, query, headers, cookies and body passed, the answer's status and
headers (two Set-Cookie, a Location) unchanged, an event stream unbuffered; and in Chromium, a
cookie set through it comes back and an EventSource reads through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.async_api import Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from tests.browser.conftest import WAIT_MS, Proxy, Serve
from tests.browser.prefix_proxy import METHODS

PAGE = """<!doctype html>
<title>behind the proxy</title>
<p id="sid">{sid}</p>
<ul id="log"></ul>
<script>
  const events = new EventSource("events");
  events.addEventListener("tick", (e) => {{
    const li = document.createElement("li");
    li.textContent = e.data;
    document.getElementById("log").append(li);
    if (e.data === "second") events.close();  // no reconnection to read it all again
  }});
</script>
"""


@dataclass
class Upstream:
    """The app behind the proxy; ``release`` lets its event stream send its second frame."""

    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/echo/{rest:path}", self.echo, methods=METHODS),
                Route("/login", self.login),
                Route("/page", self.page),
                Route("/events", self.events),
            ]
        )

    async def echo(self, request: Request) -> Response:
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "host": request.headers.get("host"),
                "cookie": request.headers.get("cookie"),
                "x-custom": request.headers.getlist("x-custom"),
                "body": (await request.body()).decode(),
            },
            status_code=418 if request.query_params.get("teapot") else 200,
            headers={"x-upstream": "yes"},
        )

    async def login(self, request: Request) -> Response:
        # A relative Location and cookies scoped to the prefix, as an app that knows its
        # root_path writes them.
        response = RedirectResponse("page", status_code=303)
        response.set_cookie("sid", "s-42", path="/app", httponly=True, samesite="lax")
        response.set_cookie("theme", "dark", path="/app")
        return response

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE.format(sid=request.cookies.get("sid", "no session")))

    async def events(self, request: Request) -> Response:
        async def frames() -> AsyncIterator[bytes]:
            yield b"event: tick\ndata: first\n\n"
            await self.release.wait()
            yield b"event: tick\ndata: second\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")


@pytest.fixture
async def upstream(serve: Serve) -> tuple[Upstream, str]:
    app = Upstream()
    return app, await serve(app.app())


async def test_forwards_under_the_prefix_and_strips_it(
    upstream: tuple[Upstream, str], proxy: Proxy
) -> None:
    _, url = upstream
    base = await proxy("app", url)
    proxy_host = httpx.URL(base).netloc.decode()
    async with httpx.AsyncClient() as http:
        r = await http.put(
            base + "/echo/a/b?x=1&y=two",
            content=b'{"hello": "world"}',
            headers=[("cookie", "sid=s-1; theme=dark"), ("x-custom", "1"), ("x-custom", "2")],
        )
        assert r.status_code == 200
        assert r.headers["x-upstream"] == "yes"
        assert r.json() == {
            "method": "PUT",
            "path": "/echo/a/b",
            "query": "x=1&y=two",
            "host": proxy_host,
            "cookie": "sid=s-1; theme=dark",
            "x-custom": ["1", "2"],
            "body": '{"hello": "world"}',
        }
        teapot = await http.delete(base + "/echo/?teapot=1")
        assert (teapot.status_code, teapot.json()["method"]) == (418, "DELETE")
        outside = await http.get(base.removesuffix("/app") + "/echo/x")
        assert outside.status_code == 404
        lookalike = await http.get(base + "x/echo/x")  # /appx/... is not under /app
        assert lookalike.status_code == 404


async def test_passes_set_cookie_and_location_unchanged(
    upstream: tuple[Upstream, str], proxy: Proxy
) -> None:
    _, url = upstream
    base = await proxy("app", url)
    async with httpx.AsyncClient() as http:
        r = await http.get(base + "/login")
    assert r.status_code == 303
    assert r.headers["location"] == "page"
    cookies = r.headers.get_list("set-cookie")
    assert len(cookies) == 2
    assert cookies[0].startswith("sid=s-42;") and "HttpOnly" in cookies[0]
    assert "Path=/app" in cookies[0] and cookies[1].startswith("theme=dark;")


async def test_an_event_stream_passes_unbuffered(
    upstream: tuple[Upstream, str], proxy: Proxy
) -> None:
    app, url = upstream
    base = await proxy("app", url)
    async with httpx.AsyncClient() as http:
        async with http.stream("GET", base + "/events") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.aiter_lines()
            # The first frame arrives while the upstream still holds the stream open.
            async with asyncio.timeout(5):
                assert [await anext(lines), await anext(lines)] == ["event: tick", "data: first"]
            assert not app.release.is_set()
            app.release.set()
            async with asyncio.timeout(5):
                while (line := await anext(lines)) == "":
                    pass
                assert [line, await anext(lines)] == ["event: tick", "data: second"]


@pytest.mark.serial
async def test_chromium_keeps_the_cookie_and_reads_the_stream_through_it(
    upstream: tuple[Upstream, str], proxy: Proxy, page: Page
) -> None:
    app, url = upstream
    base = await proxy("app", url)
    await page.goto(base + "/login")
    assert page.url == base + "/page"
    await expect(page.locator("#sid")).to_have_text("s-42")
    cookies = await page.context.cookies()
    assert {(c["name"], c["path"]) for c in cookies} == {("sid", "/app"), ("theme", "/app")}
    log = page.locator("#log li")
    await expect(log).to_have_text(["first"], timeout=WAIT_MS)
    app.release.set()
    await expect(log).to_have_text(["first", "second"], timeout=WAIT_MS)
    assert await page.evaluate("document.cookie") == "theme=dark"  # sid is HttpOnly
