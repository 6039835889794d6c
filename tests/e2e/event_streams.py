"""Real gateway processes (two by default) on PostgreSQL + Redis, and SSE clients of
``/admin/events``: shared by the cross-process event and alert tests and ``bench/events.py``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from tests.helpers import free_port, gateway_toml, spawn_gateway, stop_gateway, wait_healthy

ADMIN_TOKEN = "admin-token-for-event-tests"
REDIS_URL = "redis://127.0.0.1:6379/13"  # the shared_stack fixture's (tests/e2e/conftest.py)
AUTH = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class Frame:
    id: int | None
    kind: str
    data: dict[str, Any]
    received: float  # time.time() when the frame was complete


@dataclass
class Gateways:
    urls: list[str]
    pids: list[int]
    key: str


@asynccontextmanager
async def gateways(
    mock_url: str,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    extra: str = "",
    *,
    count: int = 2,
) -> AsyncIterator[Gateways]:
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        key, _ = repo.create_key(engine, org="acme", project="web")
    finally:
        engine.dispose()
    toml = f'[redis]\nurl = "{redis_url}"\n{extra}'
    procs, urls = [], []
    try:
        for i in range(count):
            port = free_port()
            config = tmp_path / f"gw{i}.toml"
            config.write_text(gateway_toml(mock_url, database_url, port=port, extra=toml))
            log = tmp_path / f"gw{i}.log"
            procs.append((spawn_gateway(config, log, {"COSTWARDEN_ADMIN_TOKEN": ADMIN_TOKEN}), log))
            urls.append(f"http://127.0.0.1:{port}")
        for (proc, log), url in zip(procs, urls, strict=True):
            await wait_healthy(url, proc, log)
        yield Gateways(urls, [p.pid for p, _ in procs], key)
    finally:
        for proc, _ in procs:
            stop_gateway(proc)


async def frames(
    http: aiohttp.ClientSession, base: str, *, after: int | None = None, query: str = ""
) -> AsyncIterator[Frame]:
    """The frames of one ``/admin/events`` stream (comments skipped) until it ends."""
    headers = dict(AUTH)
    if after is not None:
        headers["last-event-id"] = str(after)
    async with http.get(f"{base}/admin/events{query}", headers=headers) as r:
        assert r.status == 200, await r.text()
        fields: dict[str, str] = {}
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
                continue
            if fields:
                event_id = fields.get("id")
                yield Frame(
                    int(event_id) if event_id else None,
                    fields["event"],
                    orjson.loads(fields["data"]),
                    time.time(),
                )
                fields = {}


class Reader:
    """Reads a stream into a queue in the background; ``close()`` hangs up."""

    def __init__(self, stream: AsyncIterator[Frame]) -> None:
        self.queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._task = asyncio.create_task(self._pump(stream))

    async def _pump(self, stream: AsyncIterator[Frame]) -> None:
        async for frame in stream:
            self.queue.put_nowait(frame)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def connected(stream: AsyncIterator[Frame]) -> Reader:
    reader = Reader(stream)
    await asyncio.sleep(0.3)  # the subscription is registered
    return reader


async def take(reader: Reader, count: int, within: float = 30.0) -> list[Frame]:
    got: list[Frame] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            got.append(await reader.queue.get())
    return got


async def chat(http: aiohttp.ClientSession, base: str, key: str) -> str:
    """One small chat completion; the request id."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    async with http.post(f"{base}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["x-request-id"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
