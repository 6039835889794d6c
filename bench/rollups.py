#!/usr/bin/env python
"""The analytics rollup job at scale: generate a ledger, roll it up, reconcile it.

    python bench/rollups.py [--rows 1000000] [--days 90] [--postgres]

Writes ``--rows`` ledger rows spread over ``--days`` days (1,000 orgs with a long tail, 20
models, 3 providers, keys, end users, a third of the rows tagged, busier by day than by
night) through the ledger's own INSERT (so ``written_ms`` is the database's clock), into a
fresh SQLite file or, with ``--postgres``, a scratch PostgreSQL database. Then times:

- the first run (no watermark: every hour the ledger spans, a backfill);
- a second run right after (nothing new: the idempotent no-op);
- an incremental run after a minute's worth of new rows, some of them late (stamped hours
  earlier);
- the analytics queries behind the API (30-day overview, by org and day, top orgs, one org
  by model, a month's chargeback by project, the 30-day latency histogram of every org and
  of one), p95 of 20 calls;
- reconciling the busiest day against the raw ledger.

``--days 1`` gives "a day of N rows". Prints rows/s and the seconds of each step.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledgergen import insert_rows  # noqa: E402
from tests.helpers import scratch_pg_database  # noqa: E402

from costwarden.analytics.query import SpendQuery  # noqa: E402
from costwarden.analytics.rollup import day_of  # noqa: E402
from costwarden.core.records import LedgerRecord  # noqa: E402
from costwarden.storage.analytics_read import latency_histogram, spend  # noqa: E402
from costwarden.storage.db import create_engine_for  # noqa: E402
from costwarden.storage.ledger_rows import DriverInsert  # noqa: E402
from costwarden.storage.migrate import migrate  # noqa: E402
from costwarden.storage.reconciliation import reconcile  # noqa: E402
from costwarden.storage.rollups import roll_up  # noqa: E402

console = Console()
MODELS = [f"model-{i:02d}" for i in range(20)]
PROVIDERS = ["openai", "anthropic", "bedrock"]
STATUSES = ["success"] * 92 + ["upstream_error"] * 4 + ["blocked"] * 3 + ["degraded"]
BATCH = 4096


class _Traffic:
    def __init__(self, days: int, seed: int = 14) -> None:
        self.rng = random.Random(seed)
        self.end = datetime(2026, 12, 1, tzinfo=UTC)
        self.start = self.end - timedelta(days=days)
        self.seconds = days * 86400
        # A long tail: org i gets weight 1 / (i + 1).
        self.orgs = [f"org_{i:04d}" for i in range(1000)]
        self.weights = [1 / (i + 1) for i in range(1000)]
        self.n = 0

    def ts(self) -> datetime:
        rng = self.rng
        while True:  # busier by day (UTC 8-20) than by night
            t = rng.uniform(0, self.seconds)
            hour = int(t // 3600) % 24
            if rng.random() < (1.0 if 8 <= hour < 20 else 0.35):
                return self.start + timedelta(seconds=t)

    def record(self, ts: datetime | None = None) -> LedgerRecord:
        rng = self.rng
        self.n += 1
        org = rng.choices(self.orgs, self.weights)[0]
        model = rng.choice(MODELS)
        tokens_in, tokens_out = rng.randrange(10, 8000), rng.randrange(0, 2000)
        return LedgerRecord(
            request_id=f"req_{self.n:012x}{rng.getrandbits(48):012x}",
            ts=ts or self.ts(),
            endpoint="chat.completions",
            status=rng.choice(STATUSES),
            http_status=200,
            org_id=org,
            project_id=f"{org}_prj_{rng.randrange(3)}",
            key_id=f"{org}_key_{rng.randrange(5)}",
            end_user=f"user_{rng.randrange(200)}" if rng.random() < 0.6 else None,
            tags={"team": rng.choice(["ml", "web", "data"])} if rng.random() < 0.33 else {},
            provider=rng.choice(PROVIDERS),
            requested_model=model,
            served_model=model,
            input_tokens=tokens_in,
            cached_input_tokens=rng.randrange(0, tokens_in // 4 + 1),
            output_tokens=tokens_out,
            cost_usd=Decimal(tokens_in * 150 + tokens_out * 600).scaleb(-9),
            latency_ms=rng.uniform(50, 4000),
            ttft_ms=rng.uniform(20, 800) if rng.random() < 0.5 else None,
            overhead_ms=0.3,
        )


def _write(engine: object, records: Iterator[LedgerRecord], total: int, label: str) -> float:
    insert = DriverInsert(engine)  # type: ignore[arg-type]
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        batch: list[list[object]] = []
        with engine.connect() as conn:  # type: ignore[attr-defined]
            for record in records:
                batch.append(insert.params_of(record))
                if len(batch) == BATCH:
                    insert_rows(conn, insert, batch)
                    progress.advance(task, len(batch))
                    batch = []
            if batch:
                insert_rows(conn, insert, batch)
                progress.advance(task, len(batch))
    return time.perf_counter() - started


@contextlib.contextmanager
def _database(postgres: bool) -> Iterator[str]:
    if postgres:
        with scratch_pg_database() as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/bench.db"


def _queries(end: datetime) -> list[tuple[str, SpendQuery]]:
    """What the analytics endpoints ask, over the last 30 days (or a month)."""
    since = end - timedelta(days=30)
    month = datetime(end.year, end.month, 1, tzinfo=UTC) - timedelta(days=1)
    month_start = datetime(month.year, month.month, 1, tzinfo=UTC)
    return [
        ("30-day overview", SpendQuery(since, end)),
        ("30 days by day", SpendQuery(since, end, granularity="day")),
        ("top 10 orgs (30 days)", SpendQuery(since, end, by=("org_id",))),
        ("one org by model and day",
         SpendQuery(since, end, by=("model",), granularity="day",
                    filters={"org_id": "org_0001"})),
        ("chargeback month by org",
         SpendQuery(month_start, month_start + timedelta(days=30), by=("org_id",))),
        ("chargeback month by project",
         SpendQuery(month_start, month_start + timedelta(days=30), by=("org_id", "project_id"))),
        ("30 days by org and day (every org-day)",
         SpendQuery(since, end, by=("org_id",), granularity="day")),
    ]  # fmt: skip


def _p95(call: Callable[[], object], runs: int = 20) -> float:
    call()  # warm caches and connections
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[int(0.95 * (len(times) - 1))]


def main(rows: int, days: int, postgres: bool) -> int:
    traffic = _Traffic(days)
    results: list[tuple[str, str, str]] = []
    with _database(postgres) as url:
        engine = create_engine_for(url)
        migrate(engine)
        seconds = _write(engine, (traffic.record() for _ in range(rows)), rows, "ledger rows")
        results.append(("write the ledger", f"{rows:,} rows", f"{seconds:.1f} s"))

        started = time.perf_counter()
        with console.status("first rollup (backfill)"):
            first = roll_up(engine, lag_ms=0)
        took = time.perf_counter() - started
        results.append(
            ("first run (backfill)", f"{first.hours:,} hours, {first.rows:,} rows",
             f"{took:.1f} s ({first.rows / took:,.0f} rows/s)")
        )  # fmt: skip
        started = time.perf_counter()
        again = roll_up(engine, lag_ms=0)
        took = time.perf_counter() - started
        results.append(("second run (nothing new)", f"{again.hours} hours", f"{took:.3f} s"))

        minute = max(rows // (days * 1440), 1)
        fresh = [traffic.record(traffic.end - timedelta(seconds=30)) for _ in range(minute)]
        late = [traffic.record(traffic.end - timedelta(hours=5)) for _ in range(minute // 10 + 1)]
        _write(engine, iter([*fresh, *late]), len(fresh) + len(late), "a minute's rows")
        started = time.perf_counter()
        step = roll_up(engine, lag_ms=0)
        results.append(
            ("incremental run", f"{len(fresh) + len(late):,} new rows in {step.hours} hours "
             f"({step.rows:,} rows reread)", f"{time.perf_counter() - started:.2f} s")
        )  # fmt: skip

        for label, query in _queries(traffic.end):
            took_ms = _p95(lambda q=query: spend(engine, q))
            results.append((label, "p95 of 20 calls (storage.analytics_read.spend)",
                            f"{took_ms:.1f} ms"))  # fmt: skip

        since = traffic.end - timedelta(days=30)
        for label, tenant in (("every org", None), ("one org", "org_0001")):
            took_ms = _p95(lambda t=tenant: latency_histogram(engine, since, traffic.end, t))
            results.append((f"30-day latency histogram, {label}",
                            "p95 of 20 calls (analytics_read.latency_histogram)",
                            f"{took_ms:.1f} ms"))  # fmt: skip

        busiest = day_of(traffic.end - timedelta(days=1))
        started = time.perf_counter()
        drift = reconcile(engine, [busiest])
        took = time.perf_counter() - started
        results.append((f"reconcile {busiest}", f"{len(drift)} differences", f"{took:.1f} s"))
        engine.dispose()
    where = "PostgreSQL" if postgres else "SQLite"
    table = Table(title=f"rollups: {rows:,} rows over {days} days, {where}")
    for column in ("step", "what", "time"):
        table.add_column(column)
    for row in results:
        table.add_row(*row)
    console.print(table)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--postgres", action="store_true", help="a scratch PostgreSQL database")
    args = parser.parse_args()
    sys.exit(main(args.rows, args.days, args.postgres))
