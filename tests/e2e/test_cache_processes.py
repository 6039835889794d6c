"""The Redis response cache shared by real gateway processes (PostgreSQL + Redis): an answer
one process stored is a hit in the other, streamed or not, for the same org only."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import openai

from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.usage import ledger_rows
from tests.e2e.event_streams import REDIS_URL  # the shared_stack fixture's database
from tests.helpers import free_port, gateway_toml, spawn_gateway, stop_gateway, wait_healthy

CACHED = f"""
[redis]
url = "{REDIS_URL}"

[cache]
backend = "redis"

[[routes]]
model = "cached-mini"
deployments = ["openai:gpt-4o-mini"]
cache = {{ ttl_seconds = 600 }}
"""


async def test_an_answer_stored_by_one_process_is_a_hit_in_the_other(
    mock: MockServer, tmp_path: Path, shared_stack: str
) -> None:
    engine = create_engine_for(shared_stack)
    try:
        migrate(engine)
        acme, _ = repo.create_key(engine, org="acme", project="web")
        globex, _ = repo.create_key(engine, org="globex", project="web")
    finally:
        engine.dispose()
    procs, urls = [], []
    for i in range(2):
        port = free_port()
        config = tmp_path / f"gw{i}.toml"
        config.write_text(gateway_toml(mock.base_url, shared_stack, port=port, extra=CACHED))
        log = tmp_path / f"gw{i}.log"
        procs.append((spawn_gateway(config, log), log))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for (proc, log), url in zip(procs, urls, strict=True):
            await wait_healthy(url, proc, log)
        one = openai.AsyncOpenAI(base_url=urls[0] + "/v1", api_key=acme, max_retries=0)
        two = openai.AsyncOpenAI(base_url=urls[1] + "/v1", api_key=acme, max_retries=0)
        other = openai.AsyncOpenAI(base_url=urls[1] + "/v1", api_key=globex, max_retries=0)
        ask: dict[str, Any] = {
            "model": "cached-mini",
            "messages": [{"role": "user", "content": "shared?"}],
            "temperature": 0,
        }
        miss = await one.chat.completions.with_raw_response.create(**ask)
        assert miss.headers["x-costwarden-cache"] == "miss"
        calls = mock.state.requests
        hit = await two.chat.completions.with_raw_response.create(**ask)
        assert hit.headers["x-costwarden-cache"] == "hit"
        assert hit.parse().id == miss.parse().id and mock.state.requests == calls
        stream = await two.chat.completions.create(**ask, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == miss.parse().choices[0].message.content
        assert mock.state.requests == calls
        # Another org, same process, same request: its own namespace, a miss.
        theirs = await other.chat.completions.with_raw_response.create(**ask)
        assert theirs.headers["x-costwarden-cache"] == "miss"
        assert mock.state.requests == calls + 1
        for client in (one, two, other):
            await client.close()
    finally:
        for proc, _ in procs:
            stop_gateway(proc)
    engine = create_engine_for(shared_stack)
    try:
        rows = {r.request_id: r for r in ledger_rows(engine)}
    finally:
        engine.dispose()
    first = rows[miss.headers["x-request-id"]]
    second = rows[hit.headers["x-request-id"]]
    assert second.status == "cached" and second.saved_usd == first.cost_usd > Decimal(0)
