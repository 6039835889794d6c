"""SIGKILL under 200 concurrent streams in durable mode: every client that saw its stream's
terminal event (``data: [DONE]`` / ``event: message_stop``) has its ledger row.

The gateway is a real ``costwarden serve`` process on SQLite and on PostgreSQL; the mock
paces its streams at different lengths, so streams end continually and the kill lands while
many are finishing.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson

from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.usage import ledger_rows
from tests.helpers import free_port, gateway_toml, spawn_gateway, wait_healthy

STREAMS = 200
REQUESTS = {
    "openai": (
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "stream": True},
        b"data: [DONE]",
    ),
    "anthropic": (
        "/v1/messages",
        {"model": "claude-haiku-4-5", "stream": True, "max_tokens": 400},
        b"event: message_stop",
    ),
}


async def _stream(
    http: aiohttp.ClientSession, url: str, key: str, i: int, ended: dict[str, bool]
) -> None:
    path, body, terminal = REQUESTS["openai" if i % 2 else "anthropic"]
    # vary_output gives each prompt its own length: streams end one after another.
    payload = {**body, "messages": [{"role": "user", "content": f"stream {i} " + "x" * i}]}
    seen = b""
    try:
        async with http.post(
            url + path,
            data=orjson.dumps(payload),
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        ) as r:
            request_id = r.headers["x-request-id"]
            ended[request_id] = False
            async for chunk in r.content.iter_any():
                seen = seen[-64:] + chunk
                if terminal in seen:
                    ended[request_id] = True
    except (TimeoutError, aiohttp.ClientError):
        pass  # the gateway died under it


async def test_sigkill_loses_no_row_of_a_stream_the_client_saw_end(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    mock.state.update(vary_output=True, output_tokens=150, tokens_per_second=60)
    port = free_port()
    config = tmp_path / "costwarden.toml"
    config.write_text(
        gateway_toml(mock.base_url, database_url, port=port, timeout=60, ledger_mode="durable")
    )
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        key, _ = repo.create_key(engine, org="load", project="sigkill")
    finally:
        engine.dispose()
    log = tmp_path / "gateway.log"
    proc = spawn_gateway(config, log)
    url = f"http://127.0.0.1:{port}"
    ended: dict[str, bool] = {}
    try:
        await wait_healthy(url, proc, log)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            tasks = [
                asyncio.create_task(_stream(http, url, key, i, ended)) for i in range(STREAMS)
            ]
            # Kill while streams are finishing: once every stream has started and a fifth of
            # them have ended, before most have (on a loaded machine the last ones can start
            # after the first fifth ended).
            for _ in range(3000):
                if len(ended) == STREAMS and sum(ended.values()) >= STREAMS // 5:
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finished = [rid for rid, done in ended.items() if done]
    print(f"\n{len(ended)} streams started, {len(finished)} ended before the SIGKILL")
    assert len(ended) == STREAMS, "not every stream had started when the gateway was killed"
    assert STREAMS // 5 <= len(finished) < STREAMS, len(finished)
    engine = create_engine_for(database_url)
    try:
        rows = {r.request_id: r for r in ledger_rows(engine, finished, limit=STREAMS)}
        every = ledger_rows(engine, list(ended), limit=STREAMS)
    finally:
        engine.dispose()
    # A row is committed before its stream's terminal event is sent: a kill in between
    # leaves a row (the upstream served it whole) for a client that did not see the end.
    print(f"ledger rows: {len(every)} ({len(every) - len(finished)} of streams cut off after "
          "their row was committed)")  # fmt: skip
    missing = [rid for rid in finished if rid not in rows]
    assert not missing, f"{len(missing)} of {len(finished)} ended streams have no row"
    assert {r.status for r in rows.values()} == {"success"}
