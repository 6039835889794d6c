"""Latency histograms as data: fixed log-spaced buckets, a latency's bucket, and quantiles
estimated from bucket counts.

**Buckets.** ``BOUNDS`` are upper bounds in milliseconds, ``2 ** (i / 4)`` for i = 0..77
(1 ms to ~10.4 min), each rounded to 4 significant digits so that they read well in SQL and
are the same double on every platform and in both databases. Bucket 0 holds every latency up
to 1 ms (0 and below included), bucket i (1..77) the latencies in
``(BOUNDS[i - 1], BOUNDS[i]]``, and bucket ``OVERFLOW`` (78) everything above the last bound.
Neighbouring bounds differ by a factor of 1.1887 to 1.1897 (``RATIO``: the largest).

**Quantiles.** The q-quantile of n latencies is the one of rank ``ceil(q * n)`` in ascending
order (nearest rank; rank 1 for q = 0). :func:`quantile` finds the bucket holding that rank
and interpolates *geometrically* inside it, placing the bucket's values evenly on a log scale
(the rank's position among the bucket's count, at the middle of its share). The estimate
and the exact value lie in the same bucket, so for latencies in (1 ms, ``BOUNDS[-1]``] the
relative error ``|estimate - exact| / exact`` is below ``MAX_RELATIVE_ERROR`` (``RATIO - 1``,
18.97 %) whatever the distribution; with many requests per bucket of a smooth distribution
it is typically well under 1 %. At or below 1 ms the estimate is linear from 0 (an absolute
error under 1 ms); in the overflow bucket it is the last bound (a floor).

A histogram is a mapping of bucket number to count (buckets without requests left out);
histograms of disjoint sets of requests merge by adding counts, which is what lets hours add
up to days and rollups to any window.

The bounds are stored as bucket numbers (``storage.rollups``): changing ``BOUNDS`` means
recomputing every stored histogram.

Pure: storage buckets rows in SQL (a CASE over these bounds) and reads the counts.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from fractions import Fraction

BOUNDS: tuple[float, ...] = tuple(float(f"{2 ** (i / 4):.4g}") for i in range(78))
OVERFLOW = len(BOUNDS)  # the bucket above the last bound
BUCKETS = OVERFLOW + 1
RATIO = max(hi / lo for lo, hi in zip(BOUNDS, BOUNDS[1:], strict=False))
MAX_RELATIVE_ERROR = RATIO - 1
# What the API says about its percentiles (one place, so the figures cannot disagree).
METHOD = (
    f"estimated from log-spaced histograms (bucket ratio {RATIO:.4f}, relative error "
    f"< {MAX_RELATIVE_ERROR * 100:.2f} % for 1 ms to {BOUNDS[-1] / 60_000:.1f} min)"
)

Histogram = Mapping[int, int]


def bucket_of(ms: float) -> int:
    """The bucket of a latency in milliseconds (the first bound it does not exceed)."""
    return bisect_left(BOUNDS, ms)


def bucket_range(bucket: int) -> tuple[float, float]:
    """(lower, upper) bound of a bucket in ms: values in it are > lower and <= upper."""
    if not 0 <= bucket < BUCKETS:
        raise ValueError(f"no latency bucket {bucket}")
    lower = 0.0 if bucket == 0 else BOUNDS[bucket - 1]
    upper = math.inf if bucket == OVERFLOW else BOUNDS[bucket]
    return lower, upper


def histogram(latencies: Iterable[float]) -> dict[int, int]:
    """The histogram of some latencies (ms)."""
    out: dict[int, int] = {}
    for ms in latencies:
        bucket = bucket_of(ms)
        out[bucket] = out.get(bucket, 0) + 1
    return out


def merge(histograms: Iterable[Histogram]) -> dict[int, int]:
    """One histogram of the requests of several (disjoint) ones."""
    out: dict[int, int] = {}
    for h in histograms:
        for bucket, count in h.items():
            if count:
                out[bucket] = out.get(bucket, 0) + count
    return out


def rank(q: float, n: int) -> int:
    """The 1-based rank of the q-quantile of n values (nearest rank). ``q`` is taken as the
    exact binary fraction it is, so 0.95 of 20 is rank 19, not 20 by a rounding error."""
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, got {q}")
    return max(1, math.ceil(Fraction(q) * n))


def quantile(counts: Histogram, q: float) -> float | None:
    """The estimated q-quantile (ms) of the requests counted in ``counts``; None if none."""
    n = sum(counts.values())
    if n <= 0:
        return None
    wanted = rank(q, n)
    below = 0
    for bucket in sorted(counts):
        count = counts[bucket]
        if count <= 0:
            continue
        if below + count >= wanted:
            lower, upper = bucket_range(bucket)
            if bucket == OVERFLOW:
                return lower
            # The rank's place among the bucket's values, each at the middle of its share.
            share = (wanted - below - 0.5) / count
            if bucket == 0:
                return upper * share
            return float(lower * (upper / lower) ** share)
        below += count
    raise AssertionError("unreachable: the ranks add up to n")  # pragma: no cover
