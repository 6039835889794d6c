"""``costwarden report``: spend by dimension equal to the ledger, as a table with a per-day
sparkline, as JSON and as CSV; bad input is one line and exit status 2."""

from __future__ import annotations

import csv
import dataclasses
import io
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from costwarden.cli.report import sparkline
from costwarden.core.records import LedgerRecord
from costwarden.storage import repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.migrate import migrate
from tests.helpers import ainvoke_cli, gateway_toml
from tests.storage.conftest import random_record

START = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture
async def config(tmp_path: Path) -> tuple[str, list[LedgerRecord]]:
    url = f"sqlite:///{tmp_path}/cw.db"
    path = tmp_path / "costwarden.toml"
    path.write_text(gateway_toml("http://127.0.0.1:9", url), encoding="utf-8")
    migrate(url)
    engine = create_engine_for(url)
    ids = [repo.ensure_org(engine, name)[0] for name in ("acme", "beta")]
    rng = random.Random(5)
    records = [
        dataclasses.replace(
            random_record(rng, START + timedelta(seconds=rng.uniform(0, 10 * 86400))),
            org_id=rng.choice(ids),
        )
        for _ in range(200)
    ]
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in records:
            writer.submit(record)
    engine.dispose()
    return str(path), records


async def test_report_equals_the_ledger(config: tuple[str, list[LedgerRecord]]) -> None:
    path, records = config
    base = ("report", "--config", path, "--since", "2026-10-01", "--until", "2026-10-11")
    answer = (await ainvoke_cli(*base, "--by", "org", "--json")).json()
    got = {row["org"]: Decimal(row["cost_usd"]) for row in answer}
    total = sum((r.cost_usd for r in records), Decimal(0))
    assert set(got) == {"acme", "beta"} and sum(got.values()) == total
    assert all(len(row["cost_per_day"]) == 10 for row in answer)
    as_csv = await ainvoke_cli(*base, "--by", "org,model", "--csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.out)))
    assert sum(Decimal(r["cost_usd"]) for r in rows) == total
    table = await ainvoke_cli(*base, "--by", "org")
    assert table.code == 0 and "acme" in table.out and any(c in table.out for c in "▁▂▃▄▅▆▇█")
    bad = await ainvoke_cli(*base, "--by", "colour")
    assert bad.code == 2 and "unknown dimension 'colour'" in bad.err


def test_sparkline() -> None:
    assert sparkline([Decimal(0), Decimal(5), Decimal(10)]) == "▁▄█"
    assert sparkline([Decimal(0), Decimal(0)]) == "▁▁"
    assert sparkline([]) == ""
