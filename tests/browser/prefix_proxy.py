"""A reverse proxy that serves an app under a path prefix, as one in front of a gateway
started with ``[server] root_path`` would, and a way to run any ASGI app on loopback.

:func:`prefix_proxy_app` forwards ``/<prefix>/<rest>`` (and ``/<prefix>`` itself) to the
upstream's ``/<rest>``: the method, the query string, every header (cookies and ``Host``
included, as ``proxy_set_header Host $host`` passes it) but the hop-by-hop ones, and the body;
and it answers with the upstream's status, headers (every ``Set-Cookie``, ``Location`` as the
upstream wrote it) and body, streamed chunk by chunk as they arrive (server-sent events pass
through unbuffered). A path outside the prefix is the proxy's own 404.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

# Headers of one connection, not of the message (RFC 9110, 7.6.1): never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class _NoCookieJar(http.cookiejar.CookieJar):
    """Keeps no cookie: the proxy passes each browser's own along, never one it kept."""

    def extract_cookies(self, response: object, request: object) -> None:
        return None

    def set_cookie(self, cookie: http.cookiejar.Cookie) -> None:
        return None


def _forwarded(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.decode("latin-1").lower() not in HOP_BY_HOP]


def prefix_proxy_app(prefix: str, upstream: str, client: httpx.AsyncClient) -> Starlette:
    """``/<prefix>/<rest>`` of this app is ``<upstream>/<rest>``; ``client`` makes the calls
    (the caller closes it)."""
    mount = "/" + prefix.strip("/")
    base = upstream.rstrip("/")

    async def forward(request: Request) -> Response:
        path = request.url.path
        if path != mount and not path.startswith(mount + "/"):
            return PlainTextResponse(f"not under {mount}/", status_code=404)
        rest = path[len(mount) :] or "/"
        query = request.url.query
        headers = [
            (k, v) for k, v in _forwarded(request.headers.raw) if k.lower() != b"content-length"
        ]
        outgoing = client.build_request(
            request.method,
            base + rest + ("?" + query if query else ""),
            headers=headers,
            content=await request.body(),
        )
        answer = await client.send(outgoing, stream=True)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        response = StreamingResponse(body(), status_code=answer.status_code)
        # As the upstream sent them: every Set-Cookie, and the body's own length and encoding
        # (aiter_raw passes the bytes undecoded).
        response.raw_headers = _forwarded(answer.headers.raw)
        return response

    return Starlette(routes=[Route("/{path:path}", forward, methods=METHODS)])


@asynccontextmanager
async def serve_asgi(app: ASGIApp) -> AsyncIterator[str]:
    """``app`` under uvicorn on a free loopback port, in this event loop; yields its base URL
    (``http://127.0.0.1:<port>``). Open responses get a second to finish at the end."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        lifespan="off",
        ws="none",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("the server did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def prefix_proxy(prefix: str, upstream: str) -> AsyncIterator[str]:
    """A running :func:`prefix_proxy_app` in front of ``upstream``; yields the URL of the
    prefix (``http://127.0.0.1:<port>/<prefix>``)."""
    # No timeout on reads: an event stream may be quiet for long. Redirects and cookies are
    # the browser's business, not the proxy's.
    timeout = httpx.Timeout(10.0, read=None)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        client.cookies = httpx.Cookies(_NoCookieJar())
        async with serve_asgi(prefix_proxy_app(prefix, upstream, client)) as url:
            yield url + "/" + prefix.strip("/")
