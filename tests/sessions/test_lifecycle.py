"""An agent session's state machine (sessions.lifecycle): every transition, as a table."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costwarden.core.errors import InvalidInput
from costwarden.sessions.lifecycle import (
    ALLOWED,
    FINAL,
    STATES,
    Admission,
    SessionState,
    Standing,
    admit,
    budget_pct,
    check_wind_down,
    on_budget_gone,
    on_clock,
    on_operator,
    on_resolved,
    on_runaway,
    on_spend,
)

NOW = 1_800_000_000.0
D = Decimal
NINETY = D(90)


@pytest.mark.parametrize(
    ("state", "pct", "after"),
    [
        ("active", D("89.99"), None),
        ("active", D(90), "winding_down"),
        ("active", None, None),  # no budget: nothing to wind down from
        ("winding_down", D(95), None),
        ("winding_down", D(40), "active"),  # budget added, or a window reset
        ("winding_down", None, "active"),
        ("sleeping", D(100), None),
        ("paused", D(99), None),
        ("exhausted", D(10), None),
    ],
)
def test_spend_winds_down_at_the_share_and_back_under_it(
    state: SessionState, pct: Decimal | None, after: str | None
) -> None:
    moved = on_spend(Standing(state), pct, NOW, NINETY)
    assert (moved.state if moved else None) == after
    if moved is not None:
        assert moved.before == state and moved.after.budget_pct == pct and moved.at == NOW


@pytest.mark.parametrize(
    ("standing", "resets_at", "after", "wake_at"),
    [
        (Standing("active"), NOW + 3600, "sleeping", NOW + 3600),
        (Standing("winding_down"), NOW + 60, "sleeping", NOW + 60),
        (Standing("active"), None, "exhausted", None),  # a lifetime budget never resets
        (Standing("sleeping", wake_at=NOW + 60), None, "exhausted", None),
        (Standing("sleeping", wake_at=NOW + 60), NOW + 600, "sleeping", NOW + 600),
        (Standing("sleeping", wake_at=NOW + 600), NOW + 60, None, None),  # sleeps longer
        (Standing("active"), NOW - 1, None, None),  # the window already reset
        (Standing("paused", escalation="esc_1"), NOW + 60, None, None),
        (Standing("exhausted"), NOW + 60, None, None),
        (Standing("terminated"), None, None, None),
    ],
)
def test_a_spent_budget_sleeps_until_its_window_resets_or_exhausts_for_good(
    standing: Standing, resets_at: float | None, after: str | None, wake_at: float | None
) -> None:
    moved = on_budget_gone(standing, resets_at, NOW)
    assert (moved.state if moved else None) == after
    if moved is not None:
        assert moved.after.wake_at == wake_at
        assert moved.cause == ("lifetime_spent" if after == "exhausted" else "window_spent")


def test_a_sleeping_session_wakes_when_its_time_comes_and_not_before() -> None:
    asleep = Standing("sleeping", budget_pct=D(100), wake_at=NOW + 60)
    assert on_clock(asleep, NOW + 59.999) is None
    woke = on_clock(asleep, NOW + 60)
    assert woke is not None and woke.cause == "woke"
    assert woke.after == Standing("active")  # a new window: nothing spent of it yet
    assert on_clock(Standing("active"), NOW) is None


def test_runaway_pauses_until_its_escalation_is_resolved() -> None:
    paused = on_runaway(Standing("winding_down", budget_pct=D(91)), "esc_1", NOW)
    assert paused is not None and paused.after == Standing("paused", D(91), None, "esc_1")
    assert on_runaway(paused.after, "esc_2", NOW) is None  # one open escalation at a time
    assert on_resolved(paused.after, "esc_other", True, NOW) is None
    approved = on_resolved(paused.after, "esc_1", True, NOW)
    assert approved is not None and approved.after == Standing("active", D(91))
    denied = on_resolved(paused.after, "esc_1", False, NOW)
    assert denied is not None and denied.state == "terminated" and denied.cause == "denied"
    assert on_resolved(Standing("active"), "esc_1", True, NOW) is None


@pytest.mark.parametrize("state", STATES)
def test_an_operator_pauses_or_terminates_any_session_not_over(state: SessionState) -> None:
    standing = Standing(state, escalation="esc_0" if state == "paused" else None)
    paused = on_operator(standing, "pause", "esc_9", NOW)
    ended = on_operator(standing, "terminate", None, NOW)
    if state in FINAL:
        assert paused is None and ended is None
        return
    assert ended is not None and ended.state == "terminated"
    if state == "paused":
        assert paused is None
    else:
        assert paused is not None and paused.after.escalation == "esc_9"


@pytest.mark.parametrize(
    ("standing", "admission"),
    [
        (Standing("active"), Admission("go")),
        (Standing("winding_down", D(95)), Admission("go")),
        (Standing("sleeping", wake_at=NOW + 90.2), Admission("sleeping", retry_after=91)),
        (Standing("sleeping", wake_at=NOW + 0.1), Admission("sleeping", retry_after=1)),
        (Standing("paused", escalation="esc_1"), Admission("paused", escalation="esc_1")),
        (Standing("exhausted"), Admission("exhausted")),
        (Standing("terminated"), Admission("terminated")),
    ],
)
def test_what_a_request_of_each_state_gets(standing: Standing, admission: Admission) -> None:
    assert admit(standing, NOW) == admission


def test_every_move_is_one_the_machine_allows() -> None:
    """Each function, from each state, either stays or makes an allowed move."""
    for state in STATES:
        was = Standing(state, escalation="esc_1", wake_at=NOW + 1)
        moves = [
            on_spend(was, D(95), NOW, NINETY), on_spend(was, D(5), NOW, NINETY),
            on_budget_gone(was, NOW + 5, NOW), on_budget_gone(was, None, NOW),
            on_clock(was, NOW + 2), on_runaway(was, "esc_2", NOW),
            on_operator(was, "pause", "esc_3", NOW), on_operator(was, "terminate", None, NOW),
            on_resolved(was, "esc_1", True, NOW), on_resolved(was, "esc_1", False, NOW),
        ]  # fmt: skip
        for moved in moves:
            if moved is not None:
                assert (moved.before, moved.state) in ALLOWED


@pytest.mark.parametrize(
    ("spent", "budget", "pct"),
    [(0, 100, D(0)), (899_999, 1_000_000, D("89.99")), (9, 10, D(90)), (15, 10, D(150)),
     (5, 0, None), (5, -1, None)],
)  # fmt: skip
def test_budget_pct_rounds_down_so_a_share_is_reached_only_when_it_is(
    spent: int, budget: int, pct: Decimal | None
) -> None:
    assert budget_pct(spent, budget) == pct


@pytest.mark.parametrize("pct", [D(0), D(-5), D("100.01"), D("NaN")])
def test_a_wind_down_share_outside_0_to_100_is_refused(pct: Decimal) -> None:
    with pytest.raises(InvalidInput):
        check_wind_down(pct)
    assert check_wind_down(D(100)) == 100
