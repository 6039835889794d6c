"""A bare ASGI pass-through proxy: the floor a Python gateway can reach, per server and client.

Served by ``bench/transports.py`` under uvicorn or granian. ``PASSTHROUGH_CLIENT`` picks how
it calls the upstream (``PASSTHROUGH_UPSTREAM``, the mock's chat URL): ``none`` answers a
fixed body without calling anything (the server alone), ``aiohttp``, ``httpx``, or
``costwarden`` (the gateway's own client, costwarden.gateway.upstream). No auth, no
metering, no ledger: everything the gateway does on top costs more than this.
"""

from __future__ import annotations

import os
from typing import Any

CLIENT = os.environ.get("PASSTHROUGH_CLIENT", "none")
UPSTREAM = os.environ.get("PASSTHROUGH_UPSTREAM", "http://127.0.0.1:9/v1/chat/completions")
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-dummy-openai"}
FIXED = b'{"id":"chatcmpl-fixed","object":"chat.completion","choices":[]}'

_client: Any = None


async def _start() -> None:
    global _client
    if CLIENT == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0)
        _client = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
        )
    elif CLIENT == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024)
        _client = httpx.AsyncClient(limits=limits)
    elif CLIENT == "costwarden":
        from costwarden.gateway.upstream import UpstreamClient

        _client = UpstreamClient()


async def _call(body: bytes) -> bytes:
    if CLIENT == "aiohttp":
        async with _client.post(UPSTREAM, data=body, headers=HEADERS) as resp:
            return bytes(await resp.read())
    if CLIENT == "httpx":
        resp = await _client.post(UPSTREAM, content=body, headers=HEADERS)
        return bytes(resp.content)
    if CLIENT == "costwarden":
        resp = await _client.post(
            UPSTREAM, HEADERS.items(), body, timeout=60.0, connect_timeout=5.0
        )
        try:
            return bytes(await resp.read())
        finally:
            resp.release()
    return FIXED


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _start()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/healthz":
        raw = FIXED
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": raw})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    raw = await _call(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": raw})
