"""Agent sessions in the database (SQLite and PostgreSQL): transitions by compare-and-set,
usage equal to the session's ledger rows, escalations resolved once and only in their org."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.engine import Engine

from costwarden.core.errors import Conflict, InvalidInput, NotFound
from costwarden.core.records import LedgerRecord
from costwarden.sessions.lifecycle import Standing, on_budget_gone, on_runaway, on_spend
from costwarden.storage.ledger import LedgerWriter
from costwarden.storage.sessions import (
    due_to_wake,
    escalation_of,
    list_escalations,
    open_escalation,
    record_transition,
    resolve_escalation,
    session_of,
    sessions_not_active,
    transitions_of,
    usage,
)

NOW = 1_800_000_000.0


def test_transitions_are_compare_and_set_and_each_is_kept(engine: Engine) -> None:
    winding = on_spend(Standing(), Decimal(91), NOW, Decimal(90))
    assert winding is not None
    first = record_transition(engine, "org_a", "run-1", winding, version=None, actor="gateway")
    assert first is not None and first.version == 1
    # A second process that also saw no row loses, and so does one a version behind.
    assert record_transition(engine, "org_a", "run-1", winding, version=None, actor="b") is None
    asleep = on_budget_gone(first.standing, NOW + 3600, NOW + 5)
    assert asleep is not None
    second = record_transition(engine, "org_a", "run-1", asleep, version=1, actor="gateway")
    assert second is not None and second.version == 2
    assert record_transition(engine, "org_a", "run-1", asleep, version=1, actor="b") is None

    stored = session_of(engine, "org_a", "run-1")
    assert stored is not None and stored.version == 2
    assert stored.standing == Standing("sleeping", None, NOW + 3600, None)
    assert session_of(engine, "org_b", "run-1") is None  # the same id in another org
    kept = transitions_of(engine, "org_a", "run-1")
    assert [(t["before"], t["after"], t["cause"]) for t in kept] == [
        ("active", "winding_down", "near_budget"), ("winding_down", "sleeping", "window_spent"),
    ]  # fmt: skip
    assert [r.session_id for r in sessions_not_active(engine)] == ["run-1"]
    assert due_to_wake(engine, NOW + 3599) == []
    assert [r.session_id for r in due_to_wake(engine, NOW + 3600)] == ["run-1"]


async def test_usage_is_the_sessions_ledger_rows(
    engine: Engine, make_record: Callable[..., LedgerRecord]
) -> None:
    ts = datetime(2026, 11, 30, 10, tzinfo=UTC)
    mine = [
        make_record(org_id="org_a", session_id="run-1", ts=ts.replace(minute=m),
                    input_tokens=100 + m, output_tokens=10, cost_usd=Decimal("0.000123456789"))
        for m in range(5)
    ]  # fmt: skip
    others = [
        make_record(org_id="org_b", session_id="run-1", ts=ts, cost_usd=Decimal(5)),
        make_record(org_id="org_a", session_id="run-2", ts=ts, cost_usd=Decimal(5)),
        make_record(org_id="org_a", session_id=None, ts=ts, cost_usd=Decimal(5)),
    ]
    async with LedgerWriter(engine, flush_interval=0.01) as writer:
        for record in [*mine, *others]:
            writer.submit(record)
    used = await asyncio.to_thread(usage, engine, "org_a", "run-1")
    assert used is not None
    assert (used.requests, used.input_tokens, used.output_tokens) == (5, 510, 50)
    assert used.spend_usd == Decimal("0.000617283945")
    assert (used.started, used.last_seen) == (ts, ts.replace(minute=4))
    assert await asyncio.to_thread(usage, engine, "org_a", "run-9") is None


def test_an_escalation_is_resolved_once_and_only_in_its_org(engine: Engine) -> None:
    evidence = {"fingerprint": "ab12", "count": 3, "within_s": 600.0}
    opened = open_escalation(engine, "org_a", "run-1", "repeat", evidence, NOW)
    other = open_escalation(engine, "org_b", "run-7", "velocity", {"tokens": 9}, NOW + 1)
    assert escalation_of(engine, opened.id).evidence == evidence
    assert [e.id for e in list_escalations(engine)] == [other.id, opened.id]
    assert [e.id for e in list_escalations(engine, tenant="org_a", status="open")] == [opened.id]
    paused = on_runaway(Standing(), opened.id, NOW)
    assert paused is not None and paused.after.escalation == opened.id

    refusals: list[tuple[dict[str, object], type[Exception]]] = [
        ({"extra_budget_usd": Decimal("-1")}, InvalidInput),
        ({"extra_budget_usd": Decimal("NaN")}, InvalidInput),
        ({"approved": False, "extra_budget_usd": Decimal(1)}, InvalidInput),
        ({"tenant": "org_b"}, NotFound),  # another org's caller
    ]
    for fields, error in refusals:
        call = {"approved": True, "by": "ops", "note": None, "extra_budget_usd": None,
                "now": NOW + 5, **fields}  # fmt: skip
        with pytest.raises(error):
            resolve_escalation(engine, opened.id, **call)  # type: ignore[arg-type]
        assert escalation_of(engine, opened.id).status == "open"  # nothing changed
    with pytest.raises(NotFound):
        resolve_escalation(engine, "esc_nope", approved=True, by="ops", note=None,
                           extra_budget_usd=None, now=NOW)  # fmt: skip

    done = resolve_escalation(
        engine, opened.id, approved=True, by="ops@acme", note="known retry loop",
        extra_budget_usd=Decimal("2.50"), now=NOW + 9, tenant="org_a",
    )
    assert (done.status, done.resolved_by) == ("approved", "ops@acme")
    assert done.note == "known retry loop"
    assert done.extra_budget_usd == Decimal("2.50")
    assert done.resolved_at == datetime.fromtimestamp(NOW + 9, UTC)
    with pytest.raises(Conflict, match="already approved"):
        resolve_escalation(engine, opened.id, approved=False, by="x", note=None,
                           extra_budget_usd=None, now=NOW + 10)  # fmt: skip
    assert escalation_of(engine, opened.id).resolved_by == "ops@acme"
    with pytest.raises(NotFound):
        escalation_of(engine, other.id, tenant="org_a")
