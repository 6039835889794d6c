#!/usr/bin/env python
"""Every analytics endpoint over HTTP, on a generated ledger of millions of rows.

    python bench/analytics.py --postgres --rows 10000000     # the issue's PostgreSQL run
    python bench/analytics.py --rows 1000000                 # SQLite
    python bench/analytics.py --database-url URL             # a ledger kept from a run before

Generates ``--rows`` ledger rows over ``--days`` days ending now (``bench/ledgergen.py``: the
database writes them, 1,000 orgs with a long tail, 20 models), or reuses the ledger at
``--database-url`` if it holds rows; runs the rollup job's first run (a backfill: timed);
starts ``costwarden serve`` on that database; then calls every analytics endpoint of the
admin API ``--runs`` times on one keep-alive connection and prints, per endpoint, p50 and p95
of the time to the response's first byte (its status line) and of the whole response; then
every dashboard page ``--runs`` times, signed in as the platform admin and as a busy org's
org_admin (an admin key made with ``costwarden admin-keys create``).

``--day-of N`` instead times the rollup of one day of N rows (the issue's "rolling up a day
of 1 M rows"): N rows within one day, then the job's run over them.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledgergen import ensure_orgs, generate  # noqa: E402
from stack import HOST, Service, clean_env, cli, free_port, wait_ready  # noqa: E402
from tests.helpers import scratch_pg_database  # noqa: E402

from costwarden.mock.config import mock_gateway_toml  # noqa: E402
from costwarden.storage.db import create_engine_for  # noqa: E402
from costwarden.storage.migrate import migrate  # noqa: E402
from costwarden.storage.rollups import roll_up, watermark  # noqa: E402

console = Console()
TOKEN = "bench-admin-token"


def _endpoints(month: str, org: str) -> list[tuple[str, str]]:
    """(label, path) of every analytics endpoint, asked what a dashboard asks."""
    a = "/admin/analytics"
    return [
        ("overview 24 h", f"{a}/overview?period=24h"),
        ("overview 7 d", f"{a}/overview?period=7d"),
        ("overview 30 d", f"{a}/overview?period=30d"),
        ("spend by day, 30 d", f"{a}/spend?since=30d&granularity=day"),
        ("spend by hour, 24 h", f"{a}/spend?since=24h&granularity=hour"),
        ("spend by model, 30 d", f"{a}/spend?since=30d&by=model"),
        ("one org by model and day, 30 d",
         f"{a}/spend?since=30d&by=model&granularity=day&org={quote(org)}"),
        ("spend by org and provider, 7 d", f"{a}/spend?since=7d&by=org,provider"),
        ("top 10 orgs, 30 d", f"{a}/top?by=org&n=10"),
        ("top 10 keys, 30 d", f"{a}/top?by=key&n=10"),
        ("top 10 models, 30 d", f"{a}/top?by=model&n=10"),
        ("top 10 users, 30 d", f"{a}/top?by=user&n=10"),
        ("trends by org, 7 d", f"{a}/trends?period=7d&by=org"),
        ("projection (every org)", f"{a}/projection"),
        ("chargeback CSV by org", f"{a}/chargeback.csv?month={month}&by=org"),
        ("chargeback CSV by project", f"{a}/chargeback.csv?month={month}&by=project"),
        ("chargeback CSV by tag", f"{a}/chargeback.csv?month={month}&by=tag"),
        ("log search: org, 7 d", f"{a}/requests?org={quote(org)}&since=7d&limit=50"),
        ("log search: org, model, cost range, 30 d",
         f"{a}/requests?org={quote(org)}&model=model-03&min_cost=0.001&since=30d&limit=50"),
    ]  # fmt: skip


def _time(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None
) -> tuple[float, float, bytes]:
    """(ms to the status line, ms to the last byte, body) of one GET (with the admin token,
    unless ``headers`` say otherwise)."""
    started = time.perf_counter()
    conn.request("GET", path, headers=headers or {"authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    first = time.perf_counter()
    body = resp.read()
    done = time.perf_counter()
    if resp.status != 200:
        raise SystemExit(f"GET {path}: {resp.status} {body[:300]!r}")
    return (first - started) * 1000, (done - started) * 1000, body


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def _database(args: argparse.Namespace) -> Iterator[str]:
    if args.database_url:
        yield args.database_url
    elif args.postgres:
        with scratch_pg_database() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"


def _fill(url: str, rows: int, days: int, end: datetime) -> list[tuple[str, str, str]]:
    """Generate (unless the ledger has rows) and roll up (unless it was): what each took."""
    out: list[tuple[str, str, str]] = []
    engine = create_engine_for(url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            have = conn.exec_driver_sql("SELECT count(*) FROM ledger").scalar_one()
        if not have:
            started = time.perf_counter()
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task("ledger rows (generated by the database)", total=rows)
                generate(engine, rows, days=days, end=end,
                         on_chunk=lambda n: progress.advance(task, n))  # fmt: skip
            took = time.perf_counter() - started
            out.append(("write the ledger", f"{rows:,} rows", f"{took:.0f} s"))
        else:
            ensure_orgs(engine, end - timedelta(days=days))
            out.append(("reuse the ledger", f"{have:,} rows", ""))
        with engine.connect() as conn:
            rolled = watermark(conn) is not None
        if not rolled:
            started = time.perf_counter()
            with console.status("the rollup's first run (backfill)"):
                run = roll_up(engine, lag_ms=0)
            took = time.perf_counter() - started
            out.append(("first rollup (backfill)", f"{run.hours:,} hours, {run.rows:,} rows",
                        f"{took:.0f} s ({run.rows / took:,.0f} rows/s)"))  # fmt: skip
            # What an operator (or autovacuum, in time) does after a bulk load: the planner's
            # statistics, without which PostgreSQL plans the new tables blind.
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
            took = time.perf_counter() - started
            out.append(("ANALYZE", "planner statistics", f"{took:.0f} s"))
    finally:
        engine.dispose()
    return out


def _serve(url: str, tmp: Path) -> tuple[Service, int]:
    port = free_port()
    config = tmp / "costwarden.toml"
    # No upstream is called: the mock's address is only there to make the config whole.
    config.write_text(mock_gateway_toml(f"http://{HOST}:9", url, port=port), "utf-8")
    env = {**clean_env(), "COSTWARDEN_ADMIN_TOKEN": TOKEN}
    service = Service("gateway", [*cli(), "serve", "--config", str(config)], tmp / "gw.log", env)
    wait_ready(service, port, "/healthz", timeout=60)
    return service, port


def _org_and_month(port: int) -> tuple[str, str]:
    """A busy org's name (the second costliest: not the one the filters skip) and the last
    complete month."""
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    _, _, body = _time(conn, "/admin/analytics/top?by=org&n=2")
    conn.close()
    top = json.loads(body)["data"]
    now = datetime.now(UTC)
    last_month = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(days=1)
    return top[-1]["org_name"] or top[-1]["org"], f"{last_month:%Y-%m}"


def measure(port: int, runs: int) -> list[tuple[str, ...]]:
    org, month = _org_and_month(port)
    rows = []
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    with Progress(console=console, transient=True) as progress:
        endpoints = _endpoints(month, org)
        task = progress.add_task("endpoints", total=len(endpoints))
        for label, path in endpoints:
            _time(conn, path)  # warm: connections, the org names' read
            first, whole = [], []
            size = 0
            for _ in range(runs):
                f, w, body = _time(conn, path)
                first.append(f)
                whole.append(w)
                size = len(body)
            rows.append((label, f"{size:,}", f"{statistics.median(first):.1f}",
                         f"{_pct(first, 0.95):.1f}", f"{_pct(whole, 0.95):.1f}"))  # fmt: skip
            progress.advance(task)
        # the cursor's second page and one request's record
        _, _, body = _time(conn, f"/admin/analytics/requests?org={quote(org)}&since=7d&limit=50")
        page = json.loads(body)
        for label, path in (
            ("log search: the next page (cursor)",
             f"/admin/analytics/requests?org={quote(org)}&since=7d&limit=50"
             f"&cursor={quote(page['next_cursor'])}"),
            ("one request by id", f"/admin/analytics/requests/{page['data'][0]['request_id']}"),
        ):  # fmt: skip
            times = [_time(conn, path)[:2] for _ in range(runs)]
            rows.append((label, "", f"{statistics.median(t[0] for t in times):.1f}",
                         f"{_pct([t[0] for t in times], 0.95):.1f}",
                         f"{_pct([t[1] for t in times], 0.95):.1f}"))  # fmt: skip
    conn.close()
    return rows


PAGES = ("/", "/costs", "/limits", "/health", "/alerts", "/sessions", "/security",
         "/settings", "/costs.csv")  # fmt: skip


def _session(port: int, credential: str) -> str:
    """The dashboard's session cookie for ``credential`` (its sign-in form posted)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.request("POST", "/dashboard/sign-in", body=urlencode({"credential": credential}),
                 headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    resp = conn.getresponse()
    resp.read()
    conn.close()
    cookie = resp.getheader("set-cookie") or ""
    if resp.status != 303 or not cookie:
        raise SystemExit(f"dashboard sign-in: {resp.status}")
    return cookie.split(";", 1)[0]


def _org_admin_key(config: Path, org: str) -> str:
    cmd = [*cli(), "admin-keys", "create", "--config", str(config), "--role", "org_admin",
           "--org", org, "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"admin-keys create: {done.stderr.strip()}")
    return str(json.loads(done.stdout)["key"])


def measure_pages(port: int, runs: int, config: Path) -> list[tuple[str, ...]]:
    """Every dashboard page, as the platform admin and as a busy org's org_admin: p50 and
    p95 of the whole page (the server renders it whole before the first byte)."""
    org, _ = _org_and_month(port)
    visitors = (("platform admin", TOKEN), (f"org admin of {org}", _org_admin_key(config, org)))
    rows = []
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    for who, credential in visitors:
        headers = {"cookie": _session(port, credential)}
        for sub in PAGES:
            path = "/dashboard" + sub
            _time(conn, path, headers)  # warm
            whole = [_time(conn, path, headers)[1] for _ in range(runs)]
            rows.append((who, path, f"{statistics.median(whole):.1f}", f"{_pct(whole, 0.95):.1f}"))
    conn.close()
    return rows


def _day_of(rows: int) -> int:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = (stack.enter_context(scratch_pg_database()) if ARGS.postgres
               else f"sqlite:///{tmp}/day.db")  # fmt: skip
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        steps = _fill(url, rows, 1, end)
    where = "PostgreSQL" if ARGS.postgres else "SQLite"
    console.print(_steps_table(f"a day of {rows:,} rows, {where}", steps))
    return 0


def _steps_table(title: str, steps: list[tuple[str, str, str]]) -> Table:
    table = Table(title=title)
    for column in ("step", "what", "time"):
        table.add_column(column)
    for step in steps:
        table.add_row(*step)
    return table


def main() -> int:
    if ARGS.day_of:
        return _day_of(ARGS.day_of)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    with _database(ARGS) as url, tempfile.TemporaryDirectory() as tmp:
        steps = _fill(url, ARGS.rows, ARGS.days, end)
        service, port = _serve(url, Path(tmp))
        try:
            rows = measure(port, ARGS.runs)
            pages = measure_pages(port, ARGS.runs, Path(tmp) / "costwarden.toml")
        finally:
            service.terminate(30)
    where = "PostgreSQL" if "postgresql" in url else "SQLite"
    title = f"analytics over HTTP: {where}, p50/p95 of {ARGS.runs} calls (ms)"
    console.print(_steps_table(title, steps))
    timings = Table(title="endpoints (ms)")
    for column in ("endpoint", "bytes", "first byte p50", "first byte p95", "whole p95"):
        timings.add_column(column, justify="left" if column == "endpoint" else "right")
    for row in rows:
        timings.add_row(*row)
    console.print(timings)
    shown = Table(title="dashboard pages, whole page (ms)")
    for column in ("visitor", "page", "p50", "p95"):
        shown.add_column(column, justify="right" if column in ("p50", "p95") else "left")
    for row in pages:
        shown.add_row(*row)
    console.print(shown)
    if ARGS.json:
        print(json.dumps({"steps": steps, "endpoints": rows, "pages": pages}))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--postgres", action="store_true", help="a scratch PostgreSQL database")
    parser.add_argument("--database-url", help="a database to use (and keep) instead")
    parser.add_argument("--runs", type=int, default=20, help="calls per endpoint")
    parser.add_argument("--day-of", type=int, default=0, help="time the rollup of a day of N rows")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    ARGS = parser.parse_args()
    sys.exit(main())
