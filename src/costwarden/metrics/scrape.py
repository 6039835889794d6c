"""One scrape's values, and how the workers of ``serve --workers N`` combine theirs.

A :class:`Scrape` is everything one process exports, read on its event loop. With several
worker processes serving one port, the worker that answers ``GET /metrics`` reads its own
scrape and asks every other worker for theirs (``costwarden.app.worker_metrics``; the bytes
are :func:`encode` / :func:`decode`), then exports :func:`merge` of them all, so whichever
worker answers, a scrape shows the whole gateway:

- counters and histograms (requests, tokens, spend, timings, label overflow, ledger rows
  written and write failures): the sum over the workers;
- ledger queue depth, spool depth and event subscribers: the sum; ledger flush lag: the
  largest; spooling: whether any worker is;
- leased slices' admissions and calls: the sum;
- budget counters' mode: the most degraded any worker is in (refusing, local, reconciling,
  shared: each worker learns of a Redis outage from its own commands);
- breaker state: the worst any worker sees (open over half-open over closed). Workers share
  breaker state through Redis (which ``--workers`` needs), so they agree but for a moment;
- limits: the answering worker's. With Redis only the amounts are in memory, and every
  worker reads the same policy;
- ``workers``: each worker's request count, by pid (``costwarden_worker_requests_total``).

Pure functions over plain values: no I/O here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from costwarden.metrics.requests import HistogramData, RequestSnapshot, SeriesKey
from costwarden.metrics.sources import (
    BREAKER_STATE_VALUES,
    COUNTER_MODES,
    LedgerGauges,
    LimitGauges,
    SliceCounts,
)

_WIRE_VERSION = 1
_Totals = tuple[int, int, int, int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class Scrape:
    """Everything one scrape exports, read on the event loop."""

    requests: RequestSnapshot
    breakers: Mapping[str, str] | None
    limits: LimitGauges | None
    ledger: LedgerGauges | None
    event_subscribers: int | None
    #: where budget counters are decided (one of COUNTER_MODES); None when not exported
    counters_mode: str | None = None
    #: worker pid -> requests it counted; None for a single-process gateway (not exported)
    workers: Mapping[str, int] | None = None
    #: leased slices' admissions and calls; None without leased slices (not exported)
    slices: SliceCounts | None = None


def encode(scrape: Scrape) -> bytes:
    """A scrape as bytes for another worker (its limits stay behind: see the module doc)."""
    snap = scrape.requests
    ledger = scrape.ledger
    wire: dict[str, Any] = {
        "v": _WIRE_VERSION,
        "series": [[*key, *totals] for key, totals in snap.series.items()],
        "overhead": _histograms_out(snap.overhead),
        "upstream": _histograms_out(snap.upstream),
        "ttft": _histograms_out(snap.ttft),
        "folded": snap.folded,
        "breakers": scrape.breakers,
        "ledger": None if ledger is None else dataclasses.astuple(ledger),
        "event_subscribers": scrape.event_subscribers,
        "counters_mode": scrape.counters_mode,
        "workers": scrape.workers,
        "slices": None if scrape.slices is None else dataclasses.astuple(scrape.slices),
    }
    return orjson.dumps(wire)


def decode(data: bytes) -> Scrape:
    """The scrape :func:`encode` made; ValueError if ``data`` is not one."""
    try:
        wire = orjson.loads(data)
        if wire.get("v") != _WIRE_VERSION:
            raise ValueError(f"wire version {wire.get('v')!r}, expected {_WIRE_VERSION}")
        series: dict[SeriesKey, _Totals] = {}
        for row in wire["series"]:
            org, model, provider, status, a, b, c, d, e = row
            series[(org, model, provider, status)] = (a, b, c, d, e)
        ledger, slices = wire["ledger"], wire["slices"]
        return Scrape(
            requests=RequestSnapshot(
                series=series,
                overhead=_histograms_in(wire["overhead"]),
                upstream=_histograms_in(wire["upstream"]),
                ttft=_histograms_in(wire["ttft"]),
                folded={str(k): int(v) for k, v in wire["folded"].items()},
            ),
            breakers=wire["breakers"],
            limits=None,
            ledger=None if ledger is None else LedgerGauges(*ledger),
            event_subscribers=wire["event_subscribers"],
            counters_mode=wire["counters_mode"],
            workers=wire["workers"],
            slices=None if slices is None else SliceCounts(*slices),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError too
        raise ValueError(f"not a metrics scrape: {type(exc).__name__}: {exc}") from None


def merge(own: Scrape, others: Sequence[Scrape]) -> Scrape:
    """The answering worker's scrape (``own``) combined with the other workers'."""
    if not others:
        return own
    every = (own, *others)
    return Scrape(
        requests=RequestSnapshot(
            series=_sum_series(s.requests.series for s in every),
            overhead=_sum_histograms(s.requests.overhead for s in every),
            upstream=_sum_histograms(s.requests.upstream for s in every),
            ttft=_sum_histograms(s.requests.ttft for s in every),
            folded=_sum_counts(s.requests.folded for s in every),
        ),
        breakers=_worst_breakers([s.breakers for s in every]),
        limits=own.limits,
        ledger=_sum_ledgers([s.ledger for s in every if s.ledger is not None]),
        event_subscribers=_sum_optional([s.event_subscribers for s in every]),
        counters_mode=_most_degraded([s.counters_mode for s in every]),
        workers=_sum_counts(s.workers or {} for s in every),
        slices=_sum_slices([s.slices for s in every if s.slices is not None]),
    )


def _sum_slices(parts: list[SliceCounts]) -> SliceCounts | None:
    if not parts:
        return None
    return SliceCounts(
        admitted_locally=sum(p.admitted_locally for p in parts),
        reserved_exactly=sum(p.reserved_exactly for p in parts),
        calls=sum(p.calls for p in parts),
    )


def _histograms_out(data: Mapping[str, HistogramData]) -> dict[str, Any]:
    # JSON has no infinity: the last bound (always +Inf) is sent as null.
    return {
        provider: [[None if math.isinf(le) else le, n] for le, n in h.buckets] + [h.sum_seconds]
        for provider, h in data.items()
    }


def _histograms_in(wire: Mapping[str, Any]) -> dict[str, HistogramData]:
    out: dict[str, HistogramData] = {}
    for provider, rows in wire.items():
        *buckets, total = rows
        out[provider] = HistogramData(
            tuple((math.inf if le is None else float(le), int(n)) for le, n in buckets),
            float(total),
        )
    return out


def _sum_series(parts: Iterable[Mapping[SeriesKey, _Totals]]) -> dict[SeriesKey, _Totals]:
    out: dict[SeriesKey, _Totals] = {}
    for series in parts:
        for key, totals in series.items():
            have = out.get(key)
            if have is None:
                out[key] = totals
            else:
                a, b, c, d, e = (x + y for x, y in zip(have, totals, strict=True))
                out[key] = (a, b, c, d, e)
    return out


def _sum_histograms(parts: Iterable[Mapping[str, HistogramData]]) -> dict[str, HistogramData]:
    out: dict[str, HistogramData] = {}
    for data in parts:
        for provider, h in data.items():
            have = out.get(provider)
            if have is None:
                out[provider] = h
                continue
            if [le for le, _ in have.buckets] != [le for le, _ in h.buckets]:
                raise ValueError(f"histogram of {provider!r}: workers disagree on the buckets")
            buckets = tuple(
                (le, n + m) for (le, n), (_, m) in zip(have.buckets, h.buckets, strict=True)
            )
            out[provider] = HistogramData(buckets, have.sum_seconds + h.sum_seconds)
    return out


def _sum_counts(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for counts in parts:
        for name, n in counts.items():
            out[name] = out.get(name, 0) + n
    return out


def _worst_breakers(parts: list[Mapping[str, str] | None]) -> dict[str, str] | None:
    known = [p for p in parts if p is not None]
    if not known:
        return None
    out: dict[str, str] = {}
    for states in known:
        for deployment, state in states.items():
            have = out.get(deployment)
            if have is None or _rank(state) > _rank(have):
                out[deployment] = state
    return out


def _rank(state: str) -> int:
    return BREAKER_STATE_VALUES.get(state, -1)


def _sum_ledgers(parts: list[LedgerGauges]) -> LedgerGauges | None:
    if not parts:
        return None
    return LedgerGauges(
        queue_depth=sum(p.queue_depth for p in parts),
        flush_lag_seconds=max(p.flush_lag_seconds for p in parts),
        written=sum(p.written for p in parts),
        failures=sum(p.failures for p in parts),
        spooled=sum(p.spooled for p in parts),
        spooling=any(p.spooling for p in parts),
    )


# Most degraded first: a worker refusing requests is what a scrape must show.
_DEGRADED = ("refusing", "local", "reconciling", "shared")
assert sorted(_DEGRADED) == sorted(COUNTER_MODES)


def _most_degraded(modes: list[str | None]) -> str | None:
    known = [m for m in modes if m is not None]
    if not known:
        return None
    return min(known, key=lambda m: _DEGRADED.index(m) if m in _DEGRADED else len(_DEGRADED))


def _sum_optional(values: list[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None
