"""Which groups can be among the ``n`` costliest, read from lists sorted by cost (pure).

Ranking every key over 30 days reads every key's row of every day (5,000 keys: 150,000 rows).
This is Fagin's *threshold algorithm* instead: each day's rows are read costliest first, a
few dozen at a time, until no group not read yet can reach the ``n``-th place. Then the
groups that can are summed exactly (``storage.analytics_top``), so the answer is exact; the
lists only choose whom to sum.

A :class:`Unit` is one such list: a day wholly inside the range (``exact``: what a group has
there counts), or a day only partly inside it (an edge: what a group has there, the whole
day's, only bounds what it has inside the range from above). What is read of a list is its
costliest rows; every row not read costs at most the last one read (its ``cursor``) and a
group with no row there costs 0 there. Costs are never negative (the ledger refuses a
negative cost), so a group's cost is at least what was read of it in the exact units.

The lists are sorted by a double (the database's rank column, :data:`SLACK` covers its
rounding): a row after the cursor costs at most ``cursor x (1 + SLACK)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from decimal import Decimal

# Relative error a double's rounding of a decimal cost can add (a double has 2**-53;
# the conversion and the comparison add a few ulps at most): generous on purpose.
SLACK = Decimal(2) ** -40
_ZERO = Decimal(0)


@dataclasses.dataclass(frozen=True, slots=True)
class Unit:
    """One list as read so far: its costliest rows (group: exact cost), and the cost of its
    last row read (None when every row of it was read)."""

    exact: bool
    costs: Mapping[str, Decimal]
    cursor: Decimal | None


def unread_bound(unit: Unit) -> Decimal:
    """The most a group not read in ``unit`` can cost there."""
    if unit.cursor is None:
        return _ZERO
    return max(unit.cursor, _ZERO) * (1 + SLACK)


def bounds(units: Iterable[Unit]) -> dict[str, tuple[Decimal, Decimal]]:
    """Each group read anywhere: (the least, the most) it can cost over the range."""
    units = list(units)
    groups = {group for unit in units for group in unit.costs}
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for group in groups:
        low = high = _ZERO
        for unit in units:
            cost = unit.costs.get(group)
            if cost is None:
                high += unread_bound(unit)
                continue
            high += cost
            if unit.exact:
                low += cost
        out[group] = (low, high)
    return out


def candidates(units: Iterable[Unit], n: int) -> set[str] | None:
    """The groups that can be among the ``n`` costliest (ties included), or None if a
    group not read yet still could be: read more of the lists then.

    Every group read whose most reaches the ``n``-th highest least; decided once that least
    is above what a group read nowhere can cost (the threshold: every list's unread bound
    added up), or every list is read to its end.
    """
    units = list(units)
    ranges = bounds(units)
    if all(unit.cursor is None for unit in units):
        return set(ranges)
    lows = sorted((low for low, _ in ranges.values()), reverse=True)
    if len(lows) < n:
        return None
    floor = lows[n - 1]
    if floor <= sum((unread_bound(unit) for unit in units), _ZERO):
        return None
    return {group for group, (_, high) in ranges.items() if high >= floor}
