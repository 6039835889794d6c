"""The ``costwarden`` command line, in this process (click's runner) and, where only a real
process shows it, as a subprocess.

Configuration and input errors must be one line on stderr with exit status 2, never a
traceback. The live tests run the CLI in another process against the database of a gateway
already running in this event loop: key changes must reach that gateway within a second.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import event

from costwarden.config.reference import settings_help
from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.sqltypes import money_str
from tests.helpers import (
    CLI,
    PROVIDER_ENV,
    CliResult,
    ainvoke_cli,
    arun_cli,
    assert_clean_error,
    cli_env,
    gateway_toml,
    live_gateway,
)
from tests.helpers import invoke_cli_as as cli

MOCK_URL = "http://127.0.0.1:9"  # nothing listens there; admin commands never call it


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> CliResult:
    """The CLI as a subprocess: only where a real process matters (tests.helpers.CLI)."""
    proc = subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cw.db"


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> str:
    path = tmp_path / "costwarden.toml"
    path.write_text(gateway_toml(MOCK_URL, db_url), encoding="utf-8")
    return str(path)


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    engine = create_engine_for(db_url)
    yield engine
    engine.dispose()


def _create(config: str, org: str, *extra: str) -> dict[str, Any]:
    data: dict[str, Any] = cli(
        "keys", "create", "--config", config, "--org", org, "--json", *extra
    ).json()
    return data


# ----------------------------------------------------------------------------- keys


def test_keys_create_json(config: str, engine: Any) -> None:
    result = cli("keys", "create", "--config", config, "--org", "acme", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["key"].startswith("cw-") and len(data["key"]) > 30
    assert re.fullmatch(r"key_[0-9a-f]{12}", data["id"])
    assert data["org"] == "acme" and data["revoked_at"] is None
    assert data["prefix"] == data["key"][:10]
    # The org was created; the key is stored only as its hash.
    org = repo.get_org_by_name(engine, "acme")
    assert org is not None and org.id == data["org_id"]
    (record,) = repo.list_keys(engine, "acme")
    assert record.id == data["id"] and record.key_hash == repo.hash_key(data["key"])
    # A second key for the same org reuses it.
    again = _create(config, "acme", "--project", "web", "--name", "ci")
    assert again["org_id"] == data["org_id"] and again["key"] != data["key"]
    assert (again["project"], again["name"]) == ("web", "ci")
    assert [o.name for o in repo.list_orgs(engine)] == ["acme"]


def test_keys_create_human_output(config: str) -> None:
    result = cli("keys", "create", "--config", config, "--org", "acme")
    assert result.code == 0, result.err
    keys = re.findall(r"^cw-\S+$", result.out, flags=re.M)
    assert len(keys) == 1, result.out
    assert re.search(r"created key key_[0-9a-f]{12} for org acme", result.out)


def test_keys_create_bad_org_name(config: str) -> None:
    assert_clean_error(
        cli("keys", "create", "--config", config, "--org", "   "), "org name must not be empty"
    )


def test_keys_list_never_shows_keys(config: str) -> None:
    a = _create(config, "acme")
    b = _create(config, "beta")
    listed = cli("keys", "list", "--config", config, "--json")
    data = listed.json()["data"]
    assert [k["id"] for k in data] == [a["id"], b["id"]]
    assert [k["org"] for k in data] == ["acme", "beta"]
    assert all("key" not in k for k in data)
    assert data[0]["prefix"] == a["key"][:10]
    only = cli("keys", "list", "--config", config, "--org", "acme", "--json").json()["data"]
    assert [k["id"] for k in only] == [a["id"]]
    table = cli("keys", "list", "--config", config)
    assert table.code == 0, table.err
    for output in (listed, table):
        for key in (a["key"], b["key"]):
            assert key not in output.both
            assert key[10:20] not in output.both  # not even a longer fragment
    for needle in (a["id"], b["id"], "acme", "beta", a["prefix"], "active", "virtual keys"):
        assert needle in table.out, needle
    assert "revoked" not in table.out


def test_keys_list_unknown_org(config: str) -> None:
    assert_clean_error(cli("keys", "list", "--config", config, "--org", "nope"), "'nope'")


def test_keys_revoke(config: str, engine: Any) -> None:
    a = _create(config, "acme")
    b = _create(config, "acme")
    result = cli("keys", "revoke", "--config", config, a["id"])
    assert result.code == 0, result.err
    assert a["id"] in result.out
    record = {r.id: r for r in repo.list_keys(engine)}
    assert record[a["id"]].revoked and not record[b["id"]].revoked
    listed = {
        k["id"]: k for k in cli("keys", "list", "--config", config, "--json").json()["data"]
    }
    assert listed[a["id"]]["revoked_at"] is not None and listed[b["id"]]["revoked_at"] is None
    table = cli("keys", "list", "--config", config).out
    assert "revoked" in table and "active" in table
    # Revoking again changes nothing (and is not an error).
    again = cli("keys", "revoke", "--config", config, a["id"], "--json").json()
    assert again["revoked_at"] == listed[a["id"]]["revoked_at"]


def test_keys_revoke_unknown_id(config: str) -> None:
    result = cli("keys", "revoke", "--config", config, "key_000000000000")
    assert_clean_error(result, "key_000000000000", "does not exist")
    assert result.out == ""


def test_missing_config_file(tmp_path: Path) -> None:
    # A subprocess: the exit status and stderr as the interpreter leaves them, the config
    # named relative to its working directory and by its real environment.
    result = run_cli("keys", "list", "--config", "nope.toml", cwd=tmp_path)
    assert_clean_error(result, "nope.toml", "not found")
    # COSTWARDEN_CONFIG names the file too.
    result = run_cli("keys", "list", cwd=tmp_path, env=cli_env(COSTWARDEN_CONFIG="other.toml"))
    assert_clean_error(result, "other.toml")


def test_keys_list_table_shows_whole_ids_at_80_columns(config: str) -> None:
    a = _create(config, "acme", "--project", "website", "--name", "deploy key")
    # A subprocess: its rich consoles take the width from COLUMNS when they are imported.
    table = run_cli("keys", "list", "--config", config, env=cli_env(columns=80))
    assert table.code == 0, table.err
    assert a["id"] in table.out


@pytest.mark.parametrize("bad_id", ["[/x]", "[x]"])
def test_error_message_is_not_rich_markup(config: str, bad_id: str) -> None:
    assert_clean_error(cli("keys", "revoke", "--config", config, bad_id), f"'{bad_id}'")


def test_keys_create_org_with_brackets(config: str) -> None:
    result = cli("keys", "create", "--config", config, "--org", "[/ops]")
    assert result.code == 0 and "Traceback" not in result.err, result.err
    assert re.search(r"^cw-\S+$", result.out, flags=re.M)
    table = cli("keys", "list", "--config", config)
    assert table.code == 0 and "[/ops]" in table.out, table.err


# ----------------------------------------------------------------------------- usage


def _record(org_id: str | None, ts: datetime, cost: Decimal, model: str, n: int) -> LedgerRecord:
    return LedgerRecord(
        request_id=f"req_{secrets.token_hex(8)}",
        ts=ts,
        endpoint="chat.completions",
        status="success",
        http_status=200,
        org_id=org_id,
        provider="openai",
        requested_model=model,
        served_model=model,
        input_tokens=100 + n,
        output_tokens=10 + n,
        cost_usd=cost,
        latency_ms=1.0,
        overhead_ms=0.1,
    )


async def test_usage_json_equals_the_ledger(config: str, db_url: str) -> None:
    create = ("keys", "create", "--config", config, "--json", "--org")
    acme = (await ainvoke_cli(*create, "acme")).json()
    beta = (await ainvoke_cli(*create, "beta")).json()
    rng = random.Random(7)
    now = datetime.now(UTC)
    records: list[LedgerRecord] = []
    for n in range(40):
        org = acme if n % 3 else beta
        age = timedelta(days=10) if n % 10 == 0 else timedelta(minutes=rng.randint(1, 600))
        cost = Decimal(rng.randint(1, 10**10)) / Decimal(10**12)  # 12 places, exact
        model = rng.choice(["gpt-4o-mini", "claude-haiku-4-5"])
        records.append(_record(org["org_id"], now - age, cost, model, n))
    engine = create_engine_for(db_url)
    try:
        async with LedgerWriter(engine) as writer:
            for r in records:
                writer.submit(r)
            await writer.flush()
    finally:
        engine.dispose()

    def expect(org_id: str | None, days: int) -> tuple[int, Decimal, int, int]:
        rows = [
            r
            for r in records
            if (org_id is None or r.org_id == org_id) and r.ts >= now - timedelta(days=days)
        ]
        return (
            len(rows),
            sum((r.cost_usd for r in rows), Decimal(0)),
            sum(r.input_tokens for r in rows),
            sum(r.output_tokens for r in rows),
        )

    for args, org_id, days in [
        ((), None, 7),
        (("--org", "acme"), acme["org_id"], 7),
        (("--org", "beta", "--since", "30d"), beta["org_id"], 30),
        (("--since", "2w"), None, 14),
    ]:
        report = (await ainvoke_cli("usage", "--config", config, "--json", *args)).json()
        requests, cost, tokens_in, tokens_out = expect(org_id, days)
        assert requests > 0
        assert type(report["requests"]) is int and report["requests"] == requests, args
        assert isinstance(report["cost_usd"], str), report["cost_usd"]
        assert Decimal(report["cost_usd"]) == cost and report["cost_usd"] == money_str(cost)
        assert (report["input_tokens"], report["output_tokens"]) == (tokens_in, tokens_out)
        assert sum(row["requests"] for row in report["rows"]) == requests
        assert sum(Decimal(row["cost_usd"]) for row in report["rows"]) == cost
        if org_id is not None:
            assert {row["org"] for row in report["rows"]} == {args[1]}

    table = await ainvoke_cli("usage", "--config", config)
    assert table.code == 0, table.err
    total = next(line for line in table.out.splitlines() if "total" in line.split())
    cells = [c for c in re.split(r"[\s│┃║|]+", total) if c]
    assert cells[1] == str(expect(None, 7)[0]), cells
    assert Decimal(cells[-1]) == expect(None, 7)[1], cells
    assert "acme" in table.out and "beta" in table.out


def test_usage_empty_ledger(config: str) -> None:
    report = cli("usage", "--config", config, "--json").json()
    assert report == {
        "requests": 0,
        "cost_usd": "0",
        "input_tokens": 0,
        "output_tokens": 0,
        "rows": [],
    }


def test_usage_unknown_org(config: str) -> None:
    assert_clean_error(cli("usage", "--config", config, "--org", "nope"), "unknown org 'nope'")


def test_usage_bad_since(config: str) -> None:
    assert_clean_error(cli("usage", "--config", config, "--since", "bogus"), "'bogus'", "7d")


@pytest.mark.parametrize("since", ["1000000d", "99999999999999999999d"])
def test_usage_since_out_of_range(config: str, since: str) -> None:
    assert_clean_error(cli("usage", "--config", config, "--since", since), since)


# ----------------------------------------------------------------------------- serve


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_serve_unknown_provider(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = gateway_toml(MOCK_URL, db_url).replace('["openai:gpt-4o-mini"]', '["azure:gpt-4o-mini"]')
    (tmp_path / "costwarden.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = cli("serve", "--config", "costwarden.toml", env=cli_env(**PROVIDER_ENV))
    line = _line_of(text, "azure:gpt-4o-mini")
    assert_clean_error(
        result, f"costwarden.toml:{line}: routes[0].deployments[0]", "unknown provider 'azure'"
    )


def test_serve_unset_api_key(tmp_path: Path, db_url: str) -> None:
    text = gateway_toml(MOCK_URL, db_url)
    (tmp_path / "costwarden.toml").write_text(text, encoding="utf-8")
    env = cli_env(CW_TEST_ANTHROPIC_KEY="x")
    # A subprocess: the real entry point of ``serve``, the variable missing from a real
    # process's environment.
    result = run_cli("serve", "--config", "costwarden.toml", cwd=tmp_path, env=env, timeout=30)
    line = _line_of(text, "CW_TEST_OPENAI_KEY")
    assert_clean_error(
        result, f"costwarden.toml:{line}: providers[0].api_key_env", "CW_TEST_OPENAI_KEY", "not set"
    )
    assert "sk-" not in result.both


def test_serve_unpriced_model(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    text = gateway_toml(MOCK_URL, db_url) + (
        '[[routes]]\nmodel = "ft"\ndeployments = ["openai:acme-finetune-7"]\n'
    )
    (tmp_path / "costwarden.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = cli("serve", "--config", "costwarden.toml", env=cli_env(**PROVIDER_ENV))
    assert_clean_error(result, "deployment openai:acme-finetune-7")
    for secret in PROVIDER_ENV.values():
        assert secret not in result.both


@pytest.mark.parametrize(
    ("args", "env", "server_table"),
    [
        (["--workers", "2"], {}, ""),
        ([], {"COSTWARDEN_WORKERS": "3"}, ""),
        ([], {}, "workers = 2\n"),
    ],
    ids=["option", "env", "file"],
)
def test_serve_workers_without_redis_is_refused(
    tmp_path: Path,
    db_url: str,
    args: list[str],
    env: dict[str, str],
    server_table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The embedded default keeps budget counters in each process: N workers could each spend
    a hard budget in full, so more than one is refused, naming what to configure."""
    text = gateway_toml(MOCK_URL, db_url).replace("[server]\n", "[server]\n" + server_table)
    assert "[redis]" not in text
    (tmp_path / "costwarden.toml").write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = cli("serve", "--config", "costwarden.toml", *args, env=cli_env(**PROVIDER_ENV, **env))
    assert_clean_error(result, "workers need [redis] url", "COSTWARDEN_REDIS_URL", "--workers 1")
    assert not (tmp_path / "cw.db").exists()  # refused before anything was opened


def test_serve_workers_below_one_is_refused(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = gateway_toml(MOCK_URL, db_url)
    (tmp_path / "costwarden.toml").write_text(text, encoding="utf-8")
    env = cli_env(**PROVIDER_ENV, COSTWARDEN_WORKERS="0")
    monkeypatch.chdir(tmp_path)
    result = cli("serve", "--config", "costwarden.toml", env=env)
    assert_clean_error(result, "COSTWARDEN_WORKERS", "server.workers: must be at least 1")


def test_settings_command_prints_every_setting() -> None:
    result = cli("settings", env=cli_env(columns=400))
    assert result.code == 0, result.err
    assert "costwarden settings" in result.out
    for key, _default, env_var, help_text in settings_help():
        assert key in result.out, key
        assert env_var in result.out
        assert help_text.split()[0] in result.out
    assert "COSTWARDEN_PORT" in result.out and "COSTWARDEN_ADMIN_TOKEN" in result.out
    # ...and it still renders, folded, in a narrow terminal.
    narrow = cli("settings", env=cli_env(columns=80))
    assert narrow.code == 0 and "server.port" in narrow.out
    assert max(len(line) for line in narrow.out.splitlines()) <= 80


def test_settings_command_warns_of_a_files_deprecated_settings(tmp_path: Path) -> None:
    config = tmp_path / "costwarden.toml"
    config.write_text(
        gateway_toml(MOCK_URL, f"sqlite:///{tmp_path}/cw.db")
        + '[budgets]\nredis_url = "redis://:pw-123@cache:6379/0"\n'
    )
    result = cli("settings", "--config", str(config), env=cli_env(columns=400))
    assert result.code == 0, result.err
    assert "redis.url" in result.out  # the table still
    (warning,) = result.err.splitlines()
    assert warning.startswith(f"warning: {config}:"), warning
    assert "budgets.redis_url: deprecated: it is now redis.url" in warning
    assert "pw-123" not in result.both
    # Without --config, or with a file that needs no change: no warning.
    assert cli("settings", env=cli_env(columns=400)).err == ""
    config.write_text(gateway_toml(MOCK_URL, f"sqlite:///{tmp_path}/cw.db"))
    assert cli("settings", "--config", str(config), env=cli_env()).err == ""
    # A file that does not load is an error, as for any command.
    bad = cli("settings", "--config", str(tmp_path / "missing.toml"), env=cli_env())
    assert_clean_error(bad, "config file not found")


# ----------------------------------------------------------------------------- live


async def _chat_status(http: aiohttp.ClientSession, base_url: str, key: str) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    async with http.post(base_url + "/v1/chat/completions", json=body, headers=headers) as r:
        await r.read()
        return r.status


async def _until_status(
    http: aiohttp.ClientSession, base_url: str, key: str, want: int, limit: float = 3.0
) -> float:
    """Seconds until a chat request with ``key`` gets ``want`` (fails after ``limit``)."""
    t0 = time.monotonic()
    while True:
        status = await _chat_status(http, base_url, key)
        elapsed = time.monotonic() - t0
        if status == want:
            return elapsed
        assert elapsed < limit, f"still {status} after {elapsed:.2f}s"
        await asyncio.sleep(0.02)


async def test_cli_key_changes_reach_a_running_gateway(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    async with live_gateway(mock, database_url, tmp_path) as gw:
        config = tmp_path / "cli.toml"
        config.write_text(gateway_toml(mock.base_url, database_url), encoding="utf-8")
        async with aiohttp.ClientSession() as http:
            assert await _chat_status(http, gw.base_url, gw.key) == 200  # the gateway works
            created = await arun_cli(
                "keys", "create", "--config", str(config), "--org", "cli", "--json"
            )
            key = created.json()["key"]
            live_after = await _until_status(http, gw.base_url, key, 200)
            assert live_after < 1.0, f"new key took {live_after:.2f}s to work"

            revoked = await arun_cli(
                "keys", "revoke", "--config", str(config), created.json()["id"]
            )
            assert revoked.code == 0, revoked.err
            dead_after = await _until_status(http, gw.base_url, key, 401)
            assert dead_after < 1.0, f"revoked key still worked {dead_after:.2f}s later"
            # The gateway's own key is untouched.
            assert await _chat_status(http, gw.base_url, gw.key) == 200


async def test_unknown_keys_do_not_query_the_database(mock: MockServer, tmp_path: Path) -> None:
    async with live_gateway(mock, f"sqlite:///{tmp_path}/cw.db", tmp_path) as gw:
        refresh = gw.app.settings.server.key_refresh_seconds
        assert refresh == 0.2
        statements: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        event.listen(gw.app.engine, "before_cursor_execute", count)
        try:
            rng = random.Random(2000)
            keys = [
                "cw-" + "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=43))
                for _ in range(2000)
            ]
            statuses: list[int] = []
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=connector) as http:
                sem = asyncio.Semaphore(64)

                async def one(key: str) -> None:
                    async with sem:
                        statuses.append(await _chat_status(http, gw.base_url, key))

                t0 = time.monotonic()
                await asyncio.gather(*(one(k) for k in keys))
                duration = time.monotonic() - t0
                burst = list(statements)
                # Sanity: a valid key still works afterwards.
                assert await _chat_status(http, gw.base_url, gw.key) == 200
        finally:
            event.remove(gw.app.engine, "before_cursor_execute", count)
    assert statuses == [401] * 2000
    # Transaction control (BEGIN/COMMIT...) rides along with each poll's SELECT; count the
    # statements that read or write data.
    queries = [
        s
        for s in burst
        if not s.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA"))
    ]
    key_polls = [q for q in queries if "virtual_keys" in q and "updated_at" in q]
    policy_polls = [q for q in queries if "policy_state" in q]
    switch_polls = [q for q in queries if "switches" in q]
    route_polls = [q for q in queries if "route_fallbacks" in q]
    security_polls = [q for q in queries if "security_policies" in q]
    # The event bus's own background work (its log poll and batch writes of earlier events).
    event_log = [q for q in queries if "event_log" in q or "event_sequence" in q]
    # The alert delivery loop's: alerts due to resolve, deliveries due (a slow burst on a
    # loaded machine lasts long enough to meet it).
    alert_polls = [q for q in queries if "FROM alerts" in q or "FROM alert_deliveries" in q]
    # ...and those are the key cache's, the limit book's, the switch board's, the route
    # table's, the event log's and the alert loop's polls, not per-request lookups.
    polls = (
        len(key_polls) + len(policy_polls) + len(switch_polls) + len(route_polls)
        + len(security_polls) + len(event_log) + len(alert_polls)
    )  # fmt: skip
    known = (
        key_polls + policy_polls + switch_polls + route_polls + security_polls + event_log
        + alert_polls
    )  # fmt: skip
    others = [q for q in queries if q not in known]
    assert polls == len(queries), others
    assert len(event_log) <= duration / 0.5 + 4, (len(event_log), duration)
    switch_refresh = gw.app.settings.switches.refresh_seconds
    assert len(switch_polls) <= duration / switch_refresh + 2, (len(switch_polls), duration)
    assert len(route_polls) <= duration / switch_refresh + 2, (len(route_polls), duration)
    assert len(key_polls) <= duration / refresh + 2, (len(key_polls), duration)
    assert len(security_polls) <= duration / refresh + 2, (len(security_polls), duration)
    budget_refresh = gw.app.settings.budgets.refresh_seconds
    assert len(policy_polls) <= duration / budget_refresh + 2, (len(policy_polls), duration)
    delivery_poll = gw.app.settings.alerts.delivery_poll_seconds
    assert len(alert_polls) <= 2 * (duration / delivery_poll + 2), (len(alert_polls), duration)
