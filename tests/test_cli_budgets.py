"""``costwarden budgets|limits|tiers|orgs``: on SQLite and PostgreSQL.

The tests call the command line in-process with click's CliRunner; the live tests run it in
a worker thread against the database of a gateway serving in this event loop: a limit set
from the CLI must be enforced by that gateway within a second, and ``budgets show`` must
report what the ledger says was spent.

Bad input is one line on stderr, exit status 2, and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.budgets.limits import (
    BUDGET_NAMES,
    RATE_LIMIT_NAMES,
    UNLIMITED,
    format_amount,
)
from costwarden.mock import MockServer
from costwarden.storage import policy, repo
from costwarden.storage.counters import ADMITTED_STATUSES
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.schema import org_tiers
from costwarden.storage.usage import ledger_rows
from tests.helpers import (
    CliResult,
    LiveGateway,
    ainvoke_cli,
    assert_clean_error,
    gateway_toml,
    live_gateway,
    set_limits,
)
from tests.helpers import invoke_cli as cli

MOCK_URL = "http://127.0.0.1:9"  # nothing listens there; these commands never call it
CONFIG_TIER = """
[[tiers]]
name = "free"
org = { daily_usd = "1", requests_per_minute = 100 }
"""


pytestmark = pytest.mark.usefixtures("clean_cli_env")


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> str:
    path = tmp_path / "costwarden.toml"
    path.write_text(gateway_toml(MOCK_URL, database_url, extra=CONFIG_TIER), encoding="utf-8")
    return str(path)


@dataclasses.dataclass
class Ctx:
    """Org acme (project web, a key) and org beta (a key)."""

    engine: Engine
    config: str
    acme: str
    web: str
    key: str
    beta_key: str


@pytest.fixture
def ctx(database_url: str, config: str) -> Iterator[Ctx]:
    engine = create_engine_for(database_url)
    migrate(engine)
    acme, _ = repo.ensure_org(engine, "acme")
    web = repo.ensure_project(engine, acme, "web")
    _, key = repo.create_key(engine, org="acme", project="web")
    _, beta_key = repo.create_key(engine, org="beta")
    try:
        yield Ctx(engine, config, acme, web, key.id, beta_key.id)
    finally:
        engine.dispose()


def assert_usage_error(result: CliResult, *needles: str) -> None:
    """click's usage error: exit 2, usage and the problem on stderr."""
    assert result.code == 2, result
    assert "Traceback" not in result.out + result.err
    assert "Error:" in result.err, result.err
    for needle in needles:
        assert needle in result.err, (needle, result.err)


def snapshot(engine: Engine) -> tuple[Any, ...]:
    with engine.connect() as conn:
        assigned = sorted(tuple(r) for r in conn.execute(sa.select(org_tiers)).all())
    return (
        policy.policy_version(engine),
        policy.list_limits(engine),
        policy.list_tiers(engine),
        assigned,
    )


# ------------------------------------------------------------------------- options


def test_limit_options_come_from_the_limit_names() -> None:
    for command, names in (("budgets", BUDGET_NAMES), ("limits", RATE_LIMIT_NAMES)):
        result = cli(command, "set", "--help")
        assert result.code == 0, result.err
        for name in names:
            assert "--" + name.replace("_", "-") in result.out, name
        others = RATE_LIMIT_NAMES if command == "budgets" else BUDGET_NAMES
        for name in others:
            assert "--" + name.replace("_", "-") + " " not in result.out, name
        for scope in ("--org", "--platform", "--project", "--key", "--user", "--session", "--tag"):
            assert scope in result.out
    assert "--mode" in cli("budgets", "set", "--help").out


# ------------------------------------------------------------------------- set


def test_budgets_set_json_table_and_storage(ctx: Ctx) -> None:
    data = cli(
        "budgets", "set", "--config", ctx.config, "--org", "acme",
        "--daily-usd", "5", "--monthly-usd", "-1", "--lifetime-tokens", "1000000",
        "--json",
    ).json()  # fmt: skip
    assert [(x["limit_name"], x["limit"], x["mode"], x["kind"]) for x in data] == [
        ("daily_usd", "5", "hard", "budget"),
        ("monthly_usd", "-1", "hard", "budget"),
        ("lifetime_tokens", "1000000", "hard", "budget"),
    ]
    assert {(x["org"], x["scope"], x["scope_id"]) for x in data} == {("acme", "org", ctx.acme)}
    stored = {lim.name: lim for lim in policy.list_limits(ctx.engine)}
    assert stored["daily_usd"].amount == 5 * 10**9
    assert stored["monthly_usd"].amount == UNLIMITED
    assert stored["lifetime_tokens"].amount == 1_000_000

    table = cli(
        "budgets", "set", "--config", ctx.config, "--org", "acme", "--daily-usd=0.25",
        "--mode", "soft",
    )  # fmt: skip
    assert table.code == 0, table.err
    for needle in ("set on org acme", "daily_usd", "0.25 USD", "soft", "within 0.5 s"):
        assert needle in table.out, needle
    stored = {lim.name: lim for lim in policy.list_limits(ctx.engine)}
    assert (stored["daily_usd"].amount, stored["daily_usd"].mode) == (250_000_000, "soft")
    unlimited = cli("budgets", "set", "--config", ctx.config, "--org", "acme", "--daily-usd", "-1")
    assert unlimited.code == 0 and "unlimited" in unlimited.out, unlimited.err


def test_every_scope(ctx: Ctx) -> None:
    base = ("--config", ctx.config, "--json")
    for args, scope, subject in [
        (("--project", "web"), "project", ctx.web),
        (("--project", ctx.web), "project", ctx.web),
        (("--key", ctx.key), "key", ctx.key),
        (("--user", " alice "), "user", "alice"),
        (("--session", "s-1"), "session", "s-1"),
        (("--tag", "team = search"), "tag", "team=search"),
    ]:
        made_json = cli("limits", "set", *base, "--org", "acme", *args, "--tokens-per-minute", "9")
        (made,) = made_json.json()
        assert (made["scope"], made["scope_id"], made["mode"]) == (scope, subject, "soft")
        assert made["kind"] == "rate_limit" and made["limit_name"] == "tokens_per_minute"
    (made,) = cli("budgets", "set", *base, "--platform", "--daily-requests", "7").json()
    assert (made["org"], made["scope"], made["scope_id"], made["limit"]) == (
        None,
        "platform",
        None,
        "7",
    )
    stored = {(lim.scope, lim.subject) for lim in policy.list_limits(ctx.engine)}
    assert stored == {
        ("project", ctx.web),
        ("key", ctx.key),
        ("user", "alice"),
        ("session", "s-1"),
        ("tag", "team=search"),
        ("platform", ""),
    }


def test_rate_limit_options(ctx: Ctx) -> None:
    args = []
    for i, name in enumerate(RATE_LIMIT_NAMES):
        args += ["--" + name.replace("_", "-"), str(i + 1)]
    data = cli("limits", "set", "--config", ctx.config, "--org", "acme", *args, "--json").json()
    assert [x["limit_name"] for x in data] == list(RATE_LIMIT_NAMES)
    assert [x["limit"] for x in data] == [str(i + 1) for i in range(len(RATE_LIMIT_NAMES))]
    assert {x["mode"] for x in data} == {"soft"}


def test_bad_input_is_one_line_and_changes_nothing(ctx: Ctx) -> None:
    cli("budgets", "set", "--config", ctx.config, "--org", "acme", "--daily-usd", "3")
    cli("tiers", "set", "--config", ctx.config, "pro", "--org-limits", "daily_usd=9")
    cli("orgs", "set-tier", "--config", ctx.config, "--org", "beta", "--tier", "pro")
    before = snapshot(ctx.engine)
    assert before[0] == 3
    c = ("--config", ctx.config)
    cases: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
        (("budgets", "set", *c, "--org", "acme", "--daily-usd", "-5"), ("--daily-usd", "-5")),
        (("budgets", "set", *c, "--org", "acme", "--daily-usd", "abc"), ("not a number",)),
        (("budgets", "set", *c, "--org", "acme", "--daily-usd", "1e999999"), ("too large",)),
        (("budgets", "set", *c, "--org", "acme", "--daily-tokens", "1e99999999999"), ("large",)),
        (("budgets", "set", *c, "--org", "acme", "--daily-tokens", "9007199254740992"), ("large",)),
        (("budgets", "set", *c, "--org", "acme", "--daily-usd", "0.0000000001"), ("9 decimal",)),
        (("budgets", "set", *c, "--org", "acme", "--daily-tokens", "1.5"), ("whole number",)),
        (("budgets", "set", *c, "--org", "acme", "--daily-usd", "NaN"), ("finite",)),
        # one bad amount and the good one given with it is not set either
        (
            ("budgets", "set", *c, "--org", "acme", "--daily-usd", "4", "--daily-requests", "-3"),
            ("--daily-requests",),
        ),
        (("limits", "set", *c, "--org", "acme", "--requests-per-hour", "-2"), ("zero or pos",)),
        (("budgets", "set", *c, "--org", "acme"), ("at least one limit",)),
        (("budgets", "set", *c, "--daily-usd", "5"), ("--org", "--platform")),
        (("budgets", "set", *c, "--org", "nope", "--daily-usd", "5"), ("unknown org 'nope'",)),
        (
            ("budgets", "set", *c, "--org", "acme", "--project", "nope", "--daily-usd", "1"),
            ("no project 'nope'",),
        ),  # noqa: E501
        (
            ("budgets", "set", *c, "--org", "acme", "--key", ctx.beta_key, "--daily-usd", "1"),
            (ctx.beta_key,),
        ),  # noqa: E501
        (
            (
                "budgets",
                "set",
                *c,
                "--org",
                "acme",
                "--key",
                "key_000000000000",
                "--daily-usd",
                "1",
            ),
            ("no key",),
        ),  # noqa: E501
        (
            ("budgets", "set", *c, "--org", "acme", "--tag", "team", "--daily-usd", "1"),
            ("name=value",),
        ),  # noqa: E501
        (("budgets", "set", *c, "--org", "acme", "--user", "  ", "--daily-usd", "1"), ("empty",)),
        (
            (
                "budgets",
                "set",
                *c,
                "--org",
                "acme",
                "--user",
                "a",
                "--tag",
                "t=1",
                "--daily-usd",
                "1",
            ),
            ("at most one",),
        ),  # noqa: E501
        (
            ("budgets", "set", *c, "--platform", "--org", "acme", "--daily-usd", "1"),
            ("--platform", "no --org"),
        ),  # noqa: E501
        (("budgets", "set", *c, "--platform", "--user", "a", "--daily-usd", "1"), ("--platform",)),
        (("budgets", "clear", *c, "--org", "nope"), ("unknown org 'nope'",)),
        (("budgets", "clear", *c, "--org", "acme", "--project", "nope"), ("nope",)),
        (("budgets", "show", *c, "--org", "nope"), ("unknown org 'nope'",)),
        (("orgs", "set-tier", *c, "--org", "acme", "--tier", "nope"), ("unknown tier 'nope'",)),
        (("orgs", "set-tier", *c, "--org", "nope", "--tier", "free"), ("unknown org 'nope'",)),
        (("orgs", "set-tier", *c, "--org", "acme"), ("exactly one",)),
        (("orgs", "set-tier", *c, "--org", "acme", "--tier", "free", "--none"), ("exactly one",)),
        (("tiers", "set", *c, "free", "--org-limits", "daily_usd=2"), ("config file",)),
        (("tiers", "delete", *c, "free"), ("config file",)),
        (("tiers", "delete", *c, "nope"), ("unknown tier 'nope'",)),
        (("tiers", "delete", *c, "pro"), ("still used by org(s) beta",)),
        (("tiers", "set", *c, "pro"), ("at least one of --org-limits",)),
        (("tiers", "set", *c, "pro", "--org-limits", "weekly_usd=5"), ("weekly_usd",)),
        (("tiers", "set", *c, "pro", "--org-limits", "daily_usd"), ("NAME=AMOUNT",)),
        (("tiers", "set", *c, "pro", "--org-limits", "daily_usd=1,daily_usd=2"), ("twice",)),
        (("tiers", "set", *c, "pro", "--key-limits", "daily_usd=-4"), ("zero or positive",)),
        (("tiers", "set", *c, "pro", "--key-limits", "daily_tokens=1e999999"), ("too large",)),
        (("tiers", "set", *c, " ", "--key-limits", "daily_usd=4"), ("must not be empty",)),
    ]
    for args, needles in cases:
        line = assert_clean_error(cli(*args), *needles)
        assert snapshot(ctx.engine) == before, (args, line)


def test_unknown_options_are_usage_errors(ctx: Ctx) -> None:
    before = snapshot(ctx.engine)
    c = ("--config", ctx.config)
    for args, needle in [
        (("budgets", "set", *c, "--org", "acme", "--weekly-usd", "5"), "--weekly-usd"),
        (("limits", "set", *c, "--org", "acme", "--requests-per-week", "5"), "--requests-per-w"),
        (("limits", "set", *c, "--org", "acme", "--daily-usd", "5"), "--daily-usd"),
        (("budgets", "set", *c, "--org", "acme", "--requests-per-minute", "5"), "--requests-per"),
        (("budgets", "set", *c, "--org", "acme", "--daily-usd", "1", "--mode", "medium"), "medium"),
        (("budgets", "clear", *c, "--org", "acme", "--limit", "weekly_usd"), "weekly_usd"),
        (("budgets", "set", *c, "--org", "acme", "--daily-usd"), "--daily-usd"),
    ]:
        assert_usage_error(cli(*args), needle)
        assert snapshot(ctx.engine) == before, args


# ------------------------------------------------------------------------- show, clear


def test_show_and_clear(ctx: Ctx) -> None:
    c = ("--config", ctx.config)
    empty = cli("budgets", "show", *c, "--org", "acme")
    assert empty.code == 0 and "no budgets or rate limits apply to org acme" in empty.out
    assert cli("budgets", "show", *c, "--org", "acme", "--json").json() == []
    cli("budgets", "set", *c, "--org", "acme", "--daily-usd", "5", "--daily-requests", "10")
    cli("limits", "set", *c, "--org", "acme", "--tag", "team=a", "--requests-per-minute", "6")
    cli("budgets", "set", *c, "--platform", "--monthly-usd", "-1")
    cli("orgs", "set-tier", *c, "--org", "acme", "--tier", "free")
    shown = cli("budgets", "show", *c, "--org", "acme", "--json").json()
    rows = {(x["scope"], x["limit_name"]): x for x in shown}
    assert set(rows) == {
        ("org", "daily_usd"),
        ("org", "daily_requests"),
        ("tag", "requests_per_minute"),
        ("platform", "monthly_usd"),
        ("org", "requests_per_minute"),  # the free tier's default; its daily_usd is overridden
    }
    assert rows[("org", "requests_per_minute")]["source"] == "tier free"
    usd = rows[("org", "daily_usd")]
    assert (usd["limit"], usd["spent"], usd["reserved"], usd["remaining"]) == ("5", "0", "0", "5")
    assert usd["percent_used"] == "0.00" and usd["resets_at"].endswith("T00:00:00Z")
    assert rows[("tag", "requests_per_minute")]["scope_id"] == "team=a"
    assert rows[("tag", "requests_per_minute")]["resets_at"] is None

    table = cli("budgets", "show", *c, "--org", "acme")
    assert table.code == 0, table.err
    for needle in ("budgets and rate limits of org acme", "daily_usd", "team=a", "tier free"):
        assert needle in table.out, needle
    for header in ("scope", "limit", "spent", "reserved", "remaining", "used %", "resets at"):
        assert header in table.out, header
    assert usd["resets_at"] in table.out and "rolling minute" in table.out

    cleared = cli("budgets", "clear", *c, "--org", "acme", "--limit", "daily_usd", "--json")
    assert cleared.json() == {"deleted": 1}
    again = cli("limits", "clear", *c, "--org", "acme", "--tag", "team=a")
    assert again.code == 0 and "cleared 1 limit(s) on tag team=a of org acme" in again.out
    rest = {(lim.scope, lim.name) for lim in policy.list_limits(ctx.engine)}
    assert rest == {("org", "daily_requests"), ("platform", "monthly_usd")}
    assert cli("budgets", "clear", *c, "--platform", "--json").json() == {"deleted": 1}
    assert cli("budgets", "clear", *c, "--org", "acme", "--json").json() == {"deleted": 1}
    assert cli("budgets", "clear", *c, "--org", "acme", "--json").json() == {"deleted": 0}
    assert policy.list_limits(ctx.engine) == []


def test_show_in_a_narrow_terminal(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    c = ("--config", ctx.config)
    cli("budgets", "set", *c, "--org", "acme", "--key", ctx.key, "--daily-usd", "0.123456789")
    monkeypatch.setenv("COLUMNS", "80")
    narrow = cli("budgets", "show", *c, "--org", "acme")
    assert narrow.code == 0, narrow.err
    assert max(len(line) for line in narrow.out.splitlines()) <= 80
    # Nothing is cut or folded: ids and amounts appear whole.
    for needle in (ctx.key, "daily_usd", "0.123456789", "remaining 0.123456789"):
        assert needle in narrow.out, needle


# ------------------------------------------------------------------------- tiers, orgs


def test_tiers_and_org_tier(ctx: Ctx) -> None:
    c = ("--config", ctx.config)
    listed = cli("tiers", "list", *c, "--json").json()
    assert listed == [
        {
            "name": "free",
            "source": "config",
            "limits": {"org": {"daily_usd": "1", "requests_per_minute": "100"}},
        }
    ]
    made = cli(
        "tiers", "set", *c, "pro", "--org-limits", "monthly_usd=500, requests_per_minute=60",
        "--key-limits", "requests_per_minute=10", "--json",
    ).json()  # fmt: skip
    assert made == {
        "name": "pro",
        "source": "api",
        "limits": {
            "org": {"monthly_usd": "500", "requests_per_minute": "60"},
            "key": {"requests_per_minute": "10"},
        },
    }
    table = cli("tiers", "list", *c)
    assert table.code == 0, table.err
    for needle in ("free", "config", "pro", "api", "monthly_usd=500", "requests_per_minute=10"):
        assert needle in table.out, needle

    on = cli("orgs", "set-tier", *c, "--org", "acme", "--tier", "pro")
    assert on.code == 0 and "org acme is on tier pro" in on.out, on.err
    with ctx.engine.connect() as conn:
        assert conn.execute(sa.select(org_tiers.c.org_id, org_tiers.c.tier)).all() == [
            (ctx.acme, "pro")
        ]
    shown = cli("budgets", "show", *c, "--org", "acme", "--json").json()
    assert {(x["limit_name"], x["source"]) for x in shown} == {
        ("monthly_usd", "tier pro"),
        ("requests_per_minute", "tier pro"),
    }
    # Replacing a tier replaces all of its limits.
    cli("tiers", "set", *c, "pro", "--org-limits", "daily_usd=2")
    (tier,) = policy.list_tiers(ctx.engine)
    assert [(e.scope, e.metric, e.window, e.amount) for e in tier.entries] == [
        ("org", "usd", "day", 2 * 10**9)
    ]
    off = cli("orgs", "set-tier", *c, "--org", "acme", "--none", "--json").json()
    assert off == {"org": "acme", "tier": None}
    deleted = cli("tiers", "delete", *c, "pro")
    assert deleted.code == 0 and "deleted tier pro" in deleted.out
    assert policy.list_tiers(ctx.engine) == []
    free = cli("orgs", "set-tier", *c, "--org", "acme", "--tier", "free", "--json").json()
    assert free == {"org": "acme", "tier": "free"}


# ------------------------------------------------------------------------- live


async def _status(http: aiohttp.ClientSession, gw: LiveGateway) -> int:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {gw.key}"}
    async with http.post(gw.base_url + "/v1/chat/completions", json=body, headers=headers) as r:
        await r.read()
        return r.status


async def _seconds_until(
    http: aiohttp.ClientSession, gw: LiveGateway, want: int, limit: float = 3.0
) -> float:
    """Seconds from now until a chat request gets ``want``."""
    t0 = time.monotonic()
    while True:
        status = await _status(http, gw)
        elapsed = time.monotonic() - t0
        if status == want:
            return elapsed
        assert elapsed < limit, f"still {status} after {elapsed:.2f}s"
        await asyncio.sleep(0.01)


def _cli_config(tmp_path: Path, mock: MockServer, database_url: str) -> str:
    path = tmp_path / "cli.toml"
    path.write_text(gateway_toml(mock.base_url, database_url), encoding="utf-8")
    return str(path)


async def test_limits_set_from_the_cli_reach_a_running_gateway_within_a_second(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    async with live_gateway(mock, database_url, tmp_path) as gw:
        config = _cli_config(tmp_path, mock, database_url)
        async with aiohttp.ClientSession() as http:
            assert await _status(http, gw) == 200
            delays: dict[str, float] = {}

            done = await ainvoke_cli(
                "limits", "set", "--config", config, "--org", "acme", "--requests-per-hour", "0"
            )
            assert done.code == 0, done.err
            delays["limits set --requests-per-hour 0 -> 429"] = await _seconds_until(http, gw, 429)

            done = await ainvoke_cli("limits", "clear", "--config", config, "--org", "acme")
            assert done.code == 0, done.err
            delays["limits clear -> 200"] = await _seconds_until(http, gw, 200)

            done = await ainvoke_cli(
                "budgets", "set", "--config", config, "--org", "acme", "--key", gw.key_id,
                "--daily-requests", "0",
            )  # fmt: skip
            assert done.code == 0, done.err
            delays["budgets set --daily-requests 0 -> 402"] = await _seconds_until(http, gw, 402)

    backend = database_url.split(":", 1)[0]
    for what, seconds in delays.items():
        print(f"live apply [{backend}] {what}: {seconds * 1000:.0f} ms after the CLI exited")
        assert seconds < 1.0, f"{what}: took {seconds:.2f}s"


async def test_cli_show_matches_the_ledger_after_live_traffic(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    async with live_gateway(mock, database_url, tmp_path) as gw:
        config = _cli_config(tmp_path, mock, database_url)
        done = await ainvoke_cli(
            "budgets", "set", "--config", config, "--org", "acme",
            "--daily-usd", "5", "--daily-requests", "50", "--json",
        )  # fmt: skip
        assert [x["limit_name"] for x in done.json()] == ["daily_usd", "daily_requests"]
        done = await ainvoke_cli(
            "limits", "set", "--config", config, "--org", "acme", "--project", "web",
            "--tokens-per-hour", "100000",
        )  # fmt: skip
        assert done.code == 0, done.err
        await gw.app.enforcer.refresh()  # (or wait for the poll; timing is tested above)
        async with aiohttp.ClientSession() as http:
            statuses = [await _status(http, gw) for _ in range(4)]
        assert statuses == [200] * 4
        await gw.app.ledger.flush()
        rows = await asyncio.to_thread(ledger_rows, gw.app.engine, None, 100_000)
        mine = [r for r in rows if r.status in ADMITTED_STATUSES]
        assert len(mine) == 4
        nanos = sum(math.ceil(r.cost_usd * 1_000_000_000) for r in mine)
        tokens = sum(r.input_tokens + r.output_tokens for r in mine)
        assert nanos > 0 and tokens > 0

        shown = await ainvoke_cli("budgets", "show", "--config", config, "--org", "acme", "--json")
        by_name = {x["limit_name"]: x for x in shown.json()}
        usd = by_name["daily_usd"]
        assert usd["spent"] == format_amount("usd", nanos), (usd, nanos)
        assert Decimal(usd["remaining"]) == 5 - Decimal(nanos) / 10**9
        assert by_name["daily_requests"]["spent"] == "4"
        assert by_name["daily_requests"]["remaining"] == "46"
        assert by_name["tokens_per_hour"]["spent"] == str(tokens)
        assert by_name["tokens_per_hour"]["scope_id"] is not None

        # ...and equals what the gateway itself counted (the admin API's view).
        from costwarden.budgets.status import live_status

        org = repo.get_org_by_name(gw.app.engine, "acme")
        assert org is not None
        live = await live_status(
            gw.app.enforcer.book, gw.app.enforcer.store, org.id, time.time(), "UTC"
        )
        assert {s.limit.name: s.to_json()["spent"] for s in live} == {
            name: x["spent"] for name, x in by_name.items()
        }

        table = await ainvoke_cli("budgets", "show", "--config", config, "--org", "acme")
        assert table.code == 0, table.err
        usd_line = next(line for line in table.out.splitlines() if "daily_usd" in line)
        assert format_amount("usd", nanos) in usd_line.split(), usd_line
        requests_line = next(line for line in table.out.splitlines() if "daily_requests" in line)
        cells = requests_line.split()
        assert cells[cells.index("50") + 1] == "4", cells  # amount, then spent


async def test_cli_show_reads_the_shared_redis_counters(
    mock: MockServer, tmp_path: Path, private_redis: str
) -> None:
    # Only Redis knows what a running gateway has reserved: the ledger has no row yet.
    database_url = f"sqlite:///{tmp_path}/cw.db"
    extra = f'[redis]\nurl = "{private_redis}"\n'
    mock.state.update(latency_ms=30_000)  # longer than the CLI takes, however busy
    async with live_gateway(mock, database_url, tmp_path, extra_toml=extra) as gw:
        config = tmp_path / "cli.toml"
        config.write_text(gateway_toml(mock.base_url, database_url, extra=extra))
        await set_limits(gw, daily_requests="10")
        async with aiohttp.ClientSession() as http:
            call = asyncio.create_task(_status(http, gw))
            await asyncio.sleep(0.5)  # reserved, waiting for the upstream
            shown = await ainvoke_cli(
                "budgets", "show", "--config", str(config), "--org", "acme", "--json"
            )
            assert not call.done()
            call.cancel()  # the client goes away: the gateway cancels the upstream call
            with contextlib.suppress(asyncio.CancelledError):
                await call
    (requests,) = shown.json()
    assert (requests["limit_name"], requests["reserved"], requests["spent"]) == (
        "daily_requests",
        "1",
        "0",
    )
