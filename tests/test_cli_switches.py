"""``costwarden switches list|off|on`` and ``costwarden audit``, on SQLite and PostgreSQL.

Commands run in-process with click's CliRunner against a real database. Every change is
audited with the actor ``cli:<OS user>``; switching everything off needs
``--yes-disable-everything``; bad input is one line on stderr, exit status 2, and changes
nothing. A running gateway applies a CLI change within a second, and alerts on it: the CLI
raises switch_changed as the admin API does.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from costwarden.app.factory import create_app
from costwarden.config.settings import load_settings
from costwarden.storage import repo
from costwarden.storage.audit import audit_entries
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.switches import FEATURES, list_switches
from tests.helpers import PROVIDER_ENV, assert_clean_error, gateway_toml
from tests.helpers import invoke_cli as cli

MOCK_URL = "http://127.0.0.1:9"  # nothing listens there; these commands never call it


pytestmark = pytest.mark.usefixtures("clean_cli_env")


@pytest.fixture
def config(tmp_path: Path, database_url: str) -> str:
    path = tmp_path / "costwarden.toml"
    path.write_text(gateway_toml(MOCK_URL, database_url), encoding="utf-8")
    return str(path)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine_for(database_url)
    migrate(engine)
    repo.ensure_org(engine, "acme")
    try:
        yield engine
    finally:
        engine.dispose()


def snapshot(engine: Engine) -> tuple[Any, ...]:
    return list_switches(engine), audit_entries(engine, limit=1000)


ACTOR = f"cli:{getpass.getuser()}"


# --------------------------------------------------------------------------- switches


def test_list_when_nothing_is_set(config: str, engine: Engine) -> None:
    assert cli("switches", "list", "--config", config, "--json").json() == {
        "version": 0,
        "switches": [],
    }
    result = cli("switches", "list", "--config", config)
    assert result.code == 0 and "everything is on" in result.out


def test_off_and_on_for_an_org(config: str, engine: Engine) -> None:
    result = cli("switches", "off", "--config", config, "--org", "acme", "--message", "paused")
    assert result.code == 0, result.err
    assert "ai is OFF for org acme" in result.out and "within 0.5 s" in result.out
    (record,) = list_switches(engine)
    assert (record.org_name, record.feature, record.enabled, record.message) == (
        "acme",
        "ai",
        False,
        "paused",
    )
    assert record.updated_by == ACTOR

    listed = cli("switches", "list", "--config", config)
    assert listed.code == 0
    assert "acme" in listed.out and "OFF" in listed.out and "paused" in listed.out

    data = cli("switches", "on", "--config", config, "--org", "acme", "--json").json()
    assert (data["org"], data["feature"], data["enabled"], data["version"]) == (
        "acme",
        "ai",
        True,
        2,
    )
    entries = audit_entries(engine)
    assert [(e.actor, e.action) for e in entries] == [(ACTOR, "switch.set")] * 2
    assert entries[0].old_value == {"enabled": False, "message": "paused"}
    assert entries[0].new_value == {"enabled": True, "message": None}
    assert entries[1].old_value is None


def test_platform_ai_off_needs_the_flag(config: str, engine: Engine) -> None:
    before = snapshot(engine)
    assert_clean_error(
        cli("switches", "off", "--config", config), "--yes-disable-everything", "every model call"
    )
    assert_clean_error(
        cli("switches", "off", "--config", config, "--feature", "ai", "--message", "x"),
        "--yes-disable-everything",
    )
    assert snapshot(engine) == before

    data = cli("switches", "off", "--config", config, "--yes-disable-everything", "--json").json()
    assert (data["scope"], data["feature"], data["enabled"]) == ("platform", "ai", False)
    assert data["updated_by"] == ACTOR
    # On again needs no flag.
    assert cli("switches", "on", "--config", config).code == 0
    assert list_switches(engine)[0].enabled is True


def test_platform_feature_toggle_needs_no_flag(config: str, engine: Engine) -> None:
    result = cli("switches", "off", "--config", config, "--feature", "streaming")
    assert result.code == 0, result.err
    assert "streaming is OFF platform-wide" in result.out
    assert [(r.org_id, r.feature, r.enabled) for r in list_switches(engine)] == [
        (None, "streaming", False)
    ]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("off", "--org", "nope"), ("unknown org 'nope'",)),
        (("on", "--org", "nope"), ("unknown org 'nope'",)),
        (("off", "--org", "acme", "--feature", "chat"), ("unknown feature", ", ".join(FEATURES))),
        (("on", "--feature", "x"), ("unknown feature",)),
        (("off", "--org", "acme", "--message", "a" * 501), ("longer than 500",)),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    config: str, engine: Engine, args: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    cli("switches", "off", "--config", config, "--org", "acme", "--feature", "messages")
    before = snapshot(engine)
    assert_clean_error(cli("switches", *args, "--config", config), *needles)
    assert snapshot(engine) == before


# --------------------------------------------------------------------------- audit


def test_audit(config: str, engine: Engine) -> None:
    cli("switches", "off", "--config", config, "--org", "acme", "--feature", "embeddings")
    cli("switches", "on", "--config", config, "--org", "acme", "--feature", "embeddings")
    data = cli("audit", "--config", config, "--json").json()
    assert [(e["actor"], e["action"], e["new_value"]["enabled"]) for e in data] == [
        (ACTOR, "switch.set", True),
        (ACTOR, "switch.set", False),
    ]
    assert len(cli("audit", "--config", config, "--json", "--limit", "1").json()) == 1
    assert cli("audit", "--config", config, "--json", "--action", "breaker.reset").json() == []
    table = cli("audit", "--config", config)
    assert table.code == 0 and ACTOR in table.out and "switch.set" in table.out
    assert '"enabled": false' in table.out
    for bad in ("0", "1001"):
        assert_clean_error(cli("audit", "--config", config, "--limit", bad), "limit")


# --------------------------------------------------------------------------- live


async def test_a_running_gateway_applies_a_cli_change_within_a_second(
    config: str, engine: Engine
) -> None:
    settings = load_settings(config, env={**PROVIDER_ENV})
    app = create_app(settings)
    await app.startup()
    try:
        acme = repo.get_org_by_name(engine, "acme")
        assert acme is not None
        assert app.switches.refusal(acme.id, "messages", False) is None
        result = await asyncio.to_thread(
            cli, "switches", "off", "--config", config, "--org", "acme", "--message", "cli says no"
        )
        assert result.code == 0, result.err
        started = time.monotonic()
        while (refusal := app.switches.refusal(acme.id, "messages", False)) is None:
            assert time.monotonic() - started < 1.0, "the gateway did not apply it within 1 s"
            await asyncio.sleep(0.01)
        assert refusal.message == "cli says no" and refusal.status == 503
    finally:
        await app.shutdown()


async def test_a_cli_switch_change_alerts_through_a_running_gateway(
    config: str, engine: Engine
) -> None:
    """The CLI raises switch_changed as the admin API does: the gateway's alerting turns the
    switch going off into a service alert, and back on resolves it."""
    from costwarden.storage.alerts import list_alerts

    settings = load_settings(config, env={**PROVIDER_ENV})
    app = create_app(settings)
    await app.startup()
    changes = app.events.subscribe(kinds=frozenset({"switch_changed"}))
    try:
        off = await asyncio.to_thread(
            cli, "switches", "off", "--config", config, "--org", "acme", "--feature", "embeddings"
        )
        assert off.code == 0, off.err
        event = await changes.get(timeout=10)
        assert event is not None
        assert (event.payload.feature, event.payload.enabled) == ("embeddings", False)  # type: ignore[attr-defined]
        assert event.payload.actor == ACTOR  # type: ignore[attr-defined]

        async def alerts() -> list[Any]:
            return await asyncio.to_thread(list_alerts, engine, limit=10)

        started = time.monotonic()
        while not (found := await alerts()):
            assert time.monotonic() - started < 10, "no alert was raised"
            await asyncio.sleep(0.05)
        (alert,) = found
        assert alert.rule == "service-kill-switch" and "embeddings" in alert.title
        on = await asyncio.to_thread(
            cli, "switches", "on", "--config", config, "--org", "acme", "--feature", "embeddings"
        )
        assert on.code == 0, on.err
        while (await alerts())[0].state != "resolved":
            assert time.monotonic() - started < 20, "the alert was not resolved"
            await asyncio.sleep(0.05)
    finally:
        changes.close()
        await app.shutdown()
