"""Spend spikes: which hour is checked, which previous hours make its usual (only days the
org existed), and which orgs and metrics spike."""

from __future__ import annotations

from decimal import Decimal

import pytest

from costwarden.alerts.spikes import (
    DAY,
    HOUR,
    HourUse,
    SpikeParams,
    compared_hours,
    hour_to_check,
    spikes,
)
from costwarden.core.errors import InvalidInput
from costwarden.core.money import NANOS_PER_USD as USD

H = 1_900_000_800  # 2030-03-17 18:00 UTC, a multiple of 3600
P = SpikeParams(factor=Decimal(3), history_days=7, min_history_days=3, min_usd_nanos=USD)
LONG_AGO = 0.0


@pytest.mark.parametrize(
    ("now", "hour"),
    [
        (H + HOUR + 120, H),  # two minutes after the hour ended: it is checked
        (H + HOUR + 119, H - HOUR),  # not yet: the hour before is the newest one checked
        (H + 2 * HOUR - 1, H),
        (H + 2 * HOUR + 120, H + HOUR),
    ],
)
def test_the_hour_checked_is_the_newest_complete_one_after_the_grace(now: int, hour: int) -> None:
    assert hour_to_check(now, 120) == hour


def test_compared_hours_are_the_same_hour_on_previous_days() -> None:
    assert compared_hours(H, 3) == [H, H - DAY, H - 2 * DAY, H - 3 * DAY]


def _use(org: str, usd: list[int], tokens: list[int] | None = None) -> list[HourUse]:
    """An org's use at H (first) and the same hour 1, 2, ... days before."""
    toks = tokens or [0] * len(usd)
    return [HourUse(org, H - d * DAY, u, t) for d, (u, t) in enumerate(zip(usd, toks, strict=True))]


@pytest.mark.parametrize(
    ("usd", "created", "spiked"),
    [
        ([30 * USD] + [10 * USD] * 7, LONG_AGO, True),  # 3 times the usual
        ([29 * USD] + [10 * USD] * 7, LONG_AGO, False),
        # The other 4 days of the week had no use that hour: they count, as zeros (a usual
        # of $30 / 7); without them $13 would be under 3 times $10.
        ([13 * USD, 10 * USD, 10 * USD, 10 * USD], LONG_AGO, True),
        ([12 * USD, 10 * USD, 10 * USD, 10 * USD], LONG_AGO, False),
        ([30 * USD] + [10 * USD] * 7 + [1000 * USD], LONG_AGO, True),  # 8 days ago: not read
        # Created two days and an hour before: only 2 days of history, 3 needed.
        ([50 * USD, 1, 1], H - 2 * DAY - HOUR, False),
        ([50 * USD, 1, 1, 1], H - 3 * DAY, True),  # created at the hour's start 3 days before
        ([5 * USD], LONG_AGO, True),  # quiet nights: a usual of zero, $5 over the floor
        ([USD - 1], LONG_AGO, False),  # under the floor
    ],
)
def test_usd_spikes(usd: list[int], created: float, spiked: bool) -> None:
    found = spikes(H, _use("org_a", usd), {"org_a": created}, P)
    assert [(f.org_id, f.metric, f.hour) for f in found] == ([("org_a", "usd", H)] * spiked)
    if spiked:
        assert found[0].result.last_hour == usd[0]


def test_only_known_orgs_with_use_that_hour_are_judged() -> None:
    usage = [
        *_use("org_a", [10 * USD]),
        *_use("org_gone", [10 * USD]),  # not in the orgs table
        *_use("org_idle", [0, 10 * USD])[1:],  # used the hour yesterday, not today
    ]
    created = {"org_a": LONG_AGO, "org_idle": LONG_AGO}
    assert [f.org_id for f in spikes(H, usage, created, P)] == ["org_a"]


def test_tokens_are_checked_only_with_a_floor() -> None:
    usage = _use("org_a", [USD, USD, USD, USD], [9_000, 1_000, 1_000, 1_000])
    assert spikes(H, usage, {"org_a": LONG_AGO}, P) == []
    with_floor = SpikeParams(min_tokens=5_000)
    (found,) = spikes(H, usage, {"org_a": LONG_AGO}, with_floor)
    assert (found.metric, found.result.last_hour) == ("tokens", 9_000)
    assert spikes(H, usage, {"org_a": LONG_AGO}, SpikeParams(min_tokens=9_001)) == []


def test_use_of_the_same_org_and_hour_adds_up() -> None:
    usage = [*_use("org_a", [USD, USD, USD, USD]), HourUse("org_a", H, 2 * USD, 0)]
    (found,) = spikes(H, usage, {"org_a": LONG_AGO}, P)
    assert found.result.last_hour == 3 * USD


def test_params_are_checked() -> None:
    for bad in ({"factor": Decimal(1)}, {"min_history_days": 0},
                {"history_days": 2, "min_history_days": 3}, {"min_usd_nanos": -1},
                {"grace_seconds": HOUR}):  # fmt: skip
        with pytest.raises(InvalidInput):
            SpikeParams(**bad)
