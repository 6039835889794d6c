"""Request counters: what :meth:`RequestMetrics.observe` adds up from every ledger row.

``observe(record)`` runs once per request on the request path (``Proxy._commit``, right after
the ledger accepted the row), so it is plain Python over dicts, lists and ints: no lock, no
I/O, no prometheus_client object. Everything here runs on the event loop's thread, so
``observe`` and :meth:`RequestMetrics.snapshot` never interleave; the exporter formats a
snapshot (``costwarden.metrics.exporter``).

Why not prometheus_client's own ``Counter`` / ``Histogram``: every ``labels(...)`` call takes a
lock and builds a key, every ``inc``/``observe`` takes another. Measured with
``bench/metrics_observe.py`` (best of 5 x 200,000 calls; the 2-core development VM, Python
3.11): ``Counter.labels(4 labels).inc()`` about 1,100 ns and ``Histogram.labels(1 label)
.observe()`` about 1,300 ns, against 50-110 ns for a dict lookup and a list increment. A
request touches five counters and up to three histograms: about 8 µs through the client
library. The whole of :meth:`RequestMetrics.observe` takes about 900 ns for a billed,
streamed row (TTFT, upstream and overhead timings) and about 320 ns for a $0 refusal; about
300 ns of the former is the exact Decimal-to-nano-dollar conversion
(``core.money.ledger_nanos``), which no float shortcut may replace.

Labels and their bounds (an authenticated client can still send any model name):

- ``org``: the row's org id; at most ``max_orgs`` distinct ones, later ones count as
  :data:`OTHER`. Org ids come from keys an operator created, so the cap is a backstop.
- ``model``: the *requested* model. The gateway's own routes (``models``) always have their
  label; any other name (a request refused as an unknown model) takes one of ``max_models``
  slots, first come first served, then :data:`OTHER`; a name longer than
  :data:`MAX_LABEL_CHARS` is always :data:`OTHER`. Random names fill the slots for unknown
  names, never a route's label.
- ``provider``: the provider that was called (configured, so bounded); "" when none was.
- ``status``: the ledger status, a closed set (``core.records.LedgerStatus``).

Money: ``costwarden.core.money.ledger_nanos`` per row -- the cost rounded to the ledger's 12
places, then up to whole nano-dollars -- so a spend counter is exactly the nano-dollar sum
(``nanos_sum``) of the ledger rows it counted.

Durations are kept in the record's milliseconds and turned into seconds when exported; the
bucket bounds are compared in milliseconds so ``observe`` does no division.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from bisect import bisect_left
from collections.abc import Iterable
from typing import Final

from costwarden.core.records import LedgerRecord, LedgerStatus, cost_nanos

logger = logging.getLogger(__name__)

OTHER: Final = "_other"
MAX_LABEL_CHARS = 128
DEFAULT_MAX_ORGS = 1000
DEFAULT_MAX_MODELS = 100

# Histogram bucket upper bounds, seconds (Prometheus ``le``).
OVERHEAD_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
UPSTREAM_BUCKETS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
TTFT_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Statuses whose row never reached an upstream: all of its time is the gateway's own. Other
# error rows set overhead_ms to the whole latency, upstream time included, so they are kept
# out of the overhead histogram unless the row measured its upstream part.
_NO_UPSTREAM: frozenset[LedgerStatus] = frozenset({"client_error", "auth_error", "blocked"})

# Index of each total in a series' list.
REQUESTS, INPUT_TOKENS, OUTPUT_TOKENS, CACHED_INPUT_TOKENS, SPEND_NANOS = range(5)

SeriesKey = tuple[str, str, str, str]  # org, model, provider, status
_RawKey = tuple[str | None, str | None, str | None, str]  # the same, as the row has them


_OVERHEAD_MS = tuple(b * 1000 for b in OVERHEAD_BUCKETS)
_UPSTREAM_MS = tuple(b * 1000 for b in UPSTREAM_BUCKETS)
_TTFT_MS = tuple(b * 1000 for b in TTFT_BUCKETS)


class _Timings:
    """One provider's three histograms: bucket counts (not cumulative; the last is +Inf)
    and sums, in milliseconds. Plain lists, updated inline by ``observe``."""

    __slots__ = ("overhead", "upstream", "ttft", "sums_ms")

    def __init__(self) -> None:
        self.overhead = [0] * (len(_OVERHEAD_MS) + 1)
        self.upstream = [0] * (len(_UPSTREAM_MS) + 1)
        self.ttft = [0] * (len(_TTFT_MS) + 1)
        self.sums_ms = [0.0, 0.0, 0.0]  # overhead, upstream, ttft


@dataclasses.dataclass(frozen=True, slots=True)
class HistogramData:
    """One histogram series: cumulative bucket counts per ``le`` (seconds) and the sum."""

    buckets: tuple[tuple[float, int], ...]  # (le, cumulative count); the last le is +inf
    sum_seconds: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


@dataclasses.dataclass(frozen=True, slots=True)
class RequestSnapshot:
    """Copies of every counter at one moment (taken on the event loop, formatted anywhere)."""

    series: dict[SeriesKey, tuple[int, int, int, int, int]]
    overhead: dict[str, HistogramData]  # by provider
    upstream: dict[str, HistogramData]
    ttft: dict[str, HistogramData]
    folded: dict[str, int]  # label ("org", "model") -> rows counted under OTHER


class RequestMetrics:
    """Per-process totals of every ledger row observed; see the module docstring."""

    def __init__(
        self,
        *,
        max_orgs: int = DEFAULT_MAX_ORGS,
        max_models: int = DEFAULT_MAX_MODELS,
        models: Iterable[str] = (),
    ) -> None:
        if max_orgs < 1 or max_models < 0:
            raise ValueError("max_orgs must be at least 1 and max_models at least 0")
        self.max_orgs = max_orgs
        self.max_models = max_models
        # raw value (None: the row has none) -> label; only admitted values are kept, so
        # these stay bounded whatever clients send.
        self._orgs: dict[str | None, str] = {None: ""}
        self._models: dict[str | None, str] = {None: ""}
        for model in models:
            self._models[model] = model if len(model) <= MAX_LABEL_CHARS else OTHER
        self._unknown_models = 0
        self._series: dict[SeriesKey, list[int]] = {}
        # The same totals by the row's raw values: one lookup per row on the common path.
        self._by_raw: dict[_RawKey, list[int]] = {}
        self._timings: dict[str, _Timings] = {}  # by provider
        self._folded = {"org": 0, "model": 0}

    # ------------------------------------------------------------------ the request path

    def observe(self, record: LedgerRecord) -> None:
        """Count one ledger row. Pure: reads ``record``, updates in-memory totals.

        Written for speed (it runs once per request): locals, no helper calls on the common
        path, histograms updated inline.
        """
        provider = record.provider
        status = record.status
        raw = (record.org_id, record.requested_model, provider, status)
        series = self._by_raw.get(raw)
        if series is None:
            series = self._series_of(raw)
        # Literal indexes (REQUESTS, INPUT_TOKENS, ...): a global lookup each costs ~10 ns.
        series[0] += 1
        series[1] += record.input_tokens
        series[2] += record.output_tokens
        series[3] += record.cached_input_tokens
        cost = record.cost_usd
        if cost:  # most error rows cost nothing: skip the Decimal work
            series[4] += cost_nanos(record)  # computed once, shared with the budget settle
        timings = self._timings.get(provider or "")
        if timings is None:
            timings = self._timings[provider or ""] = _Timings()
        sums = timings.sums_ms
        overhead = record.overhead_ms
        upstream = record.latency_ms - overhead
        # bisect_left: a value equal to a bound goes in that bound's bucket (le).
        if upstream > 0.0 and provider:
            timings.upstream[bisect_left(_UPSTREAM_MS, upstream)] += 1
            sums[1] += upstream
            timings.overhead[bisect_left(_OVERHEAD_MS, overhead)] += 1
            sums[0] += overhead
        elif status in _NO_UPSTREAM:
            timings.overhead[bisect_left(_OVERHEAD_MS, overhead)] += 1
            sums[0] += overhead
        ttft = record.ttft_ms
        if ttft is not None:
            timings.ttft[bisect_left(_TTFT_MS, ttft)] += 1
            sums[2] += ttft

    def _series_of(self, raw: _RawKey) -> list[int]:
        """The totals of a row's raw label values not seen before (the slow path)."""
        org_id, requested, provider, status = raw
        org = self._orgs.get(org_id)
        if org is None:
            org = self._admit_org(org_id)
        model = self._models.get(requested)
        if model is None:
            model = self._admit_model(requested)
        key = (org, model, provider or "", status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0, 0, 0, 0, 0]
        if org != OTHER and model != OTHER:
            # Admitted values only, so this map is as bounded as the labels are.
            self._by_raw[raw] = series
        return series

    def _admit_org(self, org_id: str | None) -> str:
        """The label of an org not seen yet: its id while there is room, else OTHER."""
        if org_id is None:  # pragma: no cover - None is always in the map
            return ""
        if len(self._orgs) - 1 < self.max_orgs and len(org_id) <= MAX_LABEL_CHARS:
            self._orgs[org_id] = org_id
            return org_id
        self._folded["org"] += 1
        return OTHER

    def _admit_model(self, model: str | None) -> str:
        """The label of a model name that is no route: its name while a slot is free."""
        if model is None:  # pragma: no cover - None is always in the map
            return ""
        if self._unknown_models < self.max_models and len(model) <= MAX_LABEL_CHARS:
            self._unknown_models += 1
            self._models[model] = model
            return model
        self._folded["model"] += 1
        return OTHER

    # ------------------------------------------------------------------ reading

    @property
    def org_labels(self) -> int:
        """Distinct org labels in use (OTHER not included)."""
        return len(self._orgs) - 1

    def snapshot(self) -> RequestSnapshot:
        """Copies of every total, for the exporter (cheap: C-level copies, no formatting)."""
        overhead: dict[str, HistogramData] = {}
        upstream: dict[str, HistogramData] = {}
        ttft: dict[str, HistogramData] = {}
        for provider, t in self._timings.items():
            for out, counts, bounds, total in (
                (overhead, t.overhead, OVERHEAD_BUCKETS, t.sums_ms[0]),
                (upstream, t.upstream, UPSTREAM_BUCKETS, t.sums_ms[1]),
                (ttft, t.ttft, TTFT_BUCKETS, t.sums_ms[2]),
            ):
                if any(counts):  # a provider with no observation here has no series
                    out[provider] = _cumulative(counts, bounds, total)
        return RequestSnapshot(
            series={k: (v[0], v[1], v[2], v[3], v[4]) for k, v in self._series.items()},
            overhead=overhead,
            upstream=upstream,
            ttft=ttft,
            folded=dict(self._folded),
        )


def _cumulative(counts: list[int], bounds: tuple[float, ...], sum_ms: float) -> HistogramData:
    running = 0
    buckets: list[tuple[float, int]] = []
    for le, count in zip((*bounds, math.inf), counts, strict=True):
        running += count
        buckets.append((le, running))
    return HistogramData(tuple(buckets), sum_ms / 1000)
