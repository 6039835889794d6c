"""SIGTERM under load: every response a client received has its ledger row.

The gateway runs as a real ``costwarden serve`` process; the mock upstream holds each call
for a while so a few hundred requests are in flight when the signal arrives.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson
import sqlalchemy as sa

from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from tests.helpers import free_port, gateway_toml, spawn_gateway, wait_healthy

CONCURRENCY = 300
BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


async def _one(http: aiohttp.ClientSession, url: str, key: str) -> int | None:
    try:
        async with http.post(
            url + "/v1/chat/completions",
            data=BODY,
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as r:
            await r.read()
            return r.status
    except (TimeoutError, aiohttp.ClientError):
        return None  # never received a response


async def test_sigterm_under_load_loses_no_ledger_rows(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    # Long enough that all requests are in flight together even on a busy 2-core machine.
    mock.state.update(latency_ms=2000)
    port = free_port()
    config = tmp_path / "costwarden.toml"
    config.write_text(gateway_toml(mock.base_url, database_url, port=port, timeout=30))
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        key, _ = repo.create_key(engine, org="load", project="sigterm")
    finally:
        engine.dispose()
    log = tmp_path / "gateway.log"
    proc = spawn_gateway(config, log)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, proc, log)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            tasks = [asyncio.create_task(_one(http, url, key)) for _ in range(CONCURRENCY)]
            for _ in range(1000):
                if mock.state.in_flight >= 250:
                    break
                await asyncio.sleep(0.01)
            in_flight = mock.state.in_flight
            proc.send_signal(signal.SIGTERM)
            statuses = await asyncio.gather(*tasks)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    received = [s for s in statuses if s is not None]
    assert in_flight >= 200, f"only {in_flight} requests were in flight at SIGTERM"
    # uvicorn drains, then re-raises the signal so supervisors see how the process ended.
    assert code in (0, -signal.SIGTERM), log.read_text()
    assert len(received) >= 200 and all(s == 200 for s in received), statuses
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT count(*) FROM ledger")).scalar_one()
    finally:
        engine.dispose()
    assert rows == len(received), (rows, len(received))
    assert "ledger drained" in log.read_text()
