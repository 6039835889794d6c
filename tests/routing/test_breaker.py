"""The circuit-breaker policy (pure): outcome classification, policy validation, every
transition, the rolling window, probe expiry, shared-state application, and a random walk
checked against a straightforward reference model."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from costwarden.core.errors import InvalidInput
from costwarden.routing.breaker import (
    CLOSED,
    HALF_OPEN,
    MAX_REASON_LEN,
    OPEN,
    Breaker,
    BreakerPolicy,
    Transition,
    counts_as_failure,
)

T0 = 1_800_000_000.0
DEP = "openai:gpt-4o-mini"


def _breaker(**policy: float) -> Breaker:
    return Breaker(DEP, BreakerPolicy(**policy))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, False),
        (201, False),
        (304, False),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (408, True),
        (409, False),
        (413, False),
        (422, False),
        (429, False),
        (499, False),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (529, True),
        (599, True),
    ],
)
def test_status_outcomes(status: int, expected: bool) -> None:
    assert counts_as_failure("status", status) is expected


def test_timeouts_and_connection_failures_count() -> None:
    assert counts_as_failure("timeout", None) is True
    assert counts_as_failure("connection", None) is True
    # a status given along does not change that
    assert counts_as_failure("timeout", 200) is True


@pytest.mark.parametrize(
    ("kind", "status"),
    [("status", None), ("status", 99), ("status", 600), ("status", True), ("nope", 500), ("", 1)],
)
def test_bad_outcomes_are_refused(kind: str, status: int | None) -> None:
    with pytest.raises(ValueError):
        counts_as_failure(kind, status)


# --------------------------------------------------------------------------- policy


def test_policy_defaults() -> None:
    p = BreakerPolicy()
    assert (p.failure_threshold, p.failure_rate, p.window_seconds, p.min_requests) == (
        5,
        0.5,
        60.0,
        20,
    )
    assert (p.cooldown_seconds, p.probe_timeout_seconds) == (60.0, 30.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("failure_threshold", 0),
        ("failure_threshold", -1),
        ("failure_threshold", 2.5),
        ("failure_threshold", 5.0),
        ("failure_threshold", True),
        ("failure_threshold", "5"),
        ("failure_rate", 0),
        ("failure_rate", 1.01),
        ("failure_rate", -0.5),
        ("failure_rate", math.nan),
        ("failure_rate", math.inf),
        ("window_seconds", 0),
        ("window_seconds", math.inf),
        ("min_requests", 0),
        ("min_requests", 1.5),
        ("cooldown_seconds", 0),
        ("cooldown_seconds", -60),
        ("cooldown_seconds", None),
        ("probe_timeout_seconds", 0),
        ("probe_timeout_seconds", math.nan),
    ],
)
def test_policy_validation(name: str, value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        BreakerPolicy(**{name: value})  # type: ignore[arg-type]
    assert name in str(info.value)


def test_policy_accepts_edges() -> None:
    p = BreakerPolicy(failure_threshold=1, failure_rate=1, min_requests=1, cooldown_seconds=0.1)
    assert p.failure_rate == 1


# --------------------------------------------------------------------------- closed -> open


def test_opens_after_consecutive_failures() -> None:
    b = _breaker()
    for i in range(4):
        assert b.record_failure(T0 + i, "status 503") is None
        assert b.state == CLOSED and b.consecutive_failures == i + 1
    t = b.record_failure(T0 + 4, "status 503")
    assert t == Transition(DEP, CLOSED, OPEN, "5 consecutive failures; last: status 503", T0 + 4)
    assert b.state == OPEN and b.opened_at == T0 + 4 and b.retry_at == T0 + 64
    assert b.reason == t.reason


def test_a_success_resets_the_consecutive_count() -> None:
    b = _breaker()
    for i in range(4):
        b.record_failure(T0 + i, "timeout")
    assert b.record_success(T0 + 4) is None
    assert b.consecutive_failures == 0
    for i in range(4):
        assert b.record_failure(T0 + 5 + i, "timeout") is None
    assert b.state == CLOSED


def test_threshold_is_configurable() -> None:
    b = _breaker(failure_threshold=1)
    t = b.record_failure(T0, "connection refused")
    assert t is not None and t.to_state == OPEN


def test_opens_on_failure_rate_with_enough_requests() -> None:
    b = _breaker()
    # success, failure, ...: never 2 failures in a row, half of them failures
    for i in range(19):
        failed = i % 2 == 1
        t = b.record_failure(T0 + i, "status 500") if failed else b.record_success(T0 + i)
        assert t is None, i
    assert b.window(T0 + 19) == (19, 9)
    t = b.record_failure(T0 + 19, "status 500")  # 20 requests, 10 failures: 50 %
    assert t is not None and t.to_state == OPEN
    assert t.reason == "failure rate 50% over 60s (10 of 20 requests); last: status 500"


def test_rate_below_threshold_or_too_few_requests_stays_closed() -> None:
    b = _breaker(min_requests=10)
    # 9 requests at 5/9 failures: too few
    for i in range(9):
        b.record_failure(T0, "x") if i % 2 == 0 else b.record_success(T0)
    assert b.state == CLOSED and b.window(T0) == (9, 5)
    c = _breaker(min_requests=10)
    # 10 requests, 4 failures (40 %): below 50 %
    for i in range(10):
        c.record_failure(T0, "x") if i % 5 in (1, 3) else c.record_success(T0)
    assert c.state == CLOSED and c.window(T0) == (10, 4)
    assert c.error_rate(T0) == pytest.approx(0.4)


def test_failures_leave_the_window() -> None:
    b = _breaker(min_requests=4)
    b.record_success(T0)
    b.record_failure(T0 + 0.5, "x")
    assert b.window(T0 + 59) == (2, 1)
    # one-second buckets: the bucket of T0 leaves once 60 buckets have started after it
    assert b.window(T0 + 60) == (0, 0)
    # with the old failure gone, 1 failure in 4 requests is 25 %: stays closed
    for i in range(3):
        b.record_success(T0 + 61 + i)
    assert b.record_failure(T0 + 65, "x") is None
    assert b.window(T0 + 65) == (4, 1)


def test_a_clock_stepping_back_still_counts() -> None:
    b = _breaker()
    b.record_success(T0 + 10)
    b.record_failure(T0 + 5, "x")  # earlier than the newest bucket
    assert b.window(T0 + 10) == (2, 1)


def test_error_rate_of_an_empty_window_is_zero() -> None:
    assert _breaker().error_rate(T0) == 0.0


# --------------------------------------------------------------------------- open, half-open


def _opened(**policy: float) -> Breaker:
    b = _breaker(failure_threshold=1, **policy)
    b.record_failure(T0, "status 502")
    assert b.state == OPEN
    return b


def test_open_refuses_until_the_cooldown_is_over() -> None:
    b = _opened()
    for dt in (0, 1, 30, 59.999):
        assert b.admit(T0 + dt) == (False, None)
        assert not b.probe_due(T0 + dt)
    admitted, t = b.admit(T0 + 60)
    assert admitted
    assert t == Transition(DEP, OPEN, HALF_OPEN, "cooldown of 60s over; probing", T0 + 60)
    assert b.state == HALF_OPEN and b.retry_at is None


def test_half_open_admits_exactly_one_probe() -> None:
    b = _opened()
    assert b.admit(T0 + 61)[0]
    for dt in (61, 62, 75, 90.999):
        assert b.admit(T0 + dt) == (False, None)


def test_probe_success_closes_with_fresh_counts() -> None:
    b = _opened(min_requests=2)
    b.admit(T0 + 60)
    t = b.record_success(T0 + 61)
    assert t == Transition(DEP, HALF_OPEN, CLOSED, "probe succeeded", T0 + 61)
    assert b.state == CLOSED and b.opened_at is None and b.probe_until is None
    assert b.consecutive_failures == 0 and b.window(T0 + 61) == (0, 0)
    assert b.admit(T0 + 61) == (True, None)


def test_probe_failure_reopens_with_a_new_cooldown() -> None:
    b = _opened()
    b.admit(T0 + 60)
    t = b.record_failure(T0 + 62, "timeout")
    assert t == Transition(DEP, HALF_OPEN, OPEN, "probe failed: timeout", T0 + 62)
    assert b.opened_at == T0 + 62 and b.retry_at == T0 + 122
    assert b.admit(T0 + 121) == (False, None)
    assert b.admit(T0 + 122)[0]


def test_a_silent_probe_gives_its_slot_up() -> None:
    b = _opened()
    assert b.admit(T0 + 60)[0]
    assert b.probe_until == T0 + 90
    assert b.admit(T0 + 89.9) == (False, None)
    # the first probe never reported: another request may probe, without a new transition
    assert b.admit(T0 + 90) == (True, None)
    assert b.state == HALF_OPEN and b.probe_until == T0 + 120
    assert b.admit(T0 + 100) == (False, None)


def test_outcomes_while_open_do_not_transition() -> None:
    b = _opened()
    assert b.record_failure(T0 + 1, "late") is None
    assert b.record_success(T0 + 2) is None  # a request admitted before it opened
    assert b.state == OPEN and b.opened_at == T0
    assert b.last_failure_at == T0 + 1 and b.last_success_at == T0 + 2


def test_hold_probe_defers_to_another_holder() -> None:
    b = _opened()
    b.hold_probe(T0 + 70)
    assert not b.probe_due(T0 + 65)
    assert b.probe_due(T0 + 70)
    c = _breaker()
    c.hold_probe(T0 + 70)  # closed breakers have no probe
    assert c.probe_until is None


# --------------------------------------------------------------------------- reset


def test_reset_closes_an_open_breaker() -> None:
    b = _opened()
    t = b.reset(T0 + 5, "reset by alice")
    assert t == Transition(DEP, OPEN, CLOSED, "reset by alice", T0 + 5)
    assert b.state == CLOSED and b.window(T0 + 5) == (0, 0) and b.consecutive_failures == 0


def test_reset_of_a_closed_breaker_only_clears_counts() -> None:
    b = _breaker()
    b.record_failure(T0, "x")
    assert b.reset(T0 + 1, "reset by bob") is None
    assert b.consecutive_failures == 0 and b.window(T0 + 1) == (0, 0)


def test_reset_from_half_open() -> None:
    b = _opened()
    b.admit(T0 + 60)
    t = b.reset(T0 + 61, "reset by carol")
    assert t is not None and (t.from_state, t.to_state) == (HALF_OPEN, CLOSED)


# --------------------------------------------------------------------------- shared state


def test_apply_remote_open_then_new_cooldown_then_close() -> None:
    b = _breaker()
    b.record_failure(T0, "x")
    t = b.apply(OPEN, T0 + 1, "5 consecutive failures; last: status 503", T0 + 1)
    assert t == Transition(DEP, CLOSED, OPEN, "5 consecutive failures; last: status 503", T0 + 1)
    assert b.retry_at == T0 + 61
    assert b.apply(OPEN, T0 + 100, "probe failed: timeout", T0 + 100) is None
    assert b.retry_at == T0 + 160 and b.reason == "probe failed: timeout"
    t = b.apply(HALF_OPEN, T0 + 100, "cooldown of 60s over; probing", T0 + 160)
    assert t is not None and (t.from_state, t.to_state) == (OPEN, HALF_OPEN)
    assert b.apply(HALF_OPEN, T0 + 100, "again", T0 + 161) is None
    t = b.apply(CLOSED, None, "probe succeeded", T0 + 162)
    assert t is not None and t.to_state == CLOSED
    assert b.consecutive_failures == 0 and b.window(T0 + 162) == (0, 0)
    assert b.apply(CLOSED, None, "probe succeeded", T0 + 163) is None


def test_apply_remote_half_open_keeps_a_held_probe() -> None:
    b = _opened()
    b.hold_probe(T0 + 80)
    b.apply(HALF_OPEN, T0, "cooldown over", T0 + 60)
    assert b.state == HALF_OPEN and not b.probe_due(T0 + 79) and b.probe_due(T0 + 80)


def test_apply_unknown_state() -> None:
    with pytest.raises(ValueError):
        _breaker().apply("broken", None, "", T0)


# --------------------------------------------------------------------------- reporting


def test_snapshot() -> None:
    b = _breaker(failure_threshold=2)
    assert b.snapshot(T0) == {
        "deployment": DEP,
        "state": CLOSED,
        "reason": None,
        "last_success_at": None,
        "last_failure_at": None,
        "error_rate": 0.0,
        "requests_in_window": 0,
        "consecutive_failures": 0,
        "opened_at": None,
        "retry_at": None,
    }
    b.record_success(T0)
    b.record_failure(T0 + 1, "timeout")
    b.record_failure(T0 + 2, "timeout")
    snap = b.snapshot(T0 + 3)
    assert snap["state"] == OPEN
    assert snap["reason"] == "2 consecutive failures; last: timeout"
    assert snap["last_success_at"] == "2027-01-15T08:00:00+00:00"
    assert snap["last_failure_at"] == "2027-01-15T08:00:02+00:00"
    assert snap["opened_at"] == "2027-01-15T08:00:02+00:00"
    assert snap["retry_at"] == "2027-01-15T08:01:02+00:00"
    assert snap["error_rate"] == pytest.approx(2 / 3)
    assert snap["requests_in_window"] == 3 and snap["consecutive_failures"] == 2


def test_reasons_are_one_bounded_line() -> None:
    b = _breaker(failure_threshold=1)
    t = b.record_failure(T0, "upstream\nsaid:   " + "x" * 1000)
    assert t is not None
    assert "\n" not in t.reason and len(t.reason) == MAX_REASON_LEN
    assert t.reason.startswith("1 consecutive failures; last: upstream said: xxx")
    c = _breaker(failure_threshold=1)
    t = c.record_failure(T0, "   ")
    assert t is not None and t.reason.endswith("last: unspecified")


# --------------------------------------------------------------------------- reference model


@dataclass
class _Model:
    """The specification, written the slow and obvious way: every outcome kept, with the
    bucket it was counted in (an outcome from a clock that stepped back joins the newest)."""

    policy: BreakerPolicy
    state: str = CLOSED
    opened_at: float | None = None
    probe_until: float | None = None
    consecutive: int = 0
    high: int | None = None  # the latest bucket the window has reached
    outcomes: list[tuple[int, bool]] = field(default_factory=list)

    def _bucket(self, now: float) -> int:
        return math.floor(now / (self.policy.window_seconds / 60))

    def _in_window(self, now: float) -> list[bool]:
        index = self._bucket(now)
        self.high = index if self.high is None else max(self.high, index)
        return [failed for bucket, failed in self.outcomes if bucket > self.high - 60]

    def _count(self, now: float, failed: bool) -> None:
        self._in_window(now)
        assert self.high is not None
        live = [bucket for bucket, _ in self.outcomes if bucket > self.high - 60]
        self.outcomes.append((max([self._bucket(now), *live]), failed))

    def admit(self, now: float) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            assert self.opened_at is not None
            if now < self.opened_at + self.policy.cooldown_seconds:
                return False
        if self.probe_until is not None and now < self.probe_until:
            return False
        self.state = HALF_OPEN
        self.probe_until = now + self.policy.probe_timeout_seconds
        return True

    def report(self, now: float, failed: bool) -> None:
        self._count(now, failed)
        self.consecutive = self.consecutive + 1 if failed else 0
        if self.state == HALF_OPEN:
            if failed:
                self.state, self.opened_at, self.probe_until = OPEN, now, None
            else:
                self.state, self.opened_at, self.probe_until = CLOSED, None, None
                self.outcomes, self.consecutive = [], 0
            return
        if self.state == OPEN or not failed:
            return
        window = self._in_window(now)
        rate_trips = len(window) >= self.policy.min_requests and sum(
            window
        ) >= self.policy.failure_rate * len(window)
        if self.consecutive >= self.policy.failure_threshold or rate_trips:
            self.state, self.opened_at, self.probe_until = OPEN, now, None


@pytest.mark.parametrize("seed", range(40))
def test_random_walk_matches_the_reference_model(seed: int) -> None:
    rng = random.Random(seed)
    policy = BreakerPolicy(
        failure_threshold=rng.randint(1, 8),
        failure_rate=rng.choice([0.25, 0.5, 0.75, 1.0]),
        window_seconds=rng.choice([6.0, 60.0]),
        min_requests=rng.randint(1, 12),
        cooldown_seconds=rng.choice([1.0, 5.0, 20.0]),
        probe_timeout_seconds=rng.choice([0.5, 3.0, 10.0]),
    )
    breaker = Breaker(DEP, policy)
    model = _Model(policy)
    now = T0
    transitions = 0
    for step in range(1500):
        now += rng.choice([0.0, 0.01, 0.3, 1.0, 2.5]) if rng.random() < 0.97 else -0.5
        action = rng.random()
        if action < 0.4:
            got, t = breaker.admit(now)
            assert got == model.admit(now), (seed, step)
            transitions += t is not None
        else:
            failed = rng.random() < rng.choice([0.2, 0.6, 0.9])
            if failed:
                t = breaker.record_failure(now, "x")
            else:
                t = breaker.record_success(now)
            model.report(now, failed)
            transitions += t is not None
        assert breaker.state == model.state, (seed, step)
        assert breaker.opened_at == model.opened_at, (seed, step)
        assert breaker.consecutive_failures == model.consecutive, (seed, step)
        if breaker.state == CLOSED:
            window = model._in_window(now)
            assert breaker.window(now) == (len(window), sum(window)), (seed, step)
    assert transitions > 0
