"""LedgerWriter: batching, flushing, durable group commit, draining, and surviving outages."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from costwarden.core.errors import InvalidInput, StorageError
from costwarden.core.records import LedgerRecord
from costwarden.storage import request_log
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.schema import ledger
from costwarden.storage.usage import ledger_rows
from tests.helpers import TcpProxy

MakeRecord = Callable[..., LedgerRecord]
MakeEngine = Callable[[str], Engine]


def count_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(ledger)).scalar_one())


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_concurrent_submits_drain_on_close(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine, observer = make_engine(db_url), make_engine(db_url)
    writer = LedgerWriter(engine, flush_interval=0.05, max_batch=1000)
    await writer.start()
    records = [make_record() for _ in range(5000)]

    async def client(chunk: list[LedgerRecord]) -> None:
        for record in chunk:
            writer.submit(record)
            await asyncio.sleep(0)

    await asyncio.gather(*(client(records[i::50]) for i in range(50)))
    await writer.close()
    assert writer.closed and writer.pending == 0 and writer.written == 5000
    assert count_rows(observer) == 5000
    with observer.connect() as conn:
        costs = dict(conn.execute(sa.select(ledger.c.request_id, ledger.c.cost_usd)).all())
    assert {r.request_id: r.cost_usd for r in records} == costs
    with pytest.raises(StorageError):
        writer.submit(make_record())
    await writer.close()  # idempotent


async def test_close_drains_without_start(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine = make_engine(db_url)
    writer = LedgerWriter(engine)
    for _ in range(10):
        writer.submit(make_record())
    with pytest.raises(StorageError):
        await writer.flush()  # not started: refuse instead of hanging
    await writer.close()
    assert count_rows(engine) == 10


async def test_flush_writes_now_and_interval_writes_later(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine, observer = make_engine(db_url), make_engine(db_url)
    async with LedgerWriter(engine, flush_interval=60) as writer:
        writer.submit(make_record())
        writer.submit(make_record())
        await asyncio.sleep(0.1)
        assert count_rows(observer) == 0 and writer.pending == 2  # waits for the interval
        await writer.flush()
        assert count_rows(observer) == 2 and writer.pending == 0 and writer.written == 2
        await writer.flush()  # nothing buffered: returns at once

    async with LedgerWriter(engine, flush_interval=0.05) as writer:
        writer.submit(make_record())
        await wait_until(lambda: count_rows(observer) == 3)


async def test_full_batch_wakes_the_flusher(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine = make_engine(db_url)
    async with LedgerWriter(engine, flush_interval=60, max_batch=10) as writer:
        for _ in range(9):
            writer.submit(make_record())
        await asyncio.sleep(0.1)
        assert writer.written == 0
        writer.submit(make_record())
        await wait_until(lambda: writer.written == 10)
        assert count_rows(engine) == 10


async def test_flush_lag_is_the_age_of_the_oldest_uncommitted_record(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine = make_engine(db_url)
    async with LedgerWriter(engine, flush_interval=60, max_batch=3) as writer:
        assert writer.flush_lag() == 0.0
        t0 = time.monotonic()
        writer.submit(make_record())
        writer.submit(make_record())
        await asyncio.sleep(0.05)
        t1 = time.monotonic()
        writer.submit(make_record())  # a full batch: written at once, with the two before
        writer.submit(make_record())
        writer.submit(make_record())
        t2 = time.monotonic()
        lag = writer.flush_lag(t1 + 1.0)
        assert t1 + 1.0 - lag >= t0 and lag >= 1.0 + 0.05  # the first record's age
        await wait_until(lambda: writer.written == 3)
        # What is left arrived between t1 and t2: its age, not the first record's.
        assert writer.pending == 2
        assert 1.0 - (t2 - t1) <= writer.flush_lag(t1 + 1.0) <= 1.0
        await writer.flush()
        assert writer.pending == 0 and writer.flush_lag() == 0.0


async def test_submit_durable_commits_before_returning(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine, observer = make_engine(db_url), make_engine(db_url)
    async with LedgerWriter(engine, flush_interval=60) as writer:
        record = make_record()
        await writer.submit_durable(record)
        assert [r.request_id for r in ledger_rows(observer, [record.request_id])] == [
            record.request_id
        ]


async def test_durable_submits_share_transactions(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine, observer = make_engine(db_url), make_engine(db_url)
    commits = 0

    def on_commit(conn: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(engine, "commit", on_commit)
    async with LedgerWriter(engine, flush_interval=60, durable=True) as writer:
        records = [make_record() for _ in range(300)]
        await asyncio.gather(*(writer.submit_durable(r) for r in records))
        assert count_rows(observer) == 300  # every caller returned only after its commit
    assert 1 <= commits < 30, commits  # group commit, not one transaction per record
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:  # durable mode leaves pooled connections as it found them
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1


async def test_invalid_records_are_refused_up_front(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine = make_engine(db_url)
    bad: list[dict[str, object]] = [
        {"ts": datetime(2024, 1, 1)},  # naive
        {"cost_usd": 0.01},  # float money
        {"cost_usd": Decimal("NaN")},
        {"cost_usd": Decimal("-0.000000000001")},  # a cost is never negative
        {"status": "weird"},
        {"input_tokens": -1},
        {"output_tokens": 2**63},
        {"latency_ms": float("nan")},
        {"request_id": ""},
        {"tags": {"k": object()}},
        {"saved_usd": 0.5},  # float money
        {"saved_usd": Decimal("-0.01")},  # a saving is never negative
        {"route_reason": 7},
    ]
    async with LedgerWriter(engine) as writer:
        for overrides in bad:
            with pytest.raises(InvalidInput):
                writer.submit(make_record(**overrides))
        assert writer.pending == 0
        writer.submit(make_record())
        await writer.flush()
    assert count_rows(engine) == 1


async def test_rows_round_trip(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine = make_engine(db_url)
    late_evening_new_york = datetime(2024, 11, 21, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    full = make_record(
        ts=late_evening_new_york,
        org_id="org_aaaaaaaaaaaa",
        project_id="proj_bbbbbbbbbbbb",
        key_id="key_cccccccccccc",
        end_user="user-1",
        session_id="sess-1",
        tags={"team": "search", "env": "prod", "ünï": "cödé"},
        streamed=True,
        cached_input_tokens=50,
        cache_write_tokens=5,
        reasoning_tokens=7,
        cost_usd=Decimal("0.000123456789"),
        cost_estimated=True,
        ttft_ms=80.5,
        status="upstream_error",
        http_status=502,
        error="upstream said \x00 no",
    )
    minimal = make_record(served_model=None, ttft_ms=None, tags={})
    async with LedgerWriter(engine) as writer:
        writer.submit(full)
        writer.submit(minimal)
    got = {r.request_id: r for r in ledger_rows(engine, [full.request_id, minimal.request_id])}
    a = got[full.request_id]
    assert a.ts == late_evening_new_york and a.ts.utcoffset() == timedelta(0)
    assert a.error == "upstream said \ufffd no"  # NUL cannot be stored in PostgreSQL text
    for field in LedgerRecord.__dataclass_fields__:
        if field != "error":
            assert getattr(a, field) == getattr(full, field), field
    b = got[minimal.request_id]
    assert b == minimal
    with engine.connect() as conn:
        day, tags = conn.execute(
            sa.select(ledger.c.day, ledger.c.tags).where(ledger.c.request_id == full.request_id)
        ).one()
    assert day == "2024-11-22"  # derived from ts in UTC
    assert tags == '{"env":"prod","team":"search","ünï":"cödé"}'


async def test_duplicate_request_ids_do_not_wedge_the_writer(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine = make_engine(db_url)
    first = make_record(cost_usd=Decimal("1"))
    async with LedgerWriter(engine) as writer:
        await writer.submit_durable(first)
        writer.submit(make_record(request_id=first.request_id, cost_usd=Decimal("2")))
        writer.submit(make_record())
        await writer.flush()
        assert writer.failures == 0
    assert count_rows(engine) == 2
    assert ledger_rows(engine, [first.request_id])[0].cost_usd == Decimal("1")


async def test_survives_a_missing_table_and_loses_nothing(
    db_url: str,
    make_engine: MakeEngine,
    make_record: MakeRecord,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real failure: the ledger table disappears, writes fail, then it comes back."""
    engine, admin = make_engine(db_url), make_engine(db_url)
    writer = LedgerWriter(engine, flush_interval=0.02, max_batch=50, max_backoff=0.2)
    await writer.start()
    before = [make_record() for _ in range(20)]
    for r in before:
        writer.submit(r)
    await writer.flush()
    with admin.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE ledger RENAME TO ledger_away")
    during = [make_record() for _ in range(120)]
    for r in during:
        writer.submit(r)
    durable_waiter = asyncio.create_task(writer.submit_durable(make_record()))
    await wait_until(lambda: writer.failures >= 3)
    assert writer.pending == 121 and writer.written == 20 and writer.last_error
    assert not durable_waiter.done()
    with admin.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE ledger_away RENAME TO ledger")
    await asyncio.wait_for(durable_waiter, 10)
    await writer.close()
    assert writer.pending == 0 and writer.written == 141 and writer.last_error is None
    assert count_rows(admin) == 141
    wanted = {r.request_id: r.cost_usd for r in before + during}
    got = {r.request_id: r.cost_usd for r in ledger_rows(admin, list(wanted))}
    assert got == wanted
    errors = [r for r in caplog.records if r.name == "costwarden.storage.ledger"]
    assert any(r.levelno == logging.ERROR and "failed" in r.getMessage() for r in errors)
    assert any("recovered" in r.getMessage() for r in errors)


async def test_close_with_timeout_reports_unwritten_records(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    engine, admin = make_engine(db_url), make_engine(db_url)
    writer = LedgerWriter(engine, flush_interval=0.02, max_backoff=0.1)
    await writer.start()
    with admin.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE ledger RENAME TO ledger_away")
    try:
        writer.submit(make_record())
        writer.submit(make_record())
        with pytest.raises(StorageError, match="2 records not written"):
            await writer.close(timeout=0.3)
        assert writer.closed
        with pytest.raises(StorageError):
            writer.submit(make_record())
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE ledger_away RENAME TO ledger")


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_survives_postgres_going_away(
    db_url: str,
    make_engine: MakeEngine,
    make_record: MakeRecord,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The connection to PostgreSQL drops and new ones are refused; then it comes back."""
    url = make_url(db_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.up()
    proxied = url.set(host="127.0.0.1", port=proxy.port, password="hunter2")
    engine, observer = make_engine(proxied.render_as_string(False)), make_engine(db_url)
    writer = LedgerWriter(engine, flush_interval=0.02, max_backoff=0.2)
    await writer.start()
    try:
        first = [make_record() for _ in range(10)]
        for r in first:
            writer.submit(r)
        await writer.flush()
        await proxy.down()
        second = [make_record() for _ in range(25)]
        for r in second:
            writer.submit(r)
        await wait_until(lambda: writer.failures >= 2)
        assert writer.pending == 25
        await proxy.up()
        await asyncio.wait_for(writer.flush(), 20)
        await writer.close()
    finally:
        await proxy.down()
    got = {r.request_id: r.cost_usd for r in ledger_rows(observer, None, limit=1000)}
    assert got == {r.request_id: r.cost_usd for r in first + second}
    assert all("hunter2" not in r.getMessage() for r in caplog.records)


async def test_writer_stores_what_sqlalchemy_stores(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    """The writer binds straight through the driver; the stored values must not differ."""
    engine = make_engine(db_url)
    variants = [
        make_record(),
        make_record(
            ts=datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))),
            cost_usd=Decimal("123.456789012345"),
            tags={"team": "ml", "env": "prod"},
            streamed=True,
            cost_estimated=True,
            ttft_ms=3.25,
            error="upstream said \x00 no",
            end_user="u-1",
            session_id="s-1",
            security='[{"detector":"pii","family":"email"}]',
            route_reason="cheapest: openai:gpt-4o-mini, at most $0.0012 for this request",
        ),
        make_record(
            status="cached", cost_usd=Decimal(0), saved_usd=Decimal("2.000000000001"),
            route_reason="caf\u00e9 " * 120,  # not ASCII, and cut to 500 characters
        ),  # fmt: skip
        make_record(ts=datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC), cost_usd=0),
        make_record(ts=datetime(987, 6, 5, 4, 3, 2, tzinfo=UTC)),  # padded, zero microseconds
    ]
    via_sqlalchemy = [dataclasses.replace(r, request_id="a" + r.request_id) for r in variants]
    via_writer = [dataclasses.replace(r, request_id="b" + r.request_id) for r in variants]
    with engine.begin() as conn:
        conn.execute(ledger.insert(), [record_to_row(r) for r in via_sqlalchemy])
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in via_writer:
            writer.submit(record)
    with engine.connect() as conn:
        # written_ms last (a column a migration adds later comes after it in the table)
        names = [c.name for c in ledger.columns if c.name != "written_ms"] + ["written_ms"]
        raw = conn.exec_driver_sql(
            f"SELECT {', '.join(names)} FROM ledger ORDER BY request_id"
        ).all()
    assert len(raw) == 10
    for a, b in zip(raw[:5], raw[5:], strict=True):
        assert a[0] == "a" + b[0][1:]
        assert a[1:-1] == b[1:-1]
        # written_ms (last) is the database's clock at the INSERT: the writer's rows have it.
        assert a[-1] is None and abs(b[-1] - time.time() * 1000) < 60_000


async def test_route_reason_and_saved_usd_round_trip_through_the_admin_reads(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord
) -> None:
    """What the request log (storage.request_log, the admin API's) and ledger_rows read back
    is what was written: the route's reason (cut to 500 characters) and the response
    cache's saving, a Decimal to the 12th place."""
    engine = make_engine(db_url)
    reason = "cheapest: openai:gpt-4o-mini, at most $0.0012 (skipped openai:gpt-4o: breaker open)"
    hit = make_record(
        org_id="org_a", status="cached", cost_usd=Decimal(0), input_tokens=0, output_tokens=0,
        saved_usd=Decimal("0.000000000001"), route_reason=reason,
    )  # fmt: skip
    long = make_record(org_id="org_a", route_reason="x" * 501 + "tail")
    plain = make_record(org_id="org_b")  # neither: NULL and 0
    async with LedgerWriter(engine) as writer:
        for record in (hit, long, plain):
            writer.submit(record)
    found = request_log.find(engine, hit.request_id, tenant="org_a")
    assert found is not None and found == hit
    assert (found.route_reason, found.saved_usd) == (reason, Decimal("1E-12"))
    assert type(found.saved_usd) is Decimal and found.status == "cached"
    assert request_log.find(engine, hit.request_id, tenant="org_b") is None
    q = request_log.LogQuery(
        hit.ts - timedelta(hours=1), hit.ts + timedelta(hours=1), {"status": "cached"}
    )
    assert request_log.search(engine, q, limit=10) == [hit]
    got = {r.request_id: r for r in ledger_rows(engine, [long.request_id, plain.request_id])}
    assert got[long.request_id].route_reason == "x" * 500
    assert (got[plain.request_id].route_reason, got[plain.request_id].saved_usd) == (None, 0)
    assert type(got[plain.request_id].saved_usd) is Decimal
