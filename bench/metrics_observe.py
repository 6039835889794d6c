"""What counting one request for ``GET /metrics`` costs the request path.

Times ``RequestMetrics.observe`` on realistic ledger rows (a successful streamed call with a
sub-cent Decimal cost, TTFT and upstream latency; a refusal that cost nothing), and, for
comparison, what the same counting would cost through prometheus_client's own
``Counter.labels(...).inc()`` and ``Histogram.labels(...).observe()``, and a plain dict
increment. Prints nanoseconds per call (best of ``--repeat`` runs of ``--number`` calls).

    python bench/metrics_observe.py [--number 200000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter, Histogram

from costwarden.core.money import ledger_nanos
from costwarden.core.records import LedgerRecord
from costwarden.metrics import MetricsExporter, RequestMetrics


def _success() -> LedgerRecord:
    return LedgerRecord(
        request_id="req_0195d0c0a1b2c3d4e5f6a7b8",
        ts=datetime.now(UTC),
        endpoint="chat.completions",
        status="success",
        http_status=200,
        org_id="org_4f1c2a9b",
        project_id="prj_7d2e",
        key_id="key_19ab",
        provider="openai",
        requested_model="gpt-4o-mini",
        served_model="gpt-4o-mini",
        streamed=True,
        input_tokens=1234,
        cached_input_tokens=512,
        output_tokens=321,
        cost_usd=Decimal("0.0003537"),
        latency_ms=812.4,
        ttft_ms=143.7,
        overhead_ms=0.41,
    )


def _refusal() -> LedgerRecord:
    return LedgerRecord(
        request_id="req_0195d0c0a1b2c3d4e5f6a7b9",
        ts=datetime.now(UTC),
        endpoint="chat.completions",
        status="blocked",
        http_status=402,
        org_id="org_4f1c2a9b",
        requested_model="gpt-4o-mini",
        latency_ms=0.2,
        overhead_ms=0.2,
    )


def _ns(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, r = args.number, args.repeat

    metrics = RequestMetrics(models=["gpt-4o-mini"])
    exporter = MetricsExporter(metrics)
    success, refusal = _success(), _refusal()
    rows: list[tuple[str, float]] = [
        ("RequestMetrics.observe (success, streamed)", _ns(lambda: metrics.observe(success), n, r)),
        ("RequestMetrics.observe (refusal, $0)", _ns(lambda: metrics.observe(refusal), n, r)),
        ("MetricsExporter.observe (success)", _ns(lambda: exporter.observe(success), n, r)),
        ("  of which ledger_nanos(cost)", _ns(lambda: ledger_nanos(success.cost_usd), n, r)),
    ]

    registry = CollectorRegistry()
    counter = Counter("c", "c", ["org", "model", "provider", "status"], registry=registry)
    histogram = Histogram("h", "h", ["provider"], registry=registry)
    labels = ("org_4f1c2a9b", "gpt-4o-mini", "openai", "success")
    totals = {labels: [0, 0]}

    def counter_inc() -> None:
        counter.labels(*labels).inc()

    def histogram_observe() -> None:
        histogram.labels("openai").observe(0.8)

    def dict_increment() -> None:
        totals[labels][0] += 1

    rows += [
        ("prometheus_client Counter.labels(4).inc()", _ns(counter_inc, n, r)),
        ("prometheus_client Histogram.labels(1).observe()", _ns(histogram_observe, n, r)),
        ("dict lookup + list increment", _ns(dict_increment, n, r)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, ns in rows:
        print(f"{name:<{width}}  {ns:8.0f} ns")


if __name__ == "__main__":
    main()
