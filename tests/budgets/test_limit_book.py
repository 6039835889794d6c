"""LimitBook.counts_over: whether any limit in force counts over a window (raw-ledger
retention waits while a lifetime limit is, since its counter is rebuilt from raw rows)."""

from __future__ import annotations

import pytest

from costwarden.budgets.limits import UNLIMITED, Limit, LimitBook, Tier, TierEntry

LIFETIME = Limit("org", "o1", "o1", "usd", "lifetime", 5_000)
MONTHLY = Limit("org", "o1", "o1", "usd", "month", 5_000)


@pytest.mark.parametrize(
    ("book", "counts"),
    [
        (LimitBook(), False),
        (LimitBook([MONTHLY]), False),
        (LimitBook([MONTHLY, LIFETIME]), True),
        (LimitBook([Limit("org", "o1", "o1", "usd", "lifetime", UNLIMITED)]), False),
        # A tier's entry counts even before any org is on the tier: one may be at any time.
        (LimitBook([], [Tier("pro", (TierEntry("key", "tokens", "lifetime", 10),))]), True),
        (LimitBook([], [Tier("pro", (TierEntry("key", "tokens", "day", 10),))]), False),
        (
            LimitBook([], [Tier("pro", (TierEntry("key", "tokens", "lifetime", UNLIMITED),))]),
            False,
        ),
    ],
)
def test_counts_over_a_window(book: LimitBook, counts: bool) -> None:
    assert book.counts_over("lifetime") is counts
