"""``costwarden escalations``: listed, approved (the paused session moves on, its budget
raised, the events in the log for every gateway) or denied once, with clear errors for what
cannot be done."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import orjson

from costwarden.core.event_kinds import EscalationResolved, SessionChanged
from costwarden.sessions.lifecycle import Standing, on_runaway
from costwarden.storage import policy, repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.event_log import SqlEventLog
from costwarden.storage.sessions import (
    escalation_of,
    open_escalation,
    record_transition,
    session_of,
)
from tests.helpers import ainvoke_cli, cli_env


def _paused(config: str, session: str) -> tuple[str, str]:
    """A session of org acme paused with an open escalation: (org id, escalation id)."""
    url = f"sqlite:///{Path(config).parent}/cw.db"
    engine = create_engine_for(url)
    try:
        org_id, _ = repo.ensure_org(engine, "acme")
        policy.set_limits(engine, org="acme", scope="session", subject=session,
                          amounts={"daily_usd": "1"})  # fmt: skip
        now = time.time()
        escalation = open_escalation(engine, org_id, session, "repeat", {"count": 3}, now)
        moved = on_runaway(Standing(), escalation.id, now)
        assert moved is not None
        assert record_transition(engine, org_id, session, moved, version=None, actor="t")
        return org_id, escalation.id
    finally:
        engine.dispose()


async def test_approve_moves_the_session_on_and_tells_every_gateway(config: str) -> None:
    org_id, escalation = _paused(config, "run-1")
    env = cli_env()
    listed = await ainvoke_cli("escalations", "list", "--config", config, "--json", env=env)
    assert [e["id"] for e in listed.json()] == [escalation]
    bad = await ainvoke_cli("escalations", "approve", escalation, "--config", config,
                            "--extra-usd", "-2", env=env)  # fmt: skip
    assert bad.code != 0 and "extra_budget_usd" in bad.both
    done = await ainvoke_cli(
        "escalations", "approve", escalation, "--config", config, "--extra-usd", "2.5",
        "--note", "known slow tool", "--by", "ops", "--json", env=env,
    )  # fmt: skip
    assert done.code == 0, done.both
    answer = done.json()
    assert (answer["status"], answer["resolved_by"], answer["session_state"]) == (
        "approved", "cli:ops", "active",
    )  # fmt: skip
    again = await ainvoke_cli("escalations", "deny", escalation, "--config", config, env=env)
    assert again.code != 0 and "already approved" in again.both

    engine = create_engine_for(f"sqlite:///{Path(config).parent}/cw.db")
    try:
        row = session_of(engine, org_id, "run-1")
        assert row is not None and row.standing == Standing("active")
        assert escalation_of(engine, escalation).extra_budget_usd == Decimal("2.5")
        limits = [x for x in policy.list_limits(engine) if x.subject == "run-1"]
        assert [(x.name, x.amount) for x in limits] == [("daily_usd", 3_500_000_000)]
        batches = SqlEventLog(engine).read(0, 10)
    finally:
        engine.dispose()
    events = [item for _, raw in batches for item in orjson.loads(raw)]  # [ts, kind, org, data]
    assert [kind for _, kind, _, _ in events] == [SessionChanged.kind, EscalationResolved.kind]
    changed = events[0][3]
    assert (changed["from_state"], changed["to_state"], changed["cause"]) == (
        "paused", "active", "approved",
    )  # fmt: skip


async def test_deny_terminates_the_session(config: str) -> None:
    org_id, escalation = _paused(config, "run-2")
    done = await ainvoke_cli("escalations", "deny", escalation, "--config", config,
                             env=cli_env())  # fmt: skip
    assert done.code == 0 and "denied" in done.both and "terminated" in done.both
    unknown = await ainvoke_cli("escalations", "deny", "esc_nope", "--config", config,
                                env=cli_env())  # fmt: skip
    assert unknown.code != 0 and "no escalation" in unknown.both
