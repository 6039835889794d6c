"""storage/recent.py: the sessions and the findings among the newest ledger rows of a
window, bounded to SCAN_ROWS rows, of one org when asked (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy.engine import Engine

from costwarden.core.records import LedgerRecord
from costwarden.storage import recent
from tests.storage.conftest import Ctx, insert_records

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
FINDING = orjson.dumps([{"detector": "aws_key", "action": "blocked"}]).decode()


def test_sessions_latest_first_of_the_window_and_org(
    engine: Engine, ctx: Ctx, make_record: Callable[..., LedgerRecord]
) -> None:
    rows = [
        make_record(ts=T0 - timedelta(hours=30), org_id=ctx.acme, session_id="too-old"),
        make_record(ts=T0, org_id=ctx.acme, session_id="a1"),
        make_record(ts=T0 + timedelta(minutes=5), org_id=ctx.acme, session_id="a1"),
        make_record(ts=T0 + timedelta(minutes=1), org_id=ctx.acme, session_id="a2"),
        make_record(ts=T0 + timedelta(minutes=2), org_id=ctx.beta, session_id="b1"),
        make_record(ts=T0 + timedelta(minutes=3), org_id=ctx.acme, session_id=None),
    ]
    insert_records(engine, rows, 0)
    since = T0 - timedelta(hours=24)
    everyone = recent.recent_sessions(engine, since, None, 10)
    assert [(o, s) for o, s, _ in everyone] == [
        (ctx.acme, "a1"), (ctx.beta, "b1"), (ctx.acme, "a2"),
    ]  # fmt: skip
    assert everyone[0][2] == T0 + timedelta(minutes=5)
    assert [s for _, s, _ in recent.recent_sessions(engine, since, ctx.acme, 10)] == ["a1", "a2"]
    assert len(recent.recent_sessions(engine, since, None, 1)) == 1


def test_findings_only_rows_with_findings_newest_first(
    engine: Engine, ctx: Ctx, make_record: Callable[..., LedgerRecord]
) -> None:
    rows = [
        make_record(ts=T0, org_id=ctx.acme, security=FINDING, request_id="req_a"),
        make_record(ts=T0 + timedelta(minutes=1), org_id=ctx.acme),
        make_record(ts=T0 + timedelta(minutes=2), org_id=ctx.beta, security=FINDING,
                    request_id="req_b"),  # fmt: skip
    ]
    insert_records(engine, rows, 0)
    since = T0 - timedelta(days=1)
    found = recent.recent_findings(engine, since, None)
    assert [f["request_id"] for f in found] == ["req_b", "req_a"]
    assert set(found[0]) == {"request_id", "ts", "org_id", "key_id", "security"}
    assert [f["request_id"] for f in recent.recent_findings(engine, since, ctx.acme)] == [
        "req_a"
    ]


def test_the_scan_is_bounded_to_the_newest_rows(
    engine: Engine, ctx: Ctx, make_record: Callable[..., LedgerRecord],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(recent, "SCAN_ROWS", 3)
    old = make_record(ts=T0, org_id=ctx.acme, security=FINDING, session_id="s-old")
    newer = [make_record(ts=T0 + timedelta(minutes=i + 1), org_id=ctx.acme) for i in range(3)]
    insert_records(engine, [old, *newer], 0)
    since = T0 - timedelta(days=1)
    # the finding and the session are 4th newest: past the bound, not listed
    assert recent.recent_findings(engine, since, None) == []
    assert recent.recent_sessions(engine, since, None, 10) == []
