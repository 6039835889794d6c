"""Breaker state and the kill switch across real gateway processes (PostgreSQL + Redis).

Two ``costwarden serve`` processes share a database and a Redis. A breaker opened by the
first must be open in the second within a second, and the second must then refuse without
calling the upstream; the kill switch set through the first must stop both within a second,
with nothing reaching the upstream, and switching it back on must resume traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import redis

from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from tests.helpers import (
    free_port,
    gateway_toml,
    require_redis,
    scratch_pg_database,
    spawn_gateway,
    stop_gateway,
    wait_healthy,
)

ADMIN_TOKEN = "admin-token-for-resilience-test"
REDIS_URL = "redis://127.0.0.1:6379/12"
DEPLOYMENT = "openai:gpt-4o-mini"


@pytest.fixture
def shared_stack(pg_ready: None) -> Iterator[str]:
    require_redis(REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    with scratch_pg_database() as url:
        yield url
    client.flushdb()
    client.close()


async def _admin(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        async with http.request(method, base + path, json=body, headers=headers) as r:
            return r.status, await r.json()


async def _state(base: str) -> str:
    status, body = await _admin(base, "GET", "/admin/health/deployments")
    assert status == 200, body
    return str(next(h["state"] for h in body["data"] if h["deployment"] == DEPLOYMENT))


async def _within(seconds: float, check: Any) -> float:
    """Seconds until ``check()`` is true; fails past ``seconds``."""
    start = time.monotonic()
    while not await check():
        elapsed = time.monotonic() - start
        assert elapsed < seconds, f"not within {seconds} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_breaker_and_kill_switch_reach_the_other_process_within_a_second(
    mock: MockServer, tmp_path: Path, shared_stack: str
) -> None:
    database_url = shared_stack
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        key, _ = repo.create_key(engine, org="acme", project="web")
    finally:
        engine.dispose()
    extra = f'[redis]\nurl = "{REDIS_URL}"\n'
    procs, urls = [], []
    for i in range(2):
        port = free_port()
        config = tmp_path / f"gw{i}.toml"
        config.write_text(gateway_toml(mock.base_url, database_url, port=port, extra=extra))
        log = tmp_path / f"gw{i}.log"
        procs.append((spawn_gateway(config, log, {"COSTWARDEN_ADMIN_TOKEN": ADMIN_TOKEN}), log))
        urls.append(f"http://127.0.0.1:{port}")
    one, two = urls
    try:
        for (proc, log), url in zip(procs, urls, strict=True):
            await wait_healthy(url, proc, log)
        c1 = openai.AsyncOpenAI(base_url=one + "/v1", api_key=key, max_retries=0)
        c2 = openai.AsyncOpenAI(base_url=two + "/v1", api_key=key, max_retries=0)
        hi: Any = [{"role": "user", "content": "hi"}]

        # -- the breaker: opened by the first process's failures, seen by the second
        mock.state.update(fault_status=500)
        for _ in range(2):  # 3 tries each (retries = 2): 6 failures, open after the 5th
            with pytest.raises(openai.APIStatusError):
                await c1.chat.completions.create(model="gpt-4o-mini", messages=hi)
        assert await _state(one) == "open"
        seen = await _within(1.0, lambda: _is(two, "open"))
        print(f"breaker open in the second process after {seen * 1000:.0f} ms")
        calls = mock.state.requests
        with pytest.raises(openai.APIStatusError) as refused:
            await c2.chat.completions.create(model="gpt-4o-mini", messages=hi)
        assert refused.value.status_code == 503 and mock.state.requests == calls

        # an operator reset reaches the other process too
        mock.state.update(fault_status=None)
        status, _ = await _admin(two, "POST", f"/admin/breakers/{DEPLOYMENT}/reset")
        assert status == 200
        await _within(1.0, lambda: _is(one, "closed"))
        await c1.chat.completions.create(model="gpt-4o-mini", messages=hi)

        # -- the kill switch: set through the first, obeyed by both within a second
        status, body = await _admin(
            one,
            "PUT",
            "/admin/switches",
            {"feature": "ai", "enabled": False, "message": "Paused.", "confirm": "disable-all"},
        )
        assert status == 200, body
        switched = time.monotonic()

        async def refused_by_two() -> bool:
            try:
                await c2.chat.completions.create(model="gpt-4o-mini", messages=hi)
            except openai.APIStatusError as exc:
                assert exc.status_code == 503 and "Paused." in exc.message
                return True
            return False

        await _within(1.0, refused_by_two)
        print(f"kill switch obeyed by the second process after {time.monotonic() - switched:.3f} s")
        calls = mock.state.requests
        for client in (c1, c2):
            with pytest.raises(openai.APIStatusError) as off:
                await client.chat.completions.create(model="gpt-4o-mini", messages=hi)
            assert off.value.status_code == 503
        assert mock.state.requests == calls  # nothing reached the upstream

        status, _ = await _admin(one, "PUT", "/admin/switches", {"feature": "ai", "enabled": True})
        assert status == 200

        async def served_by_two() -> bool:
            try:
                await c2.chat.completions.create(model="gpt-4o-mini", messages=hi)
            except openai.APIStatusError:
                return False
            return True

        await _within(1.0, served_by_two)
        status, body = await _admin(one, "GET", "/admin/audit")
        actions = [e["action"] for e in body["data"]]
        assert actions.count("switch.set") == 2 and "breaker.reset" in actions
        await c1.close()
        await c2.close()
    finally:
        for proc, _ in procs:
            stop_gateway(proc)


async def _is(base: str, state: str) -> bool:
    return await _state(base) == state
