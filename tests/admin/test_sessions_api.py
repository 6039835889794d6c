"""Agent sessions and escalations through the admin API, and the agent's own view with its
key: a session paused by loop detection is shown the same by both; its escalation is
resolved once (approve with extra budget, or deny), with clear errors for what cannot be done
and nothing changed then; a key reads only its own sessions."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import httpx
import orjson

from costwarden.sessions.lifecycle import Standing, on_spend
from costwarden.storage import repo
from costwarden.storage.sessions import escalation_of, record_transition
from tests.admin.conftest import AUTH
from tests.helpers import LiveGateway, pause_session, set_limits


async def _escalation_alerts(client: httpx.AsyncClient, state: str) -> list[dict[str, Any]]:
    """The escalation alerts in ``state``, once there are (alerting follows the events)."""
    found: list[dict[str, Any]] = []
    for _ in range(100):
        r = await client.get("/admin/alerts", params={"state": state}, headers=AUTH)
        found = [a for a in r.json()["data"] if a["rule"] == "session-escalation"]
        if found:
            break
        await asyncio.sleep(0.05)
    return found


async def _chat(gw: LiveGateway, session: str, content: str, key: str | None = None) -> int:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            gw.openai_url + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]},
            headers={"authorization": f"Bearer {key or gw.key}", "x-costwarden-session": session},
        )
        return r.status_code


def _own(gw: LiveGateway, session: str, key: str | None = None) -> httpx.Response:
    return httpx.get(
        f"{gw.openai_url}/costwarden/session/{session}",
        headers={"authorization": f"Bearer {key or gw.key}"},
    )


async def test_a_paused_session_is_shown_alike_and_resumed_once_approved(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    await set_limits(gw, "session", "agent-1", daily_usd="0.001")
    escalation, _ = await pause_session(gw, "agent-1")

    admin = (await client.get("/admin/sessions/agent-1", params={"org": "acme"}, headers=AUTH))
    assert admin.status_code == 200
    view = admin.json()
    assert view["state"] == "paused" and view["escalation"]["id"] == escalation
    assert view["escalation"]["evidence"]["count"] == 3
    assert view["requests"] == 4  # three answered, and the one refused when it paused
    assert Decimal(view["budget_pct"]) > 0 and view["budgets"][0]["limit_name"] == "daily_usd"
    own = await asyncio.to_thread(_own, gw, "agent-1")
    assert own.status_code == 200 and own.json() == view  # the agent's view is the admin's

    listed = await client.get("/admin/escalations", params={"status": "open"}, headers=AUTH)
    assert [e["id"] for e in listed.json()["data"]] == [escalation]
    (alert,) = await _escalation_alerts(client, "firing")  # to the alert channels too
    assert alert["kind"] == "session" and alert["detail"]["escalation_id"] == escalation

    path = f"/admin/escalations/{escalation}/resolve"
    refused = [
        ({"decision": "approve", "extra_budget_usd": "-1"}, 400),
        ({"decision": "approve", "extra_budget_usd": 5}, 400),
        ({"decision": "deny", "extra_budget_usd": "1"}, 400),
        ({"decision": "maybe"}, 400),
        ({"decision": "approve", "note": "x" * 2001}, 400),
    ]
    for body, status in refused:
        r = await client.post(path, json=body, headers=AUTH)
        assert r.status_code == status, (body, r.text)
    unknown = await client.post("/admin/escalations/esc_nope/resolve",
                                json={"decision": "approve"}, headers=AUTH)  # fmt: skip
    assert unknown.status_code == 404
    stored = await asyncio.to_thread(escalation_of, gw.app.engine, escalation)
    assert stored.status == "open"  # nothing changed by any of those

    done = await client.post(
        path, headers=AUTH,
        json={"decision": "approve", "note": "a slow carrier", "actor": "ops",
              "extra_budget_usd": "2.5"},
    )  # fmt: skip
    assert done.status_code == 200, done.text
    assert done.json()["session_state"] == "active" and done.json()["resolved_by"] == "ops"
    again = await client.post(path, json={"decision": "deny"}, headers=AUTH)
    assert again.status_code == 409 and "already approved" in again.json()["error"]["message"]
    (alert,) = await _escalation_alerts(client, "resolved")  # resolved with it

    # The session goes on, with its budget raised by the extra.
    assert await _chat(gw, "agent-1", "ship it another way") == 200
    await gw.app.ledger.flush()
    view = (await client.get("/admin/sessions/agent-1", params={"org": "acme"},
                             headers=AUTH)).json()  # fmt: skip
    assert view["state"] == "active" and view["escalation"] is None
    assert view["budgets"][0]["limit"] == "2.501"


async def test_a_denied_escalation_terminates_its_session(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    escalation, _ = await pause_session(gw, "agent-2")
    r = await client.post(f"/admin/escalations/{escalation}/resolve",
                          json={"decision": "deny", "note": "looping"}, headers=AUTH)  # fmt: skip
    assert r.status_code == 200 and r.json()["session_state"] == "terminated"
    assert await _chat(gw, "agent-2", "anything else?") == 409
    own = await asyncio.to_thread(_own, gw, "agent-2")
    assert own.json()["state"] == "terminated"
    assert await _chat(gw, "agent-3", "a new run") == 200  # the key's other sessions go on


async def test_bad_session_ids_and_other_keys_are_refused(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    assert await _chat(gw, "agent-4", "hello") == 200
    await gw.app.ledger.flush()
    for bad in ("x" * 10_240, "a%01b", "a%7Fb"):
        own = await asyncio.to_thread(_own, gw, bad)
        assert own.status_code == 400, own.text
        admin = await client.get(f"/admin/sessions/{bad}", params={"org": "acme"}, headers=AUTH)
        assert admin.status_code == 400
    assert (await client.get("/admin/sessions/agent-4", headers=AUTH)).status_code == 400
    missing = await client.get("/admin/sessions/agent-4", params={"org": "nope"}, headers=AUTH)
    assert missing.status_code == 404
    # Another org's key, and another key of the same org, see no such session.
    other_org, beta = await asyncio.to_thread(repo.create_key, gw.app.engine, org="beta")
    same_org, acme = await asyncio.to_thread(repo.create_key, gw.app.engine, org="acme")
    gw.app.keys.apply([beta, acme])
    for key in (other_org, same_org):
        assert (await asyncio.to_thread(_own, gw, "agent-4", key)).status_code == 404
    assert (await asyncio.to_thread(_own, gw, "agent-4")).status_code == 200
    anonymous = await asyncio.to_thread(httpx.get, f"{gw.openai_url}/costwarden/session/agent-4")
    assert anonymous.status_code == 401


async def test_a_keys_session_options_are_set_at_creation_and_later(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    made = await client.post(
        "/admin/keys", headers=AUTH,
        json={"org": "acme", "name": "agent", "session_clean_stop": True},
    )  # fmt: skip
    assert made.status_code == 201, made.text
    key = made.json()
    assert (key["session_clean_stop"], key["session_budget_note"]) == (True, False)
    path = f"/admin/keys/{key['id']}/options"
    changed = await client.put(path, json={"session_budget_note": True}, headers=AUTH)
    assert changed.status_code == 200
    assert (changed.json()["session_clean_stop"], changed.json()["session_budget_note"]) == (
        True, True,
    )  # fmt: skip
    record = gw.app.keys.lookup(key["key"])  # live in this gateway at once
    assert record is not None and record.session_budget_note and record.session_clean_stop
    for body in ({"session_budget_note": "yes"}, {"something_else": True}):
        assert (await client.put(path, json=body, headers=AUTH)).status_code == 400
    unknown = await client.put("/admin/keys/key_000000000000/options", json={}, headers=AUTH)
    assert unknown.status_code == 404


async def test_an_agent_streams_its_own_sessions_events_with_its_key(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    """The session's events (its pause, the escalation, the resolution), not another
    session's; the stream needs the session's own key."""
    assert await _chat(gw, "agent-5", "hello") == 200
    await gw.app.ledger.flush()
    url = "/v1/costwarden/session/agent-5/events"
    assert (await client.get(url)).status_code == 401
    other, record = await asyncio.to_thread(repo.create_key, gw.app.engine, org="acme")
    gw.app.keys.apply([record])
    mine = {"authorization": f"Bearer {gw.key}"}
    assert (await client.get(url, headers={"authorization": f"Bearer {other}"})).status_code == 404
    frames: list[tuple[str, dict[str, Any]]] = []

    async def read() -> None:
        async with client.stream("GET", url, headers=mine) as r:
            assert r.status_code == 200
            kind = ""
            async for line in r.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    frames.append((kind, orjson.loads(line[6:])))
                    if kind == "escalation_resolved":
                        return

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)  # subscribed
    escalation, _ = await pause_session(gw, "agent-5")
    await pause_session(gw, "agent-6")  # another session of the same key: not on this stream
    r = await client.post(f"/admin/escalations/{escalation}/resolve",
                          json={"decision": "approve"}, headers=AUTH)  # fmt: skip
    assert r.status_code == 200
    await asyncio.wait_for(reader, 10)
    assert {data["session_id"] for _, data in frames} == {"agent-5"}
    kinds = [kind for kind, _ in frames]
    assert {"session_runaway", "escalation_created", "escalation_resolved"} <= set(kinds)
    changes = [data["to_state"] for kind, data in frames if kind == "session_changed"]
    assert changes[:1] == ["paused"]


async def test_risk_signals_name_sessions_near_their_budget_and_runaways(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    await set_limits(gw, "session", "agent-7", daily_usd="0.001")
    assert await _chat(gw, "agent-7", "one step") == 200
    await gw.app.ledger.flush()
    org_id = gw.app.keys.lookup(gw.key).org_id  # type: ignore[union-attr]
    # Winding down as the board stores it (the transition itself: tests/gateway).
    winding = on_spend(Standing(), Decimal(95), time.time(), Decimal(90))
    assert winding is not None
    await asyncio.to_thread(record_transition, gw.app.engine, org_id, "agent-7", winding,
                            version=None, actor="test")  # fmt: skip
    escalation, _ = await pause_session(gw, "agent-8")
    found = (await client.get("/admin/risks", params={"org": "acme"}, headers=AUTH)).json()
    by_type = {r["type"]: r for r in found["data"] if r["scope"] == "session"}
    runaway = by_type["session_runaway"]
    assert (runaway["scope_id"], runaway["escalation_id"]) == ("agent-8", escalation)
    near = by_type["session_near_budget"]
    view = (await client.get("/admin/sessions/agent-7", params={"org": "acme"},
                             headers=AUTH)).json()  # fmt: skip
    assert near["scope_id"] == "agent-7" and view["state"] == "winding_down"
    assert Decimal(near["ratio"]) == Decimal(view["budget_pct"]) / 100 > 0
    other_key = (await client.get("/admin/risks", params={"org": "acme", "key": "key_nope"},
                                  headers=AUTH))  # fmt: skip
    assert other_key.status_code == 404
