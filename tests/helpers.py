"""Shared test helpers: PostgreSQL scratch databases, a live gateway on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis
import uvicorn
from click.testing import CliRunner

from costwarden.app import CostwardenApp, create_app
from costwarden.cli import main
from costwarden.mock import MockServer
from costwarden.mock.config import mock_gateway_toml
from costwarden.server import uvicorn_config
from costwarden.settings import load_settings
from costwarden.storage import policy, repo

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
    env: dict[str, str] | None = None,
) -> AsyncIterator[LiveGateway]:
    """A real gateway (uvicorn, loopback, port 0) in this event loop, with one org and key.

    ``extra_toml`` is appended to the config (e.g. ``[budgets]`` or price overrides);
    ``clock`` is the gateway's clock (epoch seconds), for tests that move time; ``env``
    adds environment overrides (e.g. ``COSTWARDEN_HEADER_TIMEOUT_SECONDS``).
    """
    config = tmp_path / f"gw-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        gateway_toml(
            mock.base_url, database_url, ledger_mode=ledger_mode, timeout=timeout, extra=extra_toml
        )
    )
    environ: dict[str, Any] = {**os.environ, **PROVIDER_ENV, **(env or {})}
    if admin_token:
        environ["COSTWARDEN_ADMIN_TOKEN"] = admin_token
    settings = load_settings(config, env=environ)
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


def require_redis(url: str) -> None:
    """Skip when no Redis answers at ``url``, with the reason; in CI, fail instead."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        return
    except (redis.RedisError, OSError) as exc:
        reason = f"Redis not reachable at {url}: {exc}"
    finally:
        client.close()
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclasses.dataclass
class CliResult:
    """What a CLI run printed and its exit code."""

    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


# The CLI as a user runs it: a process of its own.
CLI = [sys.executable, "-m", "costwarden.cli"]


def cli_env(columns: int = 250, **extra: str) -> dict[str, str]:
    """The test process's environment minus anything costwarden reads; wide tables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("COSTWARDEN_") and k not in PROVIDER_ENV
    }
    env["COLUMNS"] = str(columns)
    env.update(extra)
    return env


async def arun_cli(*args: str, env: dict[str, str] | None = None) -> CliResult:
    """The CLI in a subprocess without blocking this event loop (a gateway may run in it)."""
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=cli_env() if env is None else env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def invoke_cli(*args: str, env: dict[str, str | None] | None = None) -> CliResult:
    """The CLI in this process (click's runner); an exception other than exit is raised."""
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def assert_clean_error(result: CliResult, *needles: str) -> str:
    """Exit 2, one line on stderr starting with 'error:', nothing on stdout, no traceback;
    returns the line."""
    assert result.code == 2, result
    assert "Traceback" not in result.both, result.err
    line = result.err.strip()
    assert "\n" not in line, result.err
    assert line.startswith("error: "), line
    assert result.out == "", result.out
    for needle in needles:
        assert needle in line, (needle, line)
    return line


class FakeClock:
    """A clock tests move by hand (epoch seconds)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError("gateway exited early:\n" + log.read_text())
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("gateway never became healthy:\n" + log.read_text())


def spawn_gateway(
    config: Path, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``costwarden serve --config`` as a real process, output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "costwarden.cli", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **PROVIDER_ENV, **(env or {})},
        )


def stop_gateway(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# $10 per MTok in, $1000 per MTok out: a 1,000-token answer costs $1, so $5 goes in a few calls.
PRICEY = """
[[deployments]]
id = "openai:gpt-4o-mini"
price = { input_mtok = "10", output_mtok = "1000" }
"""
# 2027-03-10 10:00:30 UTC: mid-minute, far from midnight.
T0 = 1_804_672_830.0


async def set_limits(
    gw: LiveGateway, scope: str = "org", subject: str = "", **amounts: Any
) -> None:
    """Set limits on one scope of the live gateway's org ``acme``, and have it load them."""
    await asyncio.to_thread(
        policy.set_limits, gw.app.engine, org="acme", scope=scope, subject=subject, amounts=amounts
    )
    await gw.app.enforcer.refresh()


async def chat(
    gw: LiveGateway, body: dict[str, Any] | None = None, **headers: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST a chat completion (default: "hi" to gpt-4o-mini); (status, body, headers)."""
    payload = body or {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            gw.openai_url + "/chat/completions",
            json=payload,
            headers={"authorization": f"Bearer {gw.key}", **headers},
        ) as r:
            return (
                r.status,
                orjson.loads(await r.read()),
                {k.lower(): v for k, v in r.headers.items()},
            )
