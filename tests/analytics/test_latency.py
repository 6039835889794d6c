"""Latency histograms: bucket bounds, bucketing, merging, and quantile estimates within the
stated relative error of the exact quantile (table tests and a property test)."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costwarden.analytics.latency import (
    BOUNDS,
    BUCKETS,
    MAX_RELATIVE_ERROR,
    OVERFLOW,
    RATIO,
    bucket_of,
    bucket_range,
    histogram,
    merge,
    quantile,
    rank,
)


def exact(values: list[float], q: float) -> float:
    """The exact nearest-rank quantile, computed independently of the module."""
    ordered = sorted(values)
    k = max(1, math.ceil(Fraction(q) * len(ordered)))
    return ordered[k - 1]


def test_bounds_are_log_spaced_from_1_ms_to_10_minutes() -> None:
    assert BOUNDS[0] == 1.0 and 600_000 < BOUNDS[-1] < 700_000
    assert BUCKETS == len(BOUNDS) + 1 == OVERFLOW + 1 == 79
    ratios = [hi / lo for lo, hi in zip(BOUNDS, BOUNDS[1:], strict=False)]
    assert all(1.1886 < r <= RATIO for r in ratios)
    assert RATIO == pytest.approx(2**0.25, abs=1e-3)
    assert MAX_RELATIVE_ERROR == pytest.approx(0.1897, abs=1e-4)
    # Every fourth bound is a power of two (to 4 significant digits: 16384 is 16380).
    assert [BOUNDS[i] for i in range(0, 56, 4)] == [2.0**k for k in range(14)]
    assert BOUNDS[56] == 16_380 and BOUNDS[76] == pytest.approx(2.0**19, rel=1e-3)


@pytest.mark.parametrize(
    ("ms", "bucket"),
    [
        (-5.0, 0), (0.0, 0), (1e-9, 0), (0.999, 0), (1.0, 0),
        (math.nextafter(1.0, 2), 1), (1.189, 1), (1.1891, 2), (2.0, 4), (2.0001, 5),
        (100.0, 27), (1000.0, 40), (BOUNDS[-1], OVERFLOW - 1),
        (math.nextafter(BOUNDS[-1], math.inf), OVERFLOW), (1e12, OVERFLOW),
    ],
)  # fmt: skip
def test_bucket_of(ms: float, bucket: int) -> None:
    assert bucket_of(ms) == bucket
    lower, upper = bucket_range(bucket)
    assert ms <= upper and (bucket == 0 or ms > lower)


def test_every_bound_is_the_top_of_its_bucket() -> None:
    for i, bound in enumerate(BOUNDS):
        assert bucket_of(bound) == i
        assert bucket_of(math.nextafter(bound, math.inf)) == i + 1
        assert bucket_of(math.nextafter(bound, -math.inf)) == i


def test_bucket_range_refuses_buckets_that_do_not_exist() -> None:
    assert bucket_range(0) == (0.0, 1.0) and bucket_range(OVERFLOW)[1] == math.inf
    for bad in (-1, BUCKETS):
        with pytest.raises(ValueError, match="no latency bucket"):
            bucket_range(bad)


def test_histogram_and_merge() -> None:
    assert histogram([]) == {}
    assert histogram([0.5, 1.0, 2.0, 2.0, 1e9]) == {0: 2, 4: 2, OVERFLOW: 1}
    a, b = histogram([3.0, 40.0, 40.0]), histogram([40.0, 700.0])
    assert merge([a, b]) == histogram([3.0, 40.0, 40.0, 40.0, 700.0])
    assert merge([]) == {} and merge([{3: 0}]) == {}


@pytest.mark.parametrize(
    ("q", "n", "k"),
    [(0.0, 10, 1), (0.5, 10, 5), (0.95, 20, 19), (0.95, 21, 20), (0.99, 100, 99),
     (1.0, 7, 7), (0.5, 1, 1)],
)  # fmt: skip
def test_rank_is_the_nearest_rank(q: float, n: int, k: int) -> None:
    assert rank(q, n) == k


def test_quantile_table() -> None:
    assert quantile({}, 0.95) is None and quantile({4: 0}, 0.5) is None
    # One bucket of 10: the 10th of 10 sits at 95 % of the bucket's log-width.
    lower, upper = bucket_range(5)
    assert quantile({5: 10}, 1.0) == pytest.approx(lower * (upper / lower) ** 0.95)
    assert quantile({5: 10}, 0.0) == pytest.approx(lower * (upper / lower) ** 0.05)
    # The rank picks the bucket: 95 of 100 in bucket 10, the rest in 30.
    assert bucket_of(quantile({10: 95, 30: 5}, 0.95) or 0) == 10
    assert bucket_of(quantile({10: 95, 30: 5}, 0.96) or 0) == 30
    assert quantile({0: 4}, 0.5) == pytest.approx(0.375)  # linear below 1 ms
    assert quantile({OVERFLOW: 3, 2: 1}, 0.99) == BOUNDS[-1]  # a floor above the last bound
    with pytest.raises(ValueError, match="between 0 and 1"):
        quantile({1: 1}, 1.5)


def test_a_smooth_distribution_is_estimated_far_closer_than_the_bound() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(math.log(400), 0.8) for _ in range(20_000)]
    counts = histogram(values)
    for q in (0.5, 0.95, 0.99):
        got = quantile(counts, q)
        assert got is not None
        assert abs(got - exact(values, q)) / exact(values, q) < 0.01


_LATENCY = st.floats(min_value=1.000001, max_value=BOUNDS[-1])


@settings(max_examples=300, deadline=None)
@given(
    values=st.one_of(
        st.lists(_LATENCY, min_size=1, max_size=300),
        # Skewed, as request latencies are: a body and a tail an order of magnitude out.
        st.builds(
            lambda body, tail: body + tail,
            st.lists(st.floats(min_value=50, max_value=900), min_size=1, max_size=200),
            st.lists(st.floats(min_value=2_000, max_value=60_000), max_size=30),
        ),
        # Values exactly on the bounds (the top of their buckets).
        st.lists(st.sampled_from(BOUNDS[1:]), min_size=1, max_size=50),
    ),
    q=st.one_of(st.sampled_from([0.5, 0.95, 0.99]), st.floats(min_value=0, max_value=1)),
    chunks=st.integers(min_value=1, max_value=4),
)
def test_estimate_is_within_the_bound_of_the_exact_quantile(
    values: list[float], q: float, chunks: int
) -> None:
    # Histograms of parts merged give the same estimate as one of the whole.
    parts = [histogram(values[i::chunks]) for i in range(chunks)]
    merged = merge(parts)
    assert merged == histogram(values)
    got, want = quantile(merged, q), exact(values, q)
    assert got is not None
    assert bucket_of(got) == bucket_of(want) or got == bucket_range(bucket_of(want))[0]
    assert abs(got - want) / want <= MAX_RELATIVE_ERROR
