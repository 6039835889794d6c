"""SwitchBoard: the request path's view of the kill switch, on SQLite and PostgreSQL.

Switches are written with the storage functions (as the CLI does from another process); a
board sees them after ``reload()`` at once, and through its poller within a second. A poll
that fails keeps the last view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.config.settings import load_settings
from costwarden.core.errors import ConfigError, ServiceDisabled
from costwarden.gateway.switches import SwitchBoard
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.schema import switches as switches_table
from costwarden.storage.switches import set_switch
from tests.helpers import PROVIDER_ENV, gateway_toml

DEFAULT = "AI is off for now."
ENDPOINTS = ("chat.completions", "embeddings", "messages")


@pytest.fixture
def make_engine(database_url: str) -> Iterator[Callable[[], Engine]]:
    engines: list[Engine] = []

    def make() -> Engine:
        engine = create_engine_for(database_url)
        engines.append(engine)
        return engine

    migrate(database_url)
    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def engine(make_engine: Callable[[], Engine]) -> Engine:
    return make_engine()


@pytest.fixture
def orgs(engine: Engine) -> tuple[str, str]:
    acme, _ = repo.ensure_org(engine, "acme")
    beta, _ = repo.ensure_org(engine, "beta")
    return acme, beta


@pytest.fixture
async def board(engine: Engine) -> AsyncIterator[SwitchBoard]:
    sb = SwitchBoard(engine, refresh_seconds=0.5, default_message=DEFAULT)
    await sb.start()
    try:
        yield sb
    finally:
        await sb.close()


def _set(
    engine: Engine, org: str | None, feature: str, on: bool, message: str | None = None
) -> int:
    record = set_switch(engine, org=org, feature=feature, enabled=on, message=message, actor="test")
    return record.version


def _message(refusal: ServiceDisabled | None) -> str | None:
    if refusal is None:
        return None
    assert (refusal.status, refusal.type, refusal.code) == (
        503,
        "service_disabled",
        "service_disabled",
    )
    return refusal.message


async def _eventually(check: Callable[[], bool], within: float) -> float:
    """Seconds until ``check()`` held; fails after ``within`` seconds."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not seen within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


# --------------------------------------------------------------------------- refusal


async def test_nothing_off_refuses_nothing(
    engine: Engine, orgs: tuple[str, str], board: SwitchBoard
) -> None:
    acme, _ = orgs
    _set(engine, None, "ai", True)
    _set(engine, "acme", "streaming", True)
    await board.reload()
    assert board.version == 2 and len(board.switches) == 2
    for org_id in (acme, None):
        for endpoint in ENDPOINTS:
            for stream in (False, True):
                assert board.refusal(org_id, endpoint, stream) is None


async def test_platform_switches_apply_to_every_org(
    engine: Engine, orgs: tuple[str, str], board: SwitchBoard
) -> None:
    acme, beta = orgs
    _set(engine, None, "embeddings", False, "embeddings are paused")
    _set(engine, None, "streaming", False)
    await board.reload()
    for org_id in (acme, beta, None):
        assert _message(board.refusal(org_id, "embeddings", False)) == "embeddings are paused"
        assert board.refusal(org_id, "chat.completions", False) is None
        assert _message(board.refusal(org_id, "chat.completions", True)) == DEFAULT
        assert _message(board.refusal(org_id, "messages", True)) == DEFAULT
        assert board.refusal(org_id, "messages", False) is None

    _set(engine, None, "ai", False, "everything is off")
    await board.reload()
    for org_id in (acme, beta, None):
        for endpoint in ENDPOINTS:
            for stream in (False, True):
                assert _message(board.refusal(org_id, endpoint, stream)) == "everything is off"

    for feature in ("ai", "embeddings", "streaming"):
        _set(engine, None, feature, True)
    await board.reload()
    assert all(board.refusal(acme, e, s) is None for e in ENDPOINTS for s in (False, True))


async def test_org_switches_apply_to_that_org_only(
    engine: Engine, orgs: tuple[str, str], board: SwitchBoard
) -> None:
    acme, beta = orgs
    _set(engine, "acme", "ai", False, "acme is paused")
    _set(engine, "beta", "messages", False)
    await board.reload()
    for endpoint in ENDPOINTS:
        assert _message(board.refusal(acme, endpoint, False)) == "acme is paused"
        assert board.refusal(None, endpoint, False) is None
    assert _message(board.refusal(beta, "messages", False)) == DEFAULT
    assert board.refusal(beta, "chat.completions", True) is None
    assert board.refusal("org_unknown", "messages", False) is None


async def test_platform_message_wins_over_org_message(
    engine: Engine, orgs: tuple[str, str], board: SwitchBoard
) -> None:
    acme, _ = orgs
    _set(engine, "acme", "ai", False, "org says no")
    _set(engine, None, "chat.completions", False, "platform says no")
    await board.reload()
    assert _message(board.refusal(acme, "chat.completions", False)) == "platform says no"
    assert _message(board.refusal(acme, "embeddings", False)) == "org says no"


async def test_each_refusal_is_a_fresh_exception(
    engine: Engine, orgs: tuple[str, str], board: SwitchBoard
) -> None:
    _set(engine, None, "streaming", False)
    await board.reload()
    first = board.refusal(None, "chat.completions", True)
    second = board.refusal(None, "chat.completions", True)
    assert first is not None and second is not None and first is not second


async def test_refusal_costs_almost_nothing_when_all_is_on(
    engine: Engine, orgs: tuple[str, str], board: SwitchBoard
) -> None:
    acme, _ = orgs
    _set(engine, "acme", "ai", True)
    await board.reload()
    refusal = board.refusal
    started = time.perf_counter()
    for _ in range(100_000):
        refusal(acme, "chat.completions", True)
    per_call = (time.perf_counter() - started) / 100_000
    assert per_call < 5e-6, f"{per_call * 1e9:.0f} ns per call"


# --------------------------------------------------------------------------- live changes


async def test_reload_applies_a_change_at_once(engine: Engine, orgs: tuple[str, str]) -> None:
    sb = SwitchBoard(engine, refresh_seconds=60, default_message=DEFAULT)
    await sb.start()
    try:
        version = _set(engine, "acme", "ai", False)
        assert sb.refusal(orgs[0], "messages", False) is None  # the poller is a minute away
        await sb.reload()
        assert sb.version == version
        assert sb.refusal(orgs[0], "messages", False) is not None
    finally:
        await sb.close()


async def test_a_second_board_sees_changes_within_a_second(
    make_engine: Callable[[], Engine], orgs: tuple[str, str], board: SwitchBoard
) -> None:
    acme, beta = orgs
    other = SwitchBoard(make_engine(), refresh_seconds=0.5, default_message="other default")
    await other.start()
    try:
        writer = make_engine()
        await asyncio.to_thread(_set, writer, "acme", "ai", False, "stop")
        took = await _eventually(lambda: other.refusal(acme, "messages", False) is not None, 1.0)
        assert took < 1.0
        assert _message(other.refusal(acme, "messages", False)) == "stop"
        assert other.refusal(beta, "messages", False) is None
        # The first board polls too.
        await _eventually(lambda: board.refusal(acme, "messages", False) is not None, 1.0)

        await asyncio.to_thread(_set, writer, None, "streaming", False)
        await _eventually(lambda: other.refusal(beta, "embeddings", True) is not None, 1.0)
        assert _message(other.refusal(beta, "chat.completions", True)) == "other default"

        await asyncio.to_thread(_set, writer, "acme", "ai", True)
        await _eventually(lambda: other.refusal(acme, "messages", False) is None, 1.0)
        await _eventually(lambda: board.refusal(acme, "messages", False) is None, 1.0)
        assert other.version == board.version
    finally:
        await other.close()


async def test_failed_poll_keeps_the_last_view(
    engine: Engine, orgs: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    acme, _ = orgs
    _set(engine, "acme", "ai", False, "kept")
    sb = SwitchBoard(engine, refresh_seconds=0.05, default_message=DEFAULT)
    await sb.start()
    try:
        caplog.set_level(logging.INFO, logger="costwarden.gateway.switches")
        version = sb.version
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE switches"))
        await _eventually(
            lambda: any("switch refresh failed" in r.getMessage() for r in caplog.records), 2.0
        )
        await asyncio.sleep(0.3)  # several more failed polls
        assert _message(sb.refusal(acme, "messages", False)) == "kept"
        assert sb.version == version
        warnings = [r for r in caplog.records if "switch refresh failed" in r.getMessage()]
        assert len(warnings) == 1  # not one per poll
        assert warnings[0].levelno == logging.WARNING

        # Storage comes back (an empty table): the board follows it again.
        with engine.begin() as conn:
            switches_table.create(conn)
        await _eventually(lambda: sb.refusal(acme, "messages", False) is None, 2.0)
        assert any("recovered" in r.getMessage() for r in caplog.records)
    finally:
        await sb.close()


async def test_close_stops_polling(engine: Engine, orgs: tuple[str, str]) -> None:
    sb = SwitchBoard(engine, refresh_seconds=0.05, default_message=DEFAULT)
    await sb.start()
    await sb.close()
    _set(engine, "acme", "ai", False)
    await asyncio.sleep(0.3)
    assert sb.refusal(orgs[0], "messages", False) is None
    await sb.close()  # closing twice is harmless


# --------------------------------------------------------------------------- settings

_BASE = gateway_toml("http://127.0.0.1:9", "sqlite:///unused.db")


def test_switch_settings_defaults_file_and_env() -> None:
    settings = load_settings(text=_BASE, env=PROVIDER_ENV)
    assert settings.switches.refresh_seconds == 0.5
    assert settings.switches.message == "AI features are temporarily disabled by the operator."
    text = _BASE + '\n[switches]\nrefresh_seconds = 2\nmessage = "Back at 10:00 UTC."\n'
    settings = load_settings(text=text, env=PROVIDER_ENV)
    assert (settings.switches.refresh_seconds, settings.switches.message) == (
        2.0,
        "Back at 10:00 UTC.",
    )
    env = {**PROVIDER_ENV, "COSTWARDEN_SWITCH_REFRESH_SECONDS": "0.25"}
    assert load_settings(text=text, env=env).switches.refresh_seconds == 0.25


@pytest.mark.parametrize(
    ("extra", "env", "needle"),
    [
        ("[switches]\nrefresh_seconds = 0\n", {}, "switches.refresh_seconds: must be positive"),
        ('[switches]\nmessage = "  "\n', {}, "switches.message: must not be empty"),
        ("[switches]\nmesage = 'x'\n", {}, "unknown setting"),
        ("[switches]\nrefresh_seconds = 'fast'\n", {}, "expected float"),
        ("", {"COSTWARDEN_SWITCH_REFRESH_SECONDS": "-1"}, "COSTWARDEN_SWITCH_REFRESH_SECONDS"),
    ],
)
def test_bad_switch_settings_are_config_errors(
    extra: str, env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(text=_BASE + "\n" + extra, env={**PROVIDER_ENV, **env})
    assert needle in str(info.value)
