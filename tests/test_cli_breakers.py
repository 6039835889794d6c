"""``costwarden breakers list|reset`` against a live gateway on loopback (the CLI calling the
gateway's admin API from a worker thread, once from a real subprocess), and its one-line
errors (exit status 2): gateway unreachable, token missing or refused, unknown deployment,
bad --url."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from costwarden.mock import MockServer
from costwarden.routing.breaker import CLOSED, OPEN
from costwarden.storage.audit import audit_entries
from tests.helpers import (
    CliResult,
    LiveGateway,
    ainvoke_cli,
    arun_cli,
    assert_clean_error,
    cli_env,
    free_port,
    invoke_cli,
    live_gateway,
)

TOKEN = "adm-cli-breakers"
MINI = "openai:gpt-4o-mini"
HAIKU = "anthropic:claude-haiku-4-5"


def _env(token: str | None) -> dict[str, str]:
    env = cli_env(200)  # rich: one table row per line
    if token is not None:
        env["COSTWARDEN_ADMIN_TOKEN"] = token
    return env


async def _run(*args: str, token: str | None = TOKEN) -> CliResult:
    return await ainvoke_cli(*args, env=_env(token))


@pytest.fixture
async def gw(mock: MockServer, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    url = f"sqlite:///{tmp_path}/cw.db"
    async with live_gateway(mock, url, tmp_path, admin_token=TOKEN) as gateway:
        yield gateway


def _trip(gw: LiveGateway, deployment: str = MINI) -> None:
    breakers = gw.app.breakers
    for _ in range(breakers.policy.failure_threshold):
        breakers.failure(deployment, "status 502")
    assert breakers.state(deployment) == OPEN


async def test_list_as_json_and_as_a_table(gw: LiveGateway) -> None:
    _trip(gw)
    result = await _run("breakers", "list", "--url", gw.base_url, "--json")
    assert result.code == 0, result
    data = json.loads(result.out)["data"]
    states = {d["deployment"]: d["state"] for d in data}
    assert states == {MINI: OPEN, HAIKU: CLOSED, "openai:text-embedding-3-small": CLOSED}
    mini = next(d for d in data if d["deployment"] == MINI)
    assert mini["consecutive_failures"] == 5 and mini["retry_at"]

    table = await _run("breakers", "list", "--url", gw.base_url + "/")
    assert table.code == 0, table
    row = next(line for line in table.out.splitlines() if MINI in line)
    assert "open" in row and "100%" in row and "5 consecutive failures" in row
    assert any(HAIKU in line and "closed" in line for line in table.out.splitlines())


async def test_reset_closes_the_breaker_of_the_running_gateway(gw: LiveGateway) -> None:
    _trip(gw)
    result = await _run("breakers", "reset", MINI, "--url", gw.base_url)
    assert result.code == 0, result
    assert f"breaker of {MINI} is closed" in result.out
    assert gw.app.breakers.state(MINI) == CLOSED
    (entry,) = await asyncio.to_thread(audit_entries, gw.app.engine, action="breaker.reset")
    assert entry.actor == f"cli:{getpass.getuser()}" and entry.target == MINI
    again = await _run("breakers", "reset", HAIKU, "--url", gw.base_url, "--json")
    assert again.code == 0 and json.loads(again.out)["state"] == CLOSED


async def test_reset_of_an_unknown_deployment(gw: LiveGateway) -> None:
    _trip(gw)
    line = assert_clean_error(await _run("breakers", "reset", "openai:nope", "--url", gw.base_url))
    assert "unknown deployment 'openai:nope'" in line and MINI in line
    assert gw.app.breakers.state(MINI) == OPEN


async def test_a_refused_token(gw: LiveGateway) -> None:
    _trip(gw)
    # A subprocess: the token read from a real process's environment, the exit status and
    # stderr as the interpreter leaves them.
    result = await arun_cli("breakers", "reset", MINI, "--url", gw.base_url, env=_env("wrong"))
    line = assert_clean_error(result)
    assert "refused the admin token" in line and "wrong" not in line
    assert gw.app.breakers.state(MINI) == OPEN


def _invoke(*args: str, token: str | None = TOKEN) -> CliResult:
    return invoke_cli(*args, env={"COSTWARDEN_ADMIN_TOKEN": token, "COSTWARDEN_URL": None})


def test_an_unreachable_gateway() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (("breakers", "list", "--url", url), ("breakers", "reset", MINI, "--url", url)):
        line = assert_clean_error(_invoke(*args))
        assert f"cannot reach the gateway at {url}" in line


def test_the_token_is_needed() -> None:
    line = assert_clean_error(_invoke("breakers", "list", token=None))
    assert "COSTWARDEN_ADMIN_TOKEN" in line


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:4000", "127.0.0.1:4000", "http://"])
def test_a_bad_url(url: str) -> None:
    line = assert_clean_error(_invoke("breakers", "list", "--url", url))
    assert "--url" in line


def test_an_empty_deployment() -> None:
    line = assert_clean_error(_invoke("breakers", "reset", "  "))
    assert "DEPLOYMENT" in line
