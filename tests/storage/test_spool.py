"""The ledger's spool: rows kept on local disk while the database is out of reach, replayed
exactly once, by this process or by whoever outlives it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from costwarden.core.records import LedgerRecord
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.ledger_rows import DriverInsert
from costwarden.storage.schema import ledger
from costwarden.storage.spool import SUFFIX, LedgerSpool, decode_row, encode_row
from costwarden.storage.usage import ledger_rows
from tests.helpers import TcpProxy

MakeRecord = Callable[..., LedgerRecord]
MakeEngine = Callable[[str], Engine]


def _request_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(ledger.c.request_id)).scalars())


def _odd_records(make_record: MakeRecord) -> list[LedgerRecord]:
    """Rows that take params_of's checked path as well as its fast one."""
    return [
        make_record(),
        make_record(
            tags={"team": "søk", "env": "prod"},
            error="upstream said \x00 ünïcode",
            ttft_ms=None,
            cost_usd=Decimal("123.456789012345"),
            saved_usd=Decimal("0.5"),
            streamed=True,
            cost_estimated=True,
            session_id="s-1",
            route_reason="cheapest: openai:gpt-4o-mini",
            slice_holder="S:4242-0123456789ab",
        ),
        make_record(ts=datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), org_id=None),
    ]


def test_every_row_comes_back_as_the_driver_takes_it(
    engine: Engine, make_record: MakeRecord
) -> None:
    insert = DriverInsert(engine)
    for record in _odd_records(make_record):
        params = insert.params_of(record)
        line = encode_row(params)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        back = decode_row(line)
        assert back == params
        assert [type(v) for v in back] == [type(v) for v in params]


def test_a_row_spooled_before_slice_holder_replays_with_it_null(
    engine: Engine, make_record: MakeRecord
) -> None:
    """A spool file written by the version before migration 0019 (one parameter fewer)."""
    params = DriverInsert(engine).params_of(make_record(slice_holder="S:1-x"))
    back = decode_row(encode_row(params[:-1]))
    assert back == [*params[:-1], None]
    with pytest.raises(ValueError):
        decode_row(encode_row([*params, "one too many"]))


async def test_rows_spooled_then_replayed_are_the_rows_written(
    engine: Engine, make_record: MakeRecord, tmp_path: Path
) -> None:
    insert = DriverInsert(engine)
    records = [*_odd_records(make_record), *(make_record() for _ in range(7))]
    spool = LedgerSpool(tmp_path / "spool", rows_per_commit=3)
    spool.append([insert.params_of(r) for r in records[:4]])
    spool.append([insert.params_of(r) for r in records[4:]])
    assert spool.depth == 10 and len(spool.pending_files()) == 1
    # A writer replays it at start, before anything else reads the ledger.
    writer = LedgerWriter(engine, spool=spool)
    await writer.start()
    assert writer.written == 10 and writer.spooled == 0
    await writer.close()
    stored = {r.request_id: r for r in ledger_rows(engine, None, limit=100)}
    assert set(stored) == {r.request_id for r in records}
    odd = stored[records[1].request_id]
    assert odd.cost_usd == Decimal("123.456789012345")
    assert odd.tags == {"team": "søk", "env": "prod"}
    assert odd.ts == records[1].ts and odd.streamed and odd.saved_usd == Decimal("0.5")
    assert spool.pending_files() == [] and list((tmp_path / "spool").iterdir()) == []


def test_a_replay_cut_short_and_run_again_writes_each_row_once(
    engine: Engine, make_record: MakeRecord, tmp_path: Path
) -> None:
    insert = DriverInsert(engine)
    records = [make_record() for _ in range(9)]
    spool = LedgerSpool(tmp_path, rows_per_commit=4)
    spool.append([insert.params_of(r) for r in records])
    calls = 0

    def failing_after_one_commit(rows: list[list[Any]]) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("the database went away mid-replay")
        return _commit(engine, insert, rows)

    with pytest.raises(ConnectionError):
        spool.replay(failing_after_one_commit)
    assert len(_request_ids(engine)) == 4 and spool.depth == 9  # the file stays whole
    assert spool.replay(lambda rows: _commit(engine, insert, rows)) == 9
    assert sorted(_request_ids(engine)) == sorted(r.request_id for r in records)
    assert spool.depth == 0 and spool.pending_files() == []


def _commit(engine: Engine, insert: DriverInsert, rows: list[list[Any]]) -> int:
    with engine.begin() as conn:
        cursor = conn.connection.cursor()
        try:
            return insert.execute(cursor, rows)
        finally:
            cursor.close()


def test_a_torn_last_line_is_dropped_and_a_bad_one_kept_for_an_operator(
    engine: Engine, make_record: MakeRecord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    insert = DriverInsert(engine)
    good = [make_record() for _ in range(3)]
    name = tmp_path / f"ledger-elsewhere-1-0000{SUFFIX}"
    lines = [encode_row(insert.params_of(r)) for r in good]
    torn = encode_row(insert.params_of(make_record()))[:-9]  # died inside the write
    name.write_bytes(lines[0] + b"{not json}\n" + lines[1] + lines[2] + torn)
    spool = LedgerSpool(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert spool.replay(lambda rows: _commit(engine, insert, rows)) == 3
    assert sorted(_request_ids(engine)) == sorted(r.request_id for r in good)
    rejected = tmp_path / f"{name.name}.rejected"
    assert rejected.read_bytes() == b"{not json}\n"
    assert not name.exists()
    assert any("cut short" in r.getMessage() for r in caplog.records)


_DIES_HOLDING_ITS_SPOOL = textwrap.dedent(
    """
    import os, sys, time
    from costwarden.storage.spool import LedgerSpool, decode_row
    spool = LedgerSpool(sys.argv[1])
    rows = [decode_row(line) for line in sys.stdin.buffer.read().splitlines()]
    spool.append(rows)
    print("spooled", flush=True)
    time.sleep(60)
    """
)


def test_a_live_process_keeps_its_file_and_a_dead_ones_file_is_adopted(
    engine: Engine, make_record: MakeRecord, tmp_path: Path
) -> None:
    insert = DriverInsert(engine)
    records = [make_record() for _ in range(5)]
    payload = b"".join(encode_row(insert.params_of(r)) for r in records)
    other = subprocess.Popen(
        [sys.executable, "-c", _DIES_HOLDING_ITS_SPOOL, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert other.stdin is not None and other.stdout is not None
        other.stdin.write(payload)
        other.stdin.close()
        assert other.stdout.readline() == b"spooled\n"
        spool = LedgerSpool(tmp_path)
        commit = lambda rows: _commit(engine, insert, rows)  # noqa: E731
        assert spool.replay(commit) == 0  # its owner lives: not ours to replay
        assert _request_ids(engine) == [] and len(spool.pending_files()) == 1
        os.kill(other.pid, signal.SIGKILL)
        other.wait(10)
        assert spool.replay(commit) == 5
        assert sorted(_request_ids(engine)) == sorted(r.request_id for r in records)
        assert spool.pending_files() == []
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
        if other.stdout is not None:
            other.stdout.close()


@pytest.mark.parametrize("backend", ["postgresql"])
@pytest.mark.parametrize("mode", ["batched", "durable"])
async def test_the_writer_spools_while_postgres_is_away_and_replays_once(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord, tmp_path: Path, mode: str
) -> None:
    """Durable submitters are answered from the spool while the database is away; when it
    is back every row is in the ledger once and the spool is gone."""
    url = make_url(db_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.up()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    engine, observer = make_engine(proxied), make_engine(db_url)
    spool = LedgerSpool(tmp_path / "spool")
    writer = LedgerWriter(
        engine, flush_interval=0.02, max_backoff=0.2, durable=mode == "durable", spool=spool
    )
    await writer.start()
    try:
        before = [make_record() for _ in range(10)]
        for r in before:
            writer.submit(r)
        await writer.flush()
        await proxy.down()
        during = [make_record() for _ in range(40)]
        if mode == "durable":
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(
                asyncio.gather(*(writer.submit_durable(r) for r in during)), 15
            )
            answered_in = asyncio.get_running_loop().time() - started
            assert answered_in < 12  # a connect attempt or two, never the whole outage
        else:
            for r in during:
                writer.submit(r)
        await _until(lambda: writer.spooled == 40 and writer.pending == 0)
        assert writer.spooling and len(spool.pending_files()) == 1
        await asyncio.sleep(0.5)  # probes fail meanwhile; nothing is written twice
        assert writer.spooled == 40
        await proxy.up()
        await asyncio.wait_for(writer.flush(), 20)
        assert writer.spooled == 0 and not writer.spooling
        after = [make_record() for _ in range(5)]
        for r in after:
            writer.submit(r)
        await writer.close()
    finally:
        await proxy.down()
    ids = _request_ids(observer)
    assert len(ids) == len(set(ids)) == 55
    assert set(ids) == {r.request_id for r in before + during + after}
    assert spool.pending_files() == []


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_stop_with_the_database_away_leaves_the_spool_to_the_next_start(
    db_url: str, make_engine: MakeEngine, make_record: MakeRecord, tmp_path: Path
) -> None:
    url = make_url(db_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.up()
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
    engine, observer = make_engine(proxied), make_engine(db_url)
    writer = LedgerWriter(engine, flush_interval=0.02, max_backoff=0.2, spool=LedgerSpool(tmp_path))
    await writer.start()
    await proxy.down()
    records = [make_record() for _ in range(20)]
    for r in records:
        writer.submit(r)
    await asyncio.wait_for(writer.close(), 15)  # does not wait for the database
    assert _request_ids(observer) == [] and len(LedgerSpool(tmp_path).pending_files()) == 1
    await proxy.up()
    try:
        restarted = LedgerWriter(engine, spool=LedgerSpool(tmp_path))
        await restarted.start()
        assert restarted.written == 20
        await restarted.close()
    finally:
        await proxy.down()
    assert sorted(_request_ids(observer)) == sorted(r.request_id for r in records)
    assert LedgerSpool(tmp_path).pending_files() == []


async def _until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "not reached in time"
        await asyncio.sleep(0.01)
