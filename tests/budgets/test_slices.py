"""The slice book (budgets/slices.py): local admission against leased slices, as plain data."""

from __future__ import annotations

from costwarden.budgets.policy import Actual, Grant
from costwarden.budgets.slices import (
    ALLOWANCE_INTERVALS,
    ALLOWANCE_REQUESTS,
    IDLE_SECONDS,
    SLICE_REQUESTS,
    TIGHT_SECONDS,
    Answer,
    SliceBook,
    slice_id,
)
from tests.budgets.test_stores import CENT, NOW, ask, checks, lim

DOLLAR = 100 * CENT
# ask(): $0.001 of prompt bound + 4096 output tokens at $15/M = $0.062440 per request.
NEED = 1_000_000 + 4096 * 15_000


def _answered(book: SliceBook, tenant: str, granted: int, room: int, now: float = NOW) -> None:
    """Answer every op of the tenant's next call with ``granted`` and ``room``."""
    ops = book.ops(tenant, now)
    book.answered(tenant, ops, [Answer(granted, room, False) for _ in ops], now, now + 15)


def test_no_slice_no_local_admission_and_the_tenant_is_asked() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR))
    assert book.admit("a", ask(), cs, NOW) is None
    assert book.wanted(ask(), cs, NOW) == ["o1"]
    (op,) = book.ops("o1", NOW)
    # Sized for SLICE_REQUESTS of it; nothing used, nothing to keep, nothing in flight.
    assert (op.used, op.keep, op.want, op.need, op.forget) == (0, 0, SLICE_REQUESTS * NEED,
                                                                NEED, False)  # fmt: skip
    assert op.exposed == op.allowance == ALLOWANCE_REQUESTS * NEED


def test_admits_locally_within_the_slice_and_the_allowance() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR))
    book.wanted(ask(), cs, NOW)
    _answered(book, "o1", granted=3 * NEED, room=DOLLAR // 2)
    grants = [book.admit(str(i), ask(), cs, NOW) for i in range(4)]
    # Three fit the slice (the allowance is four); the fourth must ask Redis.
    assert grants[3] is None
    for i, grant in enumerate(grants[:3]):
        assert grant == Grant(4096, [NEED], [DOLLAR // 2 + (2 - i) * NEED])
    # A settle moves the reservation into what was used, and frees the rest.
    assert book.settle("0", Actual(nanos=CENT, tokens=100)) == [DOLLAR // 2 + 3 * NEED - 2 * NEED
                                                                - CENT]  # fmt: skip
    assert book.settle("0", Actual(nanos=CENT, tokens=100)) is None  # settled once
    (op,) = book.ops("o1", NOW)
    assert (op.used, op.held, op.keep) == (CENT, 2 * NEED, 3 * NEED - CENT)


def test_the_allowance_caps_local_admissions_between_calls() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR))
    book.wanted(ask(), cs, NOW)
    _answered(book, "o1", granted=100 * NEED, room=DOLLAR)
    admitted = [book.admit(str(i), ask(), cs, NOW) for i in range(ALLOWANCE_REQUESTS + 1)]
    assert admitted[-1] is None and all(admitted[:-1])
    # The next call renews it, grown to ALLOWANCE_INTERVALS flush intervals of the traffic
    # since the last answer (all four requests within one interval).
    (op,) = book.ops("o1", NOW)
    assert op.allowance == ALLOWANCE_INTERVALS * ALLOWANCE_REQUESTS * NEED
    book.answered("o1", [op], [Answer(100 * NEED, DOLLAR, False)], NOW, NOW + 15)
    assert book.admit("next", ask(), cs, NOW) is not None


def test_a_slice_that_would_clamp_the_output_sends_the_request_to_redis() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR))
    book.wanted(ask(), cs, NOW)
    _answered(book, "o1", granted=NEED - 1, room=DOLLAR)
    # It would fit 4095 tokens locally; the exact path may fit 4096.
    assert book.admit("a", ask(), cs, NOW) is None
    assert book.admit("b", ask(want_out=100), cs, NOW) == Grant(
        None, [1_000_000 + 100 * 15_000], [DOLLAR + NEED - 1 - 2_500_000]
    )


def test_every_counter_needs_a_slice() -> None:
    book = SliceBook()
    day = lim("usd", "day", DOLLAR)
    rpm = lim("requests", "minute", 1000)
    cs = checks(day, rpm)
    book.wanted(ask(), checks(day), NOW)
    _answered(book, "o1", granted=10 * NEED, room=DOLLAR)
    assert book.admit("a", ask(), cs, NOW) is None
    book.wanted(ask(), cs, NOW)
    ops = book.ops("o1", NOW)
    assert {op.slice.check.limit.metric for op in ops} >= {"requests"}
    book.answered("o1", ops, [Answer(10 * op.need, 900, False) for op in ops], NOW, NOW + 15)
    grant = book.admit("a", ask(), cs, NOW)
    assert grant is not None and grant.amounts == [NEED, 1]


def test_a_rolling_slice_lives_in_its_bucket() -> None:
    book = SliceBook()
    rpm = lim("requests", "minute", 1000)
    cs = checks(rpm)
    book.wanted(ask(), cs, NOW)
    _answered(book, "o1", granted=10, room=500)
    assert book.admit("a", ask(), cs, NOW) is not None
    later = NOW + 1.0  # the next one-second bucket
    cs_later = checks(rpm, now=later)
    assert slice_id(cs_later[0]) != slice_id(cs[0])
    assert book.admit("b", ask(), cs_later, later) is None
    # The old bucket's slice drains: its request in flight is kept, nothing more.
    (old,) = book.ops("o1", later)
    assert (old.keep, old.want, old.forget, old.exposed) == (1, 0, False, 1)
    book.settle("a", Actual(0, 0, requests=1))
    (old,) = book.ops("o1", later)
    assert (old.used, old.keep, old.forget) == (1, 0, True)
    book.answered("o1", [old], [Answer(0, 499, False)], later, later + 15)
    assert book.holding() == []


def test_a_call_sizes_a_rolling_counter_s_slices_together_oldest_bucket_first() -> None:
    book = SliceBook()
    rpm = lim("requests", "minute", 1000)
    usd = lim("usd", "day", DOLLAR)
    near_end = float(int(NOW)) + 0.9  # the next one-second bucket starts in 0.1 s
    cs = checks(rpm, usd, now=near_end)
    book.wanted(ask(), cs, near_end)
    ops = book.ops("o1", near_end)
    # Per counter; the current bucket's slice before the next one's (taken ahead).
    assert [(op.slice.check.key, op.slice.check.bucket) for op in ops] == sorted(
        [(cs[0].key, cs[0].bucket), (cs[0].key, cs[0].bucket + 1), (cs[1].key, 0)]
    )
    sized = [Answer(10 * NEED if op.slice.check.key == cs[1].key else 10, 500, False) for op in ops]
    book.answered("o1", ops, sized, near_end, near_end + 15)
    # Only the current bucket's slice wants more; the next one's comes along all the same,
    # the day's does not.
    for i in range(3):  # past half its allowance
        assert book.admit(f"r{i}", ask(), checks(rpm, now=near_end), near_end) is not None
    ops = book.ops("o1", near_end)
    assert [(op.slice.check.key, op.slice.check.bucket) for op in ops] == [
        (cs[0].key, cs[0].bucket),
        (cs[0].key, cs[0].bucket + 1),
    ]


def test_a_tight_counter_takes_the_exact_path_for_a_while() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR))
    book.wanted(ask(), cs, NOW)
    ops = book.ops("o1", NOW)
    book.answered("o1", ops, [Answer(0, NEED, True)], NOW, NOW + 15)
    assert book.admit("a", ask(), cs, NOW) is None
    assert book.wanted(ask(), cs, NOW) == []  # straight to the exact path
    (op,) = book.ops("o1", NOW)
    assert op.forget and op.want == 0
    book.answered("o1", [op], [Answer(0, NEED, False)], NOW, NOW + 15)
    after = NOW + TIGHT_SECONDS + 0.01
    book.ops("o1", after)  # prunes nothing; the next answer forgets the tight mark
    assert book.wanted(ask(), cs, after) == ["o1"]


def test_a_failed_call_stops_local_admission_until_one_is_answered() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR))
    book.wanted(ask(), cs, NOW)
    _answered(book, "o1", granted=10 * NEED, room=DOLLAR)
    assert book.admit("a", ask(), cs, NOW) is not None
    ops = book.ops("o1", NOW)
    book.failed("o1", ops)
    assert book.admit("b", ask(), cs, NOW) is None
    # What the first request holds still settles locally.
    assert book.settle("a", Actual(CENT, 10)) is not None
    _answered(book, "o1", granted=10 * NEED, room=DOLLAR)
    assert book.admit("b", ask(), cs, NOW) is not None


def test_slices_expire_with_their_lease_and_idle_ones_are_given_back() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR))
    book.wanted(ask(), cs, NOW)
    _answered(book, "o1", granted=10 * NEED, room=DOLLAR)
    assert book.admit("a", ask(), cs, NOW + 15) is None  # past valid_until
    book.settle("a", Actual(0, 0))
    (op,) = book.ops("o1", NOW + IDLE_SECONDS + 1)
    assert op.forget and op.exposed == 0


def test_closing_gives_everything_back() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR), lim("requests", "minute", 1000))
    book.wanted(ask(), cs, NOW)
    _answered(book, "o1", granted=10 * NEED, room=DOLLAR)
    ops = book.ops("o1", NOW, closing=True)
    assert len(ops) == 2 and all(op.forget and op.keep == 0 for op in ops)


def test_a_dropped_tenant_settles_into_nothing() -> None:
    book = SliceBook()
    cs = checks(lim("usd", "day", DOLLAR))
    book.wanted(ask(), cs, NOW)
    _answered(book, "o1", granted=10 * NEED, room=DOLLAR)
    assert book.admit("a", ask(), cs, NOW) is not None
    assert book.drop("o1") == 1
    assert book.settle("a", Actual(CENT, 10)) is not None  # it was local: nothing to send
    assert book.ops("o1", NOW) == [] and book.holding() == []
