"""Prometheus metrics: request counters fed from every ledger row, gauges read at scrape time.

- :mod:`costwarden.metrics.requests`: :class:`RequestMetrics`, the plain in-process counters
  ``observe(record)`` adds to on the request path (no lock, no I/O, about 0.9 µs a billed row).
- :mod:`costwarden.metrics.sources`: what the app passes in to read at scrape time (breaker
  states, limits, ledger writer, event subscribers), as plain callables and values.
- :mod:`costwarden.metrics.exporter`: :class:`MetricsExporter`, a per-app registry with one
  custom collector, rendered as Prometheus text for ``GET /metrics``.

Counters are per process: each gateway process exports its own, and Prometheus sums them.
This package imports only ``costwarden.core`` and ``prometheus_client``.
"""

from costwarden.metrics.exporter import MetricsExporter
from costwarden.metrics.requests import OTHER, RequestMetrics
from costwarden.metrics.sources import (
    GaugeSources,
    LedgerGauges,
    LimitGauge,
    LimitGauges,
    SliceCounts,
)

__all__ = [
    "OTHER",
    "GaugeSources",
    "LedgerGauges",
    "LimitGauge",
    "LimitGauges",
    "MetricsExporter",
    "RequestMetrics",
    "SliceCounts",
]
