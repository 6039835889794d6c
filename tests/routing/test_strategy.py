"""Route strategies as a table: which deployment each strategy puts first for a request, and
the reason it gives."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costwarden.routing.strategy import (
    CAPABILITIES,
    STRATEGIES,
    Candidate,
    Capability,
    Needs,
    Strategy,
    check_weights,
    choose,
    ewma,
    unfit,
    worst_case_usd,
)

M = Decimal(1) / 1_000_000  # USD a token for a price of $1 per million

ALL: frozenset[Capability] = frozenset(CAPABILITIES)
# A route's own deployments, in configured order: dear and able, cheap but text-only with a
# small window, middling with everything.
BIG = Candidate("openai:gpt-4o", 5 * M, 20 * M, 128_000, ALL, 50, 900.0, 4)
SMALL = Candidate(
    "groq:llama-3.1-8b", M / 10, M / 5, 8_000, frozenset({"streaming"}), 30, 120.0, 9
)
MID = Candidate("gemini:gemini-2.5-flash", M / 2, 2 * M, 1_000_000, ALL, 20, None, 0)
ROUTE = (BIG, SMALL, MID)
TEXT = Needs(prompt_tokens=1_000, output_tokens=500)


@pytest.mark.parametrize(
    ("needs", "unavailable", "first", "order", "reason"),
    [
        # plain text, everything fits: the cheapest worst case wins
        (TEXT, {}, "groq:llama-3.1-8b", ("groq:llama-3.1-8b", "gemini:gemini-2.5-flash",
         "openai:gpt-4o"), "cheapest: groq:llama-3.1-8b, at most $0.0002 for this request"),
        # a prompt past the small window
        (Needs(20_000, 500), {}, "gemini:gemini-2.5-flash", ("gemini:gemini-2.5-flash",
         "openai:gpt-4o", "groq:llama-3.1-8b"),
         "(skipped groq:llama-3.1-8b: needs about 20500 tokens, context window 8000)"),
        # tools, vision, structured output: the text-only model cannot
        (Needs(1_000, 500, frozenset({"tools"})), {}, "gemini:gemini-2.5-flash", None,
         "(skipped groq:llama-3.1-8b: no tools)"),
        (Needs(1_000, 500, frozenset({"vision", "structured_output"})), {},
         "gemini:gemini-2.5-flash", None, "no structured output or vision"),
        # the cheapest's breaker is open: the next cheapest, and the reason says why
        (TEXT, {"groq:llama-3.1-8b": "circuit breaker open"}, "gemini:gemini-2.5-flash",
         ("gemini:gemini-2.5-flash", "openai:gpt-4o", "groq:llama-3.1-8b"),
         "(skipped groq:llama-3.1-8b: circuit breaker open)"),
    ],
)  # fmt: skip
def test_cheapest(
    needs: Needs,
    unavailable: dict[str, str],
    first: str,
    order: tuple[str, ...] | None,
    reason: str,
) -> None:
    choice = choose("cheapest", ROUTE, needs, unavailable=unavailable)
    assert choice.order[0] == first
    if order is not None:
        assert choice.order == order
    assert reason in choice.reason, choice.reason
    assert choice.reason.startswith(f"cheapest: {first}")


def test_nothing_fits_keeps_the_order_and_says_why_for_each() -> None:
    choice = choose("cheapest", ROUTE, Needs(2_000_000, 0))
    assert choice.order == tuple(c.id for c in ROUTE)
    assert choice.reason.startswith("cheapest: no deployment can take it (openai:gpt-4o: needs")
    assert choice.reason.count("context window") == 3


def test_cheapest_is_by_this_requests_worst_case_not_by_list_price() -> None:
    """Cheap input but dear output loses to the other way round for an output-heavy request."""
    reader = Candidate("a", M / 10, 10 * M)
    writer = Candidate("b", 2 * M, M)
    assert choose("cheapest", (reader, writer), Needs(100, 10_000)).order[0] == "b"
    assert choose("cheapest", (reader, writer), Needs(100_000, 10)).order[0] == "a"
    assert worst_case_usd(writer, Needs(100, 10_000)) == Decimal("0.0102")


def test_ties_keep_configured_order() -> None:
    one, two = Candidate("one", M, M), Candidate("two", M, M)
    assert choose("cheapest", (one, two), TEXT).order == ("one", "two")
    assert choose("least-busy", (one, two), TEXT).order == ("one", "two")


@pytest.mark.parametrize(
    ("draw", "first"),
    [(0.0, "openai:gpt-4o"), (0.49, "openai:gpt-4o"), (0.5, "groq:llama-3.1-8b"),
     (0.79, "groq:llama-3.1-8b"), (0.8, "gemini:gemini-2.5-flash"),
     (0.9999, "gemini:gemini-2.5-flash"), (1.0, "gemini:gemini-2.5-flash")],
)  # fmt: skip
def test_weighted_draws_by_share_and_keeps_the_rest_as_fallbacks(draw: float, first: str) -> None:
    choice = choose("weighted", ROUTE, TEXT, draw=draw)
    assert choice.order[0] == first
    assert sorted(choice.order) == sorted(c.id for c in ROUTE)
    assert "of 100)" in choice.reason


def test_weighted_over_what_remains_when_one_cannot_take_it() -> None:
    # the text-only model cannot take tools: the draw is over the others' 70
    choice = choose("weighted", ROUTE, Needs(1_000, 500, frozenset({"tools"})), draw=0.75)
    assert choice.order[0] == "gemini:gemini-2.5-flash"
    assert "weight 20 of 70" in choice.reason


def test_lowest_latency_tries_the_unmeasured_first_then_the_fastest() -> None:
    assert choose("lowest-latency", ROUTE, TEXT).order == (
        "gemini:gemini-2.5-flash",
        "groq:llama-3.1-8b",
        "openai:gpt-4o",
    )
    measured = (BIG, SMALL)
    choice = choose("lowest-latency", measured, TEXT)
    assert choice.reason == "lowest-latency: groq:llama-3.1-8b (120 ms average)"


def test_least_busy() -> None:
    choice = choose("least-busy", ROUTE, TEXT)
    assert choice.order == ("gemini:gemini-2.5-flash", "openai:gpt-4o", "groq:llama-3.1-8b")
    assert choice.reason == "least-busy: gemini:gemini-2.5-flash (0 in flight)"


def test_ordered_is_the_configured_chain() -> None:
    choice = choose("ordered", ROUTE, TEXT)
    assert choice.order == tuple(c.id for c in ROUTE)
    assert choice.reason == "ordered: openai:gpt-4o (first configured)"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_puts_the_unable_last(strategy: Strategy) -> None:
    choice = choose(strategy, ROUTE, Needs(1_000, 500, frozenset({"vision"})), draw=0.6)
    assert choice.order[-1] == "groq:llama-3.1-8b"


def test_unknown_capabilities_and_window_are_assumed_able() -> None:
    assert unfit(Candidate("x", M, M), Needs(10**9, 10**9, frozenset({"vision"}))) is None


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ([50, 30, 20], None),
        ([60.5, 39.5], None),
        ([50, 30], "weights must sum to 100 (percent of the route's traffic), not 80"),
        ([100, 0], "weights must be positive"),
        ([120, -20], "weights must be positive"),
        ([], "a weighted route needs a weight for each of its deployments"),
    ],
)
def test_check_weights(weights: list[float], problem: str | None) -> None:
    assert check_weights(weights) == problem


def test_ewma() -> None:
    assert ewma(None, 100.0) == 100.0
    assert ewma(100.0, 200.0) == pytest.approx(120.0)
