"""The session board over a real database (SQLite and PostgreSQL) and event bus: two boards
on one database agree through the events; a compare-and-set lost takes the stored row; what
the board remembers is pruned to the sessions in use."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal

import pytest
from sqlalchemy.engine import Engine

from costwarden.core.event_kinds import SessionChanged
from costwarden.core.events import EventBus
from costwarden.sessions.board import SessionBoard
from costwarden.sessions.lifecycle import Standing
from costwarden.storage.db import create_engine_for
from costwarden.storage.event_log import SqlEventLog
from costwarden.storage.migrate import migrate
from costwarden.storage.sessions import SqlSessionStore, session_of
from tests.helpers import FakeClock

NOW = 1_800_000_000.0


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    made = create_engine_for(database_url)
    migrate(made)
    yield made
    made.dispose()


@pytest.fixture
async def boards(engine: Engine) -> AsyncIterator[tuple[SessionBoard, SessionBoard, FakeClock]]:
    """Two boards (two gateway processes) on one database and event log."""
    clock = FakeClock(NOW)
    buses = [EventBus(log=SqlEventLog(engine), poll_interval=0.05, clock=clock) for _ in "ab"]
    made = [SessionBoard(SqlSessionStore(engine), bus, clock=clock, wake_interval=0.02)
            for bus in buses]  # fmt: skip
    for bus in buses:
        await bus.start()
    for board in made:
        await board.start()
    yield made[0], made[1], clock
    for board in made:
        await board.close()
    for bus in buses:
        await bus.close()


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("never")


async def test_two_boards_agree_and_one_wakes_the_session(
    engine: Engine, boards: tuple[SessionBoard, SessionBoard, FakeClock]
) -> None:
    a, b, clock = boards
    a.spent("org_1", "run-1", "key_1", Decimal(92), NOW)
    a.budget_gone("org_1", "run-1", "key_1", NOW + 60, NOW)
    await a.flush()
    await _until(lambda: b.standing("org_1", "run-1").state == "sleeping")
    assert b.standing("org_1", "run-1").wake_at == NOW + 60
    assert b.admit("org_1", "run-1", NOW + 10).verdict == "sleeping"
    clock.now = NOW + 61  # both wake loops find it due: one stores the wake, both agree
    await _until(lambda: a.standing("org_1", "run-1").state == "active"
                 and b.standing("org_1", "run-1").state == "active")  # fmt: skip
    await a.flush()
    await b.flush()
    row = session_of(engine, "org_1", "run-1")
    assert row is not None and row.standing.state == "active" and row.version == 3


async def test_a_lost_compare_and_set_takes_what_was_stored(
    engine: Engine, boards: tuple[SessionBoard, SessionBoard, FakeClock]
) -> None:
    a, b, _ = boards
    # Both decide from "no row yet" at once: one insert wins, the other takes its row.
    a.budget_gone("org_1", "run-2", None, NOW + 60, NOW)
    b.budget_gone("org_1", "run-2", None, None, NOW)  # b saw a lifetime budget spent
    await a.flush()
    await b.flush()
    row = session_of(engine, "org_1", "run-2")
    assert row is not None and row.version == 1
    await _until(lambda: a.standing("org_1", "run-2") == b.standing("org_1", "run-2"))
    assert a.standing("org_1", "run-2") == row.standing


async def test_memory_follows_the_sessions_in_use(
    boards: tuple[SessionBoard, SessionBoard, FakeClock],
) -> None:
    a, _, _ = boards
    for i in range(50):
        a.observe("org_1", f"run-{i}", None, "fp", NOW)
        a.finished("org_1", f"run-{i}", None, 10, False, NOW)
    a.budget_gone("org_1", "run-0", None, NOW + 30, NOW)
    await a.flush()
    a.prune(NOW + 60)  # within the repeat window and the hour: all kept
    assert a.remembered() == (50, 50, 1)
    a.prune(NOW + 3601)
    assert a.remembered() == (0, 0, 1)
    assert a.standing("org_1", "run-0").state == "sleeping"  # not active: kept


async def test_the_change_event_carries_what_another_board_needs(
    boards: tuple[SessionBoard, SessionBoard, FakeClock],
) -> None:
    a, b, _ = boards
    change = SessionChanged(
        org_id="org_1", session_id="run-9", key_id="key_1", from_state="active",
        to_state="paused", cause="runaway", budget_pct="12.5", wake_at=None,
        escalation_id="esc_1", version=7,
    )  # fmt: skip
    b.apply(change)
    assert b.standing("org_1", "run-9") == Standing("paused", Decimal("12.5"), None, "esc_1")
    b.apply(SessionChanged(**{**change.data(), "to_state": "active", "version": 6}))
    assert b.standing("org_1", "run-9").state == "paused"  # an older change is ignored
    assert a.standing("org_1", "run-9") == Standing()
