"""LimitBook.counts_over: whether any limit in force counts over a window (raw-ledger
retention waits while a lifetime limit is, since its counter is rebuilt from raw rows)."""

from __future__ import annotations

import pytest

from costwarden.budgets.limits import UNLIMITED, Limit, LimitBook, Principal, Tier, TierEntry

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


def _session(subject: str, metric: str, window: str, amount: int) -> Limit:
    return Limit("session", subject, "o1", metric, window, amount)


KEY_DAILY = _session("@key:k1", "usd", "day", 500)
KEY_TOKENS = _session("@key:k1", "tokens", "day", 9_000)
PROJECT_DAILY = _session("@project:p1", "usd", "day", 300)
PROJECT_MONTHLY = _session("@project:p1", "usd", "month", 2_000)
OWN_DAILY = _session("run-1", "usd", "day", 100)
TIERS = [Tier("pro", (TierEntry("session", "usd", "day", 50),
                      TierEntry("session", "requests", "day", 7)))]  # fmt: skip


REQUESTS_7 = ("requests", "day", 7)  # the tier's session default no limit here sets


@pytest.mark.parametrize(
    ("limits", "principal", "expected"),
    [
        # A key's session default: every session of the key, each its own (subject: itself).
        (
            [KEY_DAILY],
            Principal("o1", None, "k1", None, "run-1"),
            {("usd", "day", 500), REQUESTS_7},
        ),
        # Another key's session: the tier's defaults only.
        (
            [KEY_DAILY],
            Principal("o1", None, "k2", None, "run-1"),
            {("usd", "day", 50), REQUESTS_7},
        ),
        ([KEY_DAILY], Principal("o1", None, "k1", None, None), set()),
        # The session's own limit wins; the key's, then the project's, for the rest.
        (
            [OWN_DAILY, KEY_DAILY, KEY_TOKENS, PROJECT_DAILY, PROJECT_MONTHLY],
            Principal("o1", "p1", "k1", None, "run-1"),
            {("usd", "day", 100), ("tokens", "day", 9_000), ("usd", "month", 2_000),
             REQUESTS_7},
        ),  # fmt: skip
        (
            [PROJECT_DAILY],
            Principal("o1", "p1", "k9", None, "run-1"),
            {("usd", "day", 300), REQUESTS_7},
        ),
    ],
)
def test_session_defaults_of_keys_and_projects(
    limits: list[Limit], principal: Principal, expected: set[tuple[str, str, int]]
) -> None:
    book = LimitBook(limits, TIERS, {"o1": "pro"})
    sessions = [lim for lim in book.applicable(principal) if lim.scope == "session"]
    assert all(lim.subject == "run-1" for lim in sessions)  # each session its own counter
    assert {(lim.metric, lim.window, lim.amount) for lim in sessions} == expected
    assert not any(lim.subject.startswith("@") for lim in book.for_org("o1"))
