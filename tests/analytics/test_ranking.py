"""Top-N candidates from lists read costliest first (analytics.ranking): whoever can make the
``n`` is a candidate, decided as soon as no group unread can."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.analytics.ranking import SLACK, Unit, bounds, candidates, unread_bound

D = Decimal


def _read(costs: dict[str, Decimal], depth: int, exact: bool = True) -> Unit:
    """The ``depth`` costliest rows of a list (ties by name), as the database reads them."""
    rows = sorted(costs.items(), key=lambda item: (-item[1], item[0]))
    head = dict(rows[:depth])
    done = depth >= len(rows)
    return Unit(exact, head, None if done else min(head.values(), default=D(0)))


def test_an_unread_group_costs_at_most_the_cursor_and_nothing_once_read_to_the_end() -> None:
    assert unread_bound(Unit(True, {"a": D(5)}, D(5))) == D(5) * (1 + SLACK)
    assert unread_bound(Unit(True, {"a": D(5)}, None)) == 0


def test_bounds_count_edges_only_upwards() -> None:
    whole = Unit(True, {"a": D(10), "b": D(4)}, D(4))
    edge = Unit(False, {"b": D(7)}, None)
    got = bounds([whole, edge])
    assert got["a"] == (D(10), D(10))  # read nowhere else: the edge, read to its end, adds 0
    assert got["b"] == (D(4), D(11))


def test_undecided_while_an_unread_group_could_still_reach_the_top() -> None:
    # a: 10 read; whatever is unread may cost up to 9 in each of two lists: 18 > 10.
    units = [Unit(True, {"a": D(10)}, D(9)), Unit(True, {"a": D(9)}, D(9))]
    assert candidates(units, 1) == {"a"}  # a's least, 19, is above 18
    units = [Unit(True, {"a": D(10)}, D(10)), Unit(True, {"b": D(9)}, D(9))]
    assert candidates(units, 1) is None  # a: 10 at least; an unread group: up to 19


def test_fewer_groups_than_n_are_all_candidates_once_every_list_is_read() -> None:
    units = [Unit(True, {"a": D(1)}, None), Unit(False, {"b": D(0)}, None)]
    assert candidates(units, 10) == {"a", "b"}
    assert candidates([Unit(True, {"a": D(1)}, D(1))], 10) is None


def test_zero_costs_are_never_decided_before_the_end() -> None:
    """n groups at $0 and others unread, also $0: they tie, and names break the tie, so
    every list is read to its end first."""
    units = [Unit(True, {"a": D(0), "b": D(0)}, D(0))]
    assert candidates(units, 2) is None


_COSTS = st.dictionaries(
    st.sampled_from("abcdefghijkl"),
    st.integers(0, 40).map(lambda c: D(c) / 4),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    days=st.lists(st.tuples(_COSTS, st.booleans(), st.integers(0, 100)), min_size=1, max_size=6),
    n=st.integers(1, 5),
    depth=st.integers(1, 12),
)
def test_every_group_of_the_true_top_is_a_candidate(
    days: list[tuple[dict[str, Decimal], bool, int]], n: int, depth: int
) -> None:
    """Whole days count in full; an edge day counts some share of each group's cost there
    (its hours in the range), which its list only bounds from above."""
    true: dict[str, Decimal] = {}
    for costs, whole, share in days:
        for group, cost in costs.items():
            part = cost if whole else cost * share / 100
            true[group] = true.get(group, D(0)) + part
    ranked = sorted(true.items(), key=lambda item: (-item[1], item[0]))
    found = candidates([_read(costs, depth, whole) for costs, whole, _ in days], n)
    if found is None:  # undecided: read everything, then it must decide
        found = candidates([_read(costs, 99, whole) for costs, whole, _ in days], n)
    assert found is not None
    assert {group for group, _ in ranked[:n]} <= found
