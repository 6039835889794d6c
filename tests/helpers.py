"""Shared test helpers: PostgreSQL scratch databases, a live gateway on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from costwarden.app import CostwardenApp, create_app
from costwarden.mock import MockServer
from costwarden.mock.config import mock_gateway_toml
from costwarden.server import uvicorn_config
from costwarden.settings import load_settings
from costwarden.storage import repo

PG_ADMIN_URL = os.environ.get("COSTWARDEN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
OPENAI_SECRET = "sk-provider-openai-SECRET-0123456789"
ANTHROPIC_SECRET = "sk-ant-provider-SECRET-9876543210"
PROVIDER_ENV = {"CW_TEST_OPENAI_KEY": OPENAI_SECRET, "CW_TEST_ANTHROPIC_KEY": ANTHROPIC_SECRET}


def pg_unavailable_reason() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"


@contextmanager
def scratch_pg_database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    import psycopg

    name = "cw_test_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def gateway_toml(
    mock_url: str,
    database_url: str,
    *,
    ledger_mode: str = "batched",
    timeout: float = 3.0,
    port: int = 4000,
    extra: str = "",
) -> str:
    """The mock-backed config, with provider credentials read from the test variables."""
    text = mock_gateway_toml(
        mock_url,
        database_url,
        port=port,
        ledger_mode=ledger_mode,
        flush_interval_ms=50,
        key_refresh_seconds=0.2,
        timeout=timeout,
    )
    text = text.replace('"OPENAI_API_KEY"', '"CW_TEST_OPENAI_KEY"').replace(
        '"ANTHROPIC_API_KEY"', '"CW_TEST_ANTHROPIC_KEY"'
    )
    return text + extra


@dataclasses.dataclass
class LiveGateway:
    base_url: str
    key: str
    key_id: str
    app: CostwardenApp
    mock: MockServer

    @property
    def openai_url(self) -> str:
        return self.base_url + "/v1"


@asynccontextmanager
async def live_gateway(
    mock: MockServer,
    database_url: str,
    tmp_path: Path,
    *,
    ledger_mode: str = "batched",
    timeout: float = 3.0,
    admin_token: str | None = None,
    extra_toml: str = "",
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[LiveGateway]:
    """A real gateway (uvicorn, loopback, port 0) in this event loop, with one org and key.

    ``extra_toml`` is appended to the config (e.g. ``[budgets]`` or price overrides);
    ``clock`` is the gateway's clock (epoch seconds), for tests that move time.
    """
    config = tmp_path / f"gw-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        gateway_toml(
            mock.base_url, database_url, ledger_mode=ledger_mode, timeout=timeout, extra=extra_toml
        )
    )
    env: dict[str, Any] = {**os.environ, **PROVIDER_ENV}
    if admin_token:
        env["COSTWARDEN_ADMIN_TOKEN"] = admin_token
    settings = load_settings(config, env=env)
    settings.server.port = 0
    app = create_app(settings, clock=clock)
    server = uvicorn.Server(uvicorn_config(app, settings))
    server.config.log_config = None
    task = asyncio.create_task(server.serve())
    # uvicorn's serve() installs signal handlers only in the main thread; fine under pytest.
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("gateway did not start")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    key, record = await asyncio.to_thread(repo.create_key, app.engine, org="acme", project="web")
    app.keys.apply([record])
    try:
        yield LiveGateway(f"http://127.0.0.1:{port}", key, record.id, app, mock)
    finally:
        server.should_exit = True
        await task


class FakeClock:
    """A clock tests move by hand (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
