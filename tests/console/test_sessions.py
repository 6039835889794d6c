"""The agent sessions page: real sessions paused by loop detection are listed with their state,
budget share and spend as the admin API reads them, their escalations with Approve / Deny;
approving through the page resolves the escalation as the admin API would (session active
again, budget raised, resolved by the dashboard's visitor), the stream tells every browser,
and the fragment drops it. No CSRF token, a viewer, or acme's org_admin acting on globex's
escalation: 403 and nothing changed; acme's org_admin never sees globex's sessions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from costwarden.console.render import money
from costwarden.console.sessions import Decision, decision_of, pick_sessions
from costwarden.core.errors import InvalidInput
from costwarden.sessions.lifecycle import Standing
from costwarden.storage.sessions import SessionRow, escalation_of, session_of
from tests.console.conftest import TOKEN, Orgs, Signed, sign_in
from tests.helpers import LiveGateway, pause_session, set_limits

AUTH = {"authorization": f"Bearer {TOKEN}"}


async def _view(gw: LiveGateway, org: str, session: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gw.base_url) as c:
        r = await c.get(f"/admin/sessions/{session}", params={"org": org}, headers=AUTH)
        assert r.status_code == 200, r.text
        view: dict[str, Any] = r.json()
        return view


async def _until_event(signed: Signed, kind: str, started: asyncio.Event) -> list[str]:
    """The dashboard stream's lines up to and including ``event: <kind>``."""
    lines: list[str] = []
    async with signed.client.stream("GET", "/dashboard/stream") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            lines.append(line)
            if line.startswith(": connected"):
                started.set()
            if line == f"event: {kind}":
                return lines
    raise AssertionError(f"the stream ended without {kind}: {lines}")


async def test_escalations_are_listed_and_resolved_through_the_page(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    await set_limits(gw, "session", "agent-1", daily_usd="0.001")
    mine = (await pause_session(gw, "agent-1", gw.key))[0]
    other = (await pause_session(gw, "agent-2", gw.key))[0]
    theirs = (await pause_session(gw, "globex-run", orgs.globex_key))[0]
    engine = gw.app.engine

    # The page: both orgs' escalations and sessions, the figures as the admin API reads them.
    page = await admin.client.get("/dashboard/sessions")
    assert page.status_code == 200, page.text
    html = page.text
    for escalation in (mine, other, theirs):
        assert f'data-testid="escalation-{escalation}"' in html
        assert f'data-testid="approve-{escalation}"' in html
    view = await _view(gw, "acme", "agent-1")
    assert view["state"] == "paused" and Decimal(view["budget_pct"]) > 0
    row = html.split('data-testid="session-agent-1"')[1].split("</tr>")[0]
    assert ">paused<" in row
    assert f"{view['budget_pct']} %" in row
    assert money(Decimal(view["spend_usd"]), 6) in row
    assert f"<td class=\"num\">{view['requests']}</td>" in row
    assert 'data-testid="session-globex-run"' in html and "globex" in html

    # acme's org_admin: acme's alone.
    acme = await sign_in(gw.base_url, orgs.acme_admin)
    viewer = await sign_in(gw.base_url, orgs.acme_viewer)
    try:
        own = await acme.client.get("/dashboard/sessions")
        assert own.status_code == 200
        assert f"escalation-{mine}" in own.text and f"approve-{mine}" in own.text
        for absent in (theirs, "globex-run", "globex"):
            assert absent not in own.text
        frag = await acme.client.get("/dashboard/sessions/escalations")
        assert frag.status_code == 200 and theirs not in frag.text and mine in frag.text

        # Refused, nothing changed: no CSRF token, a viewer, another org's escalation.
        path = f"/dashboard/escalations/{mine}/resolve"
        bare = await admin.client.post(path, data={"decision": "approve"})
        assert bare.status_code == 403
        seen = await viewer.client.get("/dashboard/sessions")
        assert f"escalation-{mine}" in seen.text and f"approve-{mine}" not in seen.text
        assert (await viewer.post(path, {"decision": "approve"})).status_code == 403
        across = await acme.post(f"/dashboard/escalations/{theirs}/resolve", {"decision": "deny"})
        assert across.status_code == 403
        bad = await admin.post(path, {"decision": "deny", "extra_budget_usd": "1"})
        assert bad.status_code == 400
        for escalation in (mine, theirs):
            stored = await asyncio.to_thread(escalation_of, engine, escalation)
            assert stored.status == "open"

        # Approved through the page (as htmx posts it), while a second browser listens.
        started = asyncio.Event()
        listening = asyncio.create_task(_until_event(acme, "escalation_resolved", started))
        await asyncio.wait_for(started.wait(), 10)
        done = await admin.client.post(
            path,
            data={"decision": "approve", "note": "a slow carrier", "extra_budget_usd": "2.5"},
            headers={"hx-request": "true", "x-csrf-token": admin.csrf},
        )
        assert done.status_code == 200, done.text
        assert 'id="escalations"' in done.text and f"escalation-{mine}" not in done.text
        assert "Escalation approved" in done.text
        lines = await asyncio.wait_for(listening, 10)
        assert "event: escalation_resolved" in lines

        stored = await asyncio.to_thread(escalation_of, engine, mine)
        assert (stored.status, stored.note) == ("approved", "a slow carrier")
        assert stored.resolved_by == "dashboard:admin-token"
        assert stored.extra_budget_usd == Decimal("2.5")
        row_now = await asyncio.to_thread(session_of, engine, stored.org_id, "agent-1")
        assert row_now is not None and row_now.standing.state == "active"
        assert gw.app.sessions is not None
        assert gw.app.sessions.standing(stored.org_id, "agent-1").state == "active"
        after = await _view(gw, "acme", "agent-1")
        assert after["state"] == "active" and after["budgets"][0]["limit"] == "2.501"

        # Gone from every visitor's fragment; a second decision is told, not applied.
        for signed in (admin, acme):
            frag = await signed.client.get("/dashboard/sessions/escalations")
            assert f"escalation-{mine}" not in frag.text
        again = await admin.client.post(
            path, data={"decision": "deny"},
            headers={"hx-request": "true", "x-csrf-token": admin.csrf},
        )  # fmt: skip
        assert again.status_code == 200 and "already resolved" in again.text
        assert (await asyncio.to_thread(escalation_of, engine, mine)).status == "approved"

        # acme's org_admin denies its own with a plain form: redirected with a notice.
        denied = await acme.post(f"/dashboard/escalations/{other}/resolve", {"decision": "deny"})
        assert denied.status_code == 303
        assert denied.headers["location"] == "/dashboard/sessions?done=denied"
        shown = await acme.client.get(denied.headers["location"])
        assert "Escalation denied" in shown.text
        stored = await asyncio.to_thread(escalation_of, engine, other)
        assert stored.status == "denied"
        assert (stored.resolved_by or "").startswith("dashboard:admin-key:")
        assert (await _view(gw, "acme", "agent-2"))["state"] == "terminated"
        assert (await asyncio.to_thread(escalation_of, engine, theirs)).status == "open"
    finally:
        await acme.client.aclose()
        await viewer.client.aclose()


async def test_an_unknown_escalation_is_404(gw: LiveGateway, admin: Signed) -> None:
    r = await admin.post("/dashboard/escalations/esc_nope/resolve", {"decision": "approve"})
    assert r.status_code == 404


def _row(org: str, session: str, state: str, minutes_ago: int) -> SessionRow:
    at = datetime(2027, 3, 10, 12, tzinfo=UTC) - timedelta(minutes=minutes_ago)
    return SessionRow(org, session, Standing(state), 1, at)  # type: ignore[arg-type]


def test_paused_sessions_come_first_then_the_most_recent() -> None:
    now = datetime(2027, 3, 10, 12, tzinfo=UTC)
    stored = [
        _row("o1", "sleepy", "sleeping", 1),
        _row("o1", "stuck", "paused", 50),
        _row("o2", "done", "exhausted", 30),
    ]
    seen = [
        ("o1", "busy", now - timedelta(minutes=2)),
        ("o1", "sleepy", now),  # seen after its change: the later time counts
        ("o2", "quiet", now - timedelta(hours=3)),
    ]
    assert pick_sessions(stored, seen, 10) == [
        ("o1", "stuck"), ("o1", "sleepy"), ("o1", "busy"), ("o2", "done"), ("o2", "quiet"),
    ]  # fmt: skip
    assert pick_sessions(stored, seen, 2) == [("o1", "stuck"), ("o1", "sleepy")]
    assert pick_sessions([], [], 5) == []


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"decision": "approve"}, Decision(True, None, None)),
        ({"decision": "deny", "note": "  looping  "}, Decision(False, "looping", None)),
        ({"decision": "approve", "extra_budget_usd": "2.50", "note": ""},
         Decision(True, None, Decimal("2.50"))),
        ({"decision": "deny", "extra_budget_usd": " "}, Decision(False, None, None)),
        ({"decision": "maybe"}, None),
        ({}, None),
        ({"decision": "approve", "extra_budget_usd": "-1"}, None),
        ({"decision": "approve", "extra_budget_usd": "1e3"}, None),
        ({"decision": "deny", "extra_budget_usd": "1"}, None),
        ({"decision": "approve", "note": "x" * 2001}, None),
    ],
)  # fmt: skip
def test_a_decision_is_read_from_the_form(
    fields: dict[str, str], expected: Decision | None
) -> None:
    if expected is None:
        with pytest.raises(InvalidInput):
            decision_of(fields)
    else:
        assert decision_of(fields) == expected
