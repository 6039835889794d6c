"""Usage reports equal the exact sums of what was recorded, on both backends."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from costwarden.core.errors import NotFound
from costwarden.core.records import LedgerRecord
from costwarden.storage import repo
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.ledger_rows import record_to_row
from costwarden.storage.schema import ledger
from costwarden.storage.usage import UsageReport, ledger_rows, usage_report

MakeRecord = Callable[..., LedgerRecord]
DAY0 = datetime(2024, 11, 20, tzinfo=UTC)


def _seed(engine: Engine, make_record: MakeRecord) -> list[LedgerRecord]:
    acme, _ = repo.ensure_org(engine, "acme")
    beta, _ = repo.ensure_org(engine, "beta")
    rng = random.Random(7)
    records: list[LedgerRecord] = []
    for _ in range(600):
        served = rng.choice(["gpt-4o-mini", "claude-3-5-haiku", None])
        records.append(
            make_record(
                ts=DAY0 + timedelta(days=rng.randint(0, 2), seconds=rng.randint(0, 86399)),
                org_id=rng.choice([acme, beta, None, "org_unknown00000"]),
                requested_model="alias-cheap" if served is None else served,
                served_model=served,
                input_tokens=rng.randint(0, 5000),
                output_tokens=rng.randint(0, 900),
                cost_usd=Decimal(rng.randint(0, 10**9)).scaleb(-12) + Decimal("0.0000375"),
            )
        )
    with engine.begin() as conn:
        conn.execute(ledger.insert(), [record_to_row(r) for r in records])
    return records


Names = dict[str | None, str | None]
Expected = dict[tuple[str | None, str | None, str], tuple[int, int, int, Decimal]]


def _expected(records: list[LedgerRecord], names: Names) -> Expected:
    groups: dict[tuple[str | None, str | None, str], list[LedgerRecord]] = defaultdict(list)
    for r in records:
        model = r.served_model or r.requested_model
        org = names.get(r.org_id, r.org_id)
        groups[(org, model, r.ts.strftime("%Y-%m-%d"))].append(r)
    return {
        key: (
            len(rs),
            sum(r.input_tokens for r in rs),
            sum(r.output_tokens for r in rs),
            sum((r.cost_usd for r in rs), Decimal(0)),
        )
        for key, rs in groups.items()
    }


def _check(report: UsageReport, records: list[LedgerRecord], names: Names) -> None:
    assert report.requests == len(records)
    assert report.cost_usd == sum((r.cost_usd for r in records), Decimal(0))
    assert report.input_tokens == sum(r.input_tokens for r in records)
    assert report.output_tokens == sum(r.output_tokens for r in records)
    got = {
        (row.org, row.model, row.day): (
            row.requests,
            row.input_tokens,
            row.output_tokens,
            row.cost_usd,
        )
        for row in report.rows
    }
    assert got == _expected(records, names)
    keys = [(row.day, row.org or "", row.model or "") for row in report.rows]
    assert keys == sorted(keys)
    assert all(isinstance(row.cost_usd, Decimal) for row in report.rows)


def test_usage_report_totals(engine: Engine, make_record: MakeRecord) -> None:
    records = _seed(engine, make_record)
    names: Names = {o.id: o.name for o in repo.list_orgs(engine)}
    names[None] = None
    _check(usage_report(engine), records, names)

    ids = {v: k for k, v in names.items()}
    _check(usage_report(engine, org="acme"), [r for r in records if r.org_id == ids["acme"]], names)
    since = DAY0 + timedelta(days=1, hours=6)
    _check(usage_report(engine, since=since), [r for r in records if r.ts >= since], names)
    _check(
        usage_report(engine, org="beta", since=since),
        [r for r in records if r.ts >= since and r.org_id == ids["beta"]],
        names,
    )
    with pytest.raises(NotFound):
        usage_report(engine, org="ghost")


def test_empty_report(engine: Engine) -> None:
    report = usage_report(engine)
    assert report == UsageReport(0, Decimal(0), 0, 0, [])
    assert report.to_json_dict() == {
        "requests": 0,
        "cost_usd": "0",
        "input_tokens": 0,
        "output_tokens": 0,
        "rows": [],
    }


async def test_report_after_writer_and_json(engine: Engine, make_record: MakeRecord) -> None:
    org_id, _ = repo.ensure_org(engine, "acme")
    records = [
        make_record(org_id=org_id, ts=DAY0, cost_usd=Decimal("0.000000037500")) for _ in range(3)
    ]
    async with LedgerWriter(engine) as writer:
        for r in records:
            writer.submit(r)
    data = usage_report(engine).to_json_dict()
    assert data["cost_usd"] == "0.0000001125"
    assert data["requests"] == 3
    assert data["rows"] == [
        {
            "org": "acme",
            "model": "gpt-4o-mini-2024-07-18",
            "day": "2024-11-20",
            "requests": 3,
            "input_tokens": sum(r.input_tokens for r in records),
            "output_tokens": sum(r.output_tokens for r in records),
            "cost_usd": "0.0000001125",
        }
    ]


def test_ledger_rows(engine: Engine, make_record: MakeRecord) -> None:
    records = [
        make_record(ts=DAY0 + timedelta(seconds=i), cost_usd=Decimal(i).scaleb(-12))
        for i in range(1200)
    ]
    with engine.begin() as conn:
        conn.execute(ledger.insert(), [record_to_row(r) for r in records])
    newest = ledger_rows(engine, limit=5)
    assert [r.request_id for r in newest] == [r.request_id for r in records[::-1][:5]]
    wanted = [r.request_id for r in records[::2]] + ["missing"]
    got = ledger_rows(engine, wanted)  # more ids than one IN() chunk; limit does not apply
    assert len(got) == 600
    by_id = {r.request_id: r for r in records}
    for row in got:  # cost row by row, exactly
        assert row.cost_usd == by_id[row.request_id].cost_usd
        assert row == by_id[row.request_id]
    assert ledger_rows(engine, []) == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(ledger)).scalar() == 1200
