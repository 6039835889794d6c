"""Loop and runaway detection (sessions.loops): fingerprints in both wire formats, and the
repeat, velocity and error-burst signals as tables."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from costwarden.core.errors import InvalidInput
from costwarden.sessions.loops import (
    LoopPolicy,
    check_errors,
    check_repeat,
    check_velocity,
    fingerprint,
    repeats,
)

NOW = 1_800_000_000.0


def _openai_step(n: int, query: str = "status of order 7", result: str = "pending") -> list[Any]:
    """An agent's conversation after ``n`` identical tool round trips (ids differ)."""
    messages: list[Any] = [{"role": "user", "content": "is my order there yet?"}]
    for i in range(n):
        messages.append({"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{i}", "type": "function",
            "function": {"name": "lookup", "arguments": f'{{"q": "{query}"}}'},
        }]})  # fmt: skip
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": result})
    return messages


def _anthropic_step(n: int, result: str = "pending") -> list[Any]:
    messages: list[Any] = [{"role": "user", "content": "is my order there yet?"}]
    for i in range(n):
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": f"toolu_{i}", "name": "lookup", "input": {"q": "7"}},
        ]})  # fmt: skip
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": result},
        ]})  # fmt: skip
    return messages


def test_a_repeated_tool_exchange_has_one_fingerprint_whatever_its_ids() -> None:
    openai = [fingerprint("chat.completions", {"messages": _openai_step(n)}) for n in (1, 2, 5)]
    assert openai[0] is not None and len(set(openai)) == 1
    anthropic = [fingerprint("messages", {"messages": _anthropic_step(n)}) for n in (1, 2, 5)]
    assert anthropic[0] is not None and len(set(anthropic)) == 1


@pytest.mark.parametrize(
    ("endpoint", "a", "b"),
    [
        ("chat.completions", _openai_step(2), _openai_step(2, result="shipped")),
        ("chat.completions", _openai_step(2), _openai_step(2, query="status of order 8")),
        ("messages", _anthropic_step(2), _anthropic_step(2, result="shipped")),
        (
            "chat.completions",
            [{"role": "user", "content": "hi"}],
            [{"role": "user", "content": "hello"}],
        ),
    ],
)
def test_a_different_call_or_result_is_a_different_fingerprint(
    endpoint: str, a: list[Any], b: list[Any]
) -> None:
    assert fingerprint(endpoint, {"messages": a}) != fingerprint(endpoint, {"messages": b})


def test_without_a_tool_exchange_the_last_user_turn_is_the_fingerprint() -> None:
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "again"}]
    later = [*first, {"role": "assistant", "content": "done"}, {"role": "user", "content": "again"}]
    assert fingerprint("chat.completions", {"messages": first}) == fingerprint(
        "chat.completions", {"messages": later}
    )
    assert fingerprint("embeddings", {"input": "x"}) is None
    assert fingerprint("chat.completions", {"messages": []}) is None
    assert fingerprint("messages", {"messages": [{"role": "assistant", "content": "x"}]}) is None


@pytest.mark.parametrize(
    ("seen", "count"),
    [
        ([], 1),
        ([(NOW - 10, "fp"), (NOW - 5, "fp")], 3),
        ([(NOW - 601, "fp"), (NOW - 5, "fp")], 2),  # the first is out of the 10 minutes
        ([(NOW - 5, "other"), (NOW - 4, "fp")], 2),
    ],
)
def test_repeats_count_this_one_and_the_window_s_earlier_ones(
    seen: list[tuple[float, str]], count: int
) -> None:
    assert repeats(seen, "fp", NOW, 600) == count


def test_the_default_policy_finds_a_loop_at_the_third_repetition() -> None:
    policy = LoopPolicy()
    seen: list[tuple[float, str]] = []
    found = []
    for step in range(4):
        found.append(check_repeat(policy, seen, "fp", NOW + step))
        seen.append((NOW + step, "fp"))
    assert [f is not None for f in found] == [False, False, True, True]
    third = found[2]
    assert third is not None and third.signal == "repeat"
    assert third.evidence == {"fingerprint": "fp", "count": 3, "within_s": 600.0}
    assert check_repeat(policy, seen, None, NOW) is None


@pytest.mark.parametrize(
    ("minutes", "now", "found"),
    [
        ([100, 120, 90, 110, 100], 1_000, False),  # 10 x the median of 100 is the limit
        ([100, 120, 90, 110, 100], 1_001, True),
        ([100, 120, 90, 110], 50_000, False),  # too few minutes to know its pace yet
        ([0, 0, 100, 120, 90, 110, 100], 1_001, True),  # idle minutes are not its pace
    ],
)
def test_velocity_far_above_the_sessions_own_median(
    minutes: list[int], now: int, found: bool
) -> None:
    finding = check_velocity(LoopPolicy(), minutes, now)
    assert (finding is not None) is found
    if finding is not None:
        assert finding.evidence["median_per_minute"] == "100"


def test_an_error_burst_is_the_policys_count_in_a_row() -> None:
    assert check_errors(LoopPolicy(), 4) is None
    finding = check_errors(LoopPolicy(), 5)
    assert finding is not None and finding.evidence == {"consecutive_upstream_errors": 5}


@pytest.mark.parametrize(
    "fields",
    [
        {"repeat_count": 1},
        {"repeat_window_s": 0},
        {"velocity_factor": Decimal(1)},
        {"error_burst": 0},
        {"action": "explode"},
    ],
)
def test_a_policy_that_cannot_work_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        LoopPolicy(**fields)
