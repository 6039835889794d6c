"""Tenants are walls: every admin route, asked by an org_admin, an org-scoped viewer and a
platform-wide viewer (admin keys), from outside, against a live gateway with two orgs' data.

The walk covers every (method, path) of ``costwarden.admin.api.ROUTES`` -- it fails when a
route is added without a case here. For each route, A's org_admin and A's viewer asking for
B's data or changes (B's name in ``?org=``, the body or the path; B's key, alert, request,
session, escalation or rule ids in the path) get a 403, and no answer carries B's name, ids
or key prefix (a 404's may repeat what the request itself named); what they read of their
own holds A's data and no other org's. Every write by either viewer is a 403, and so is every
change A's org_admin asks of B, with nothing changed (the admin token reads the state before
and after); A's org_admin's own changes succeed and leave B as it was.

Then the event stream (only A's events reach A's org_admin; ``?org=B`` is a 403), and the
credentials themselves: a revoked admin key and an unknown one are 401s, a platform_admin key
works like the admin token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from costwarden.admin.api import ROUTES
from costwarden.alerts.rules import threshold_alert
from costwarden.core.event_kinds import LimitThresholdCrossed
from costwarden.storage import alerts as alert_store
from costwarden.storage.admin_keys import create_admin_key, revoke_admin_key
from costwarden.storage.audit import audit_entries
from tests.admin.conftest import AUTH
from tests.helpers import LiveGateway, sse_frames, tool_round

A = "alpha-tenant-k3"
B = "bravo-tenant-q7"
A_PROJECT = "proj-alpha-k3"
B_PROJECT = "proj-bravo-q7"
A_SESSION = "run-alpha-k3"
B_SESSION = "run-bravo-q7"
# Platform-wide settings no org-scoped principal reads: a tier (a plan may be named for a
# customer), its alert rule, a platform limit (whose spend is every org's).
TIER = "plan-zeta-9"
PLATFORM_USD = "987654.321"
HI = [{"role": "user", "content": "hi"}]
LAYER = {"actions": {"pii": "flag"}}
# What the admin token reads to tell that nothing changed (the audit log records every
# change the others do not show, such as a breaker reset).
STATE = (
    "/admin/orgs", "/admin/keys", "/admin/limits", "/admin/tiers", "/admin/switches",
    "/admin/audit?limit=1000", "/admin/routes", "/admin/alert-rules", "/admin/alert-channels",
    "/admin/alerts?limit=1000", "/admin/escalations", "/admin/security/policies",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Probe:
    """One request, and what it answers: ``status`` to A's org_admin and A's viewer (reads;
    for writes, to A's org_admin: a viewer's is always 403), ``platform`` to the platform-wide
    viewer (None: not asked). ``has``: strings A's answer must hold (its own data)."""

    method: str
    path: str
    body: Any = None
    status: int = 403
    platform: int | None = 200
    has: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Case:
    """A route's probes: ``cross`` asks for B's data or changes, ``own`` for A's own (for a
    platform-only route, both are 403 to A's principals)."""

    write: bool
    cross: tuple[Probe, ...] = ()
    own: tuple[Probe, ...] = ()


@dataclasses.dataclass
class World:
    """Two orgs' data, the ids that name it, and the admin keys that ask."""

    a_org: str
    b_org: str
    acme_org: str
    a_key: str
    a_key_id: str
    a_spare_key_id: str
    b_key: str
    b_key_id: str
    b_prefix: str
    a_alerts: list[str]
    b_alerts: list[str]
    a_request: str
    b_requests: list[str]
    a_escalation: str
    b_escalation: str
    a_rule: str
    b_rule: str
    tier_rule: str
    org_admin: str
    viewer: str
    platform_viewer: str
    deployment: str

    def b_strings(self) -> set[str]:
        """What of B (and of the fixture's third org) no answer to A may hold."""
        return {
            B, self.b_org, self.b_key_id, self.b_prefix, B_PROJECT, B_SESSION,
            self.b_escalation, self.b_rule, *self.b_alerts, *self.b_requests, self.acme_org,
            TIER, self.tier_rule, PLATFORM_USD,
        }  # fmt: skip


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


# ------------------------------------------------------------------ the two orgs' data


async def _ok(r: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert r.status_code == status, (r.request.method, r.request.url, r.text)
    data: dict[str, Any] = r.json()
    return data


async def _new_key(client: httpx.AsyncClient, org: str, project: str) -> dict[str, Any]:
    r = await client.post("/admin/keys", json={"org": org, "project": project}, headers=AUTH)
    return await _ok(r, 201)


async def _pause(gw: LiveGateway, key: str, session: str) -> str:
    """Drive ``session`` of ``key`` into a loop until it is paused: its escalation id."""
    messages: list[Any] = [{"role": "user", "content": "has order 7 shipped?"}]
    headers = {**bearer(key), "x-costwarden-session": session}
    async with httpx.AsyncClient(timeout=10) as http:
        for i in range(5):
            r = await http.post(
                gw.openai_url + "/chat/completions",
                json={"model": "gpt-4o-mini", "messages": messages},
                headers=headers,
            )
            if r.status_code == 409:
                escalation: str = r.json()["error"]["escalation_id"]
                return escalation
            assert r.status_code == 200, r.text
            messages += tool_round(i)
    raise AssertionError("never paused")


async def _raise_alert(gw: LiveGateway, org_id: str, pct: int) -> str:
    crossing = LimitThresholdCrossed(
        org_id=org_id, scope="org", scope_id=org_id, window="day", metric="usd",
        threshold_pct=pct, used="8", limit="10", window_key="until:1",
    )  # fmt: skip
    draft = threshold_alert(crossing)
    alert = await asyncio.to_thread(alert_store.raise_alert, gw.app.engine, draft)
    assert alert is not None
    return alert.id


async def _org_alerts(client: httpx.AsyncClient, org: str, count: int) -> list[str]:
    """Org ``org``'s alert ids, once there are ``count`` (alerting follows the events)."""
    ids: list[str] = []
    for _ in range(200):
        r = await client.get("/admin/alerts", params={"org": org}, headers=AUTH)
        ids = [a["id"] for a in (await _ok(r))["data"]]
        if len(ids) >= count:
            return ids
        await asyncio.sleep(0.05)
    raise AssertionError(f"org {org} has {len(ids)} alerts, not {count}")


async def _admin_key(gw: LiveGateway, role: str, org: str | None) -> str:
    plaintext, _ = await asyncio.to_thread(
        create_admin_key, gw.app.engine, role=role, org=org, name=f"{role} of {org}", actor="test"
    )
    return plaintext


async def build_world(gw: LiveGateway, client: httpx.AsyncClient) -> World:
    a_key = await _new_key(client, A, A_PROJECT)
    a_spare = await _new_key(client, A, A_PROJECT)
    b_key = await _new_key(client, B, B_PROJECT)
    # Traffic of both orgs: agent sessions driven into a loop (ledger rows, sessions,
    # escalations, and their alerts), one plain request each.
    a_escalation = await _pause(gw, a_key["key"], A_SESSION)
    b_escalation = await _pause(gw, b_key["key"], B_SESSION)
    async with httpx.AsyncClient(timeout=10) as http:
        for key in (a_key["key"], b_key["key"]):
            r = await http.post(gw.openai_url + "/chat/completions",
                                json={"model": "gpt-4o-mini", "messages": HI},
                                headers=bearer(key))  # fmt: skip
            assert r.status_code == 200, r.text
    assert gw.app.sessions is not None
    await gw.app.sessions.flush()
    await gw.app.ledger.flush()
    a_org, b_org = a_key["org_id"], b_key["org_id"]
    for org in (A, B):
        await _ok(await client.put("/admin/limits", headers=AUTH, json={
            "org": org, "scope": "org", "limits": {"monthly_usd": "1000"}}))  # fmt: skip
        await _ok(await client.put(f"/admin/orgs/{org}/security", json=LAYER, headers=AUTH))
        await _ok(await client.put("/admin/switches", headers=AUTH, json={
            "org": org, "feature": "embeddings", "enabled": False}))  # fmt: skip
    # Each org's escalation and switch raise an alert (alerting follows the events): all
    # there before anything is compared.
    await _org_alerts(client, A, 2)
    await _org_alerts(client, B, 2)
    a_alerts = [await _raise_alert(gw, a_org, pct) for pct in (50, 80, 90)]
    await _raise_alert(gw, b_org, 50)
    await _org_alerts(client, A, 5)
    b_alerts = await _org_alerts(client, B, 3)
    for key_id in (a_key["id"], b_key["id"]):
        await _ok(await client.put(f"/admin/keys/{key_id}/security", json=LAYER, headers=AUTH))
    await _ok(await client.put("/admin/limits", headers=AUTH, json={
        "org": None, "scope": "platform", "limits": {"daily_usd": PLATFORM_USD}}))  # fmt: skip
    await _ok(await client.put(f"/admin/tiers/{TIER}", json={"org": {"daily_usd": "900"}},
                               headers=AUTH))  # fmt: skip
    rules = []
    for target in ({"org": A}, {"org": B}, {"tier": TIER}):
        r = await client.put("/admin/alert-rules", headers=AUTH,
                             json={**target, "scope": "org", "thresholds": [50, 100]})
        rules.append((await _ok(r))["id"])

    requests = {}
    for org in (A, B):
        r = await client.get("/admin/analytics/requests", params={"org": org}, headers=AUTH)
        requests[org] = [row["request_id"] for row in (await _ok(r))["data"]]
        assert requests[org]
    health = await _ok(await client.get("/admin/health/deployments", headers=AUTH))
    orgs = (await _ok(await client.get("/admin/orgs", headers=AUTH)))["data"]
    return World(
        a_org=a_org, b_org=b_org,
        acme_org=next(o["id"] for o in orgs if o["name"] == "acme"),
        a_key=a_key["key"], a_key_id=a_key["id"], a_spare_key_id=a_spare["id"],
        b_key=b_key["key"], b_key_id=b_key["id"], b_prefix=b_key["prefix"],
        a_alerts=a_alerts, b_alerts=b_alerts,
        a_request=requests[A][0], b_requests=requests[B],
        a_escalation=a_escalation, b_escalation=b_escalation,
        a_rule=rules[0], b_rule=rules[1], tier_rule=rules[2],
        org_admin=await _admin_key(gw, "org_admin", A),
        viewer=await _admin_key(gw, "viewer", A),
        platform_viewer=await _admin_key(gw, "viewer", None),
        deployment=health["data"][0]["deployment"],
    )  # fmt: skip


# ------------------------------------------------------------------ every route's case


def cases(w: World) -> dict[tuple[str, str], Case]:
    """Every route's probes, by (method, path template)."""
    month = f"{datetime.now(UTC):%Y-%m}"
    both = Probe  # a read every principal may make: the same answer to each
    return {
        ("GET", "/healthz"): Case(False, own=(both("GET", "/healthz", status=200),)),
        ("GET", "/admin/openapi.json"): Case(
            False, own=(both("GET", "/admin/openapi.json", status=200),)
        ),
        # orgs, keys, usage
        ("GET", "/admin/orgs"): Case(
            False, own=(Probe("GET", "/admin/orgs", status=200, has=(w.a_org, A)),)
        ),
        ("GET", "/admin/keys"): Case(
            False,
            cross=(Probe("GET", f"/admin/keys?org={B}"),),
            own=(Probe("GET", "/admin/keys", status=200, has=(w.a_key_id,)),
                 Probe("GET", f"/admin/keys?org={A}", status=200, has=(w.a_key_id,))),
        ),  # fmt: skip
        ("POST", "/admin/keys"): Case(
            True,
            cross=(Probe("POST", "/admin/keys", {"org": B, "name": "intruder"}),
                   Probe("POST", "/admin/keys", {"org": "brand-new-org-z1"})),
            own=(Probe("POST", "/admin/keys", {"org": A, "name": "by-org-admin"}, status=201),),
        ),  # fmt: skip
        ("POST", "/admin/keys/{key_id}/revoke"): Case(
            True,
            cross=(Probe("POST", f"/admin/keys/{w.b_key_id}/revoke"),
                   Probe("POST", "/admin/keys/key_nope/revoke")),
            own=(Probe("POST", f"/admin/keys/{w.a_spare_key_id}/revoke", status=200),),
        ),  # fmt: skip
        ("PUT", "/admin/keys/{key_id}/options"): Case(
            True,
            cross=(Probe("PUT", f"/admin/keys/{w.b_key_id}/options",
                         {"session_clean_stop": True}),),
            own=(Probe("PUT", f"/admin/keys/{w.a_key_id}/options", {"session_clean_stop": True},
                       status=200),),
        ),  # fmt: skip
        ("GET", "/admin/usage"): Case(
            False,
            cross=(Probe("GET", f"/admin/usage?org={B}"),),
            own=(Probe("GET", "/admin/usage", status=200, has=(A,)),),
        ),
        # limits, budgets, tiers
        ("GET", "/admin/limits"): Case(
            False,
            cross=(Probe("GET", f"/admin/limits?org={B}"),),
            own=(Probe("GET", "/admin/limits", status=200, has=("monthly_usd", w.a_org)),),
        ),
        ("PUT", "/admin/limits"): Case(
            True,
            cross=(Probe("PUT", "/admin/limits",
                         {"org": B, "scope": "org", "limits": {"daily_usd": "1"}}),
                   Probe("PUT", "/admin/limits",
                         {"org": None, "scope": "platform", "limits": {"daily_usd": "1"}})),
            own=(Probe("PUT", "/admin/limits",
                       {"org": A, "scope": "org", "limits": {"daily_usd": "500"}}, status=200),),
        ),  # fmt: skip
        ("DELETE", "/admin/limits"): Case(
            True,
            cross=(Probe("DELETE", "/admin/limits", {"org": B, "scope": "org"}),
                   Probe("DELETE", "/admin/limits", {"org": None, "scope": "platform"})),
            own=(Probe("DELETE", "/admin/limits",
                       {"org": A, "scope": "org", "limits": ["monthly_usd"]}, status=200),),
        ),  # fmt: skip
        ("GET", "/admin/budgets"): Case(
            False,
            cross=(Probe("GET", f"/admin/budgets?org={B}"),),
            own=(Probe("GET", "/admin/budgets", status=200, platform=400, has=(w.a_org,)),),
        ),
        ("GET", "/admin/tiers"): Case(False, own=(Probe("GET", "/admin/tiers"),)),
        ("PUT", "/admin/tiers/{name}"): Case(
            True, own=(Probe("PUT", f"/admin/tiers/{TIER}", {"org": {"daily_usd": "5"}}),)
        ),
        ("DELETE", "/admin/tiers/{name}"): Case(
            True, own=(Probe("DELETE", f"/admin/tiers/{TIER}"),)
        ),
        ("PUT", "/admin/orgs/{name}/tier"): Case(
            True,
            cross=(Probe("PUT", f"/admin/orgs/{B}/tier", {"tier": TIER}),),
            own=(Probe("PUT", f"/admin/orgs/{A}/tier", {"tier": TIER}),),  # the platform's
        ),
        # kill switch, feature toggles, audit log
        ("GET", "/admin/switches"): Case(
            False, own=(Probe("GET", "/admin/switches", status=200, has=(w.a_org,)),)
        ),
        ("PUT", "/admin/switches"): Case(
            True,
            cross=(Probe("PUT", "/admin/switches",
                         {"org": B, "feature": "streaming", "enabled": False}),
                   Probe("PUT", "/admin/switches",
                         {"org": None, "feature": "ai", "enabled": False,
                          "confirm": "disable-all"})),
            own=(Probe("PUT", "/admin/switches",
                       {"org": A, "feature": "streaming", "enabled": False}, status=200),),
        ),  # fmt: skip
        ("GET", "/admin/audit"): Case(False, own=(Probe("GET", "/admin/audit"),)),
        # deployment health, breakers, events
        ("GET", "/admin/health/deployments"): Case(
            False, own=(both("GET", "/admin/health/deployments", status=200),)
        ),
        ("POST", "/admin/breakers/{deployment}/reset"): Case(
            True, own=(Probe("POST", f"/admin/breakers/{quote(w.deployment, safe='')}/reset"),)
        ),
        # the stream of A's own events is test_the_event_stream_is_the_orgs_own's
        ("GET", "/admin/events"): Case(
            False, cross=(Probe("GET", f"/admin/events?org={B}", platform=None),)
        ),
        # routes and their fallback chains
        ("GET", "/admin/routes"): Case(
            False, own=(both("GET", "/admin/routes", status=200, has=("gpt-4o-mini",)),)
        ),
        ("PUT", "/admin/routes/{model}/fallbacks"): Case(
            True, own=(Probe("PUT", "/admin/routes/gpt-4o-mini/fallbacks", {"fallbacks": None}),)
        ),
        ("GET", "/metrics"): Case(False, own=(Probe("GET", "/metrics"),)),
        ("GET", "/admin/risks"): Case(
            False,
            cross=(Probe("GET", f"/admin/risks?org={B}"),
                   Probe("GET", f"/admin/risks?key={w.b_key_id}", status=404, platform=400)),
            own=(Probe("GET", "/admin/risks", status=200, platform=400),),
        ),  # fmt: skip
        # analytics
        ("GET", "/admin/analytics/spend"): Case(
            False,
            cross=(Probe("GET", f"/admin/analytics/spend?org={B}"),
                   Probe("GET", f"/admin/analytics/spend?by=key&key={w.b_key_id}", status=200)),
            own=(Probe("GET", "/admin/analytics/spend?by=org", status=200, has=(w.a_org, A)),
                 Probe("GET", "/admin/analytics/spend?by=project,key&granularity=day",
                       status=200, has=(w.a_key_id,))),
        ),  # fmt: skip
        ("GET", "/admin/analytics/top"): Case(
            False,
            cross=(Probe("GET", f"/admin/analytics/top?org={B}"),),
            own=(Probe("GET", "/admin/analytics/top?by=org", status=200, has=(w.a_org,)),
                 Probe("GET", "/admin/analytics/top?by=key", status=200, has=(w.a_key_id,))),
        ),  # fmt: skip
        ("GET", "/admin/analytics/overview"): Case(
            False, own=(Probe("GET", "/admin/analytics/overview?period=7d", status=200),)
        ),
        ("GET", "/admin/analytics/trends"): Case(
            False,
            own=(Probe("GET", "/admin/analytics/trends?by=org", status=200, has=(w.a_org,)),
                 Probe("GET", "/admin/analytics/trends?by=key", status=200, has=(w.a_key_id,))),
        ),  # fmt: skip
        ("GET", "/admin/analytics/requests"): Case(
            False,
            cross=(Probe("GET", f"/admin/analytics/requests?org={B}"),
                   Probe("GET", f"/admin/analytics/requests?key={w.b_key_id}", status=200),
                   Probe("GET", f"/admin/analytics/requests?session={B_SESSION}", status=200)),
            own=(Probe("GET", "/admin/analytics/requests?limit=500", status=200,
                       has=(w.a_request,)),),
        ),  # fmt: skip
        ("GET", "/admin/analytics/requests/{request_id}"): Case(
            False,
            cross=(Probe("GET", f"/admin/analytics/requests/{w.b_requests[0]}"),),
            own=(Probe("GET", f"/admin/analytics/requests/{w.a_request}", status=200,
                       has=(w.a_request,)),),
        ),  # fmt: skip
        ("GET", "/admin/analytics/projection"): Case(
            False,
            cross=(Probe("GET", f"/admin/analytics/projection?org={B}"),),
            own=(Probe("GET", "/admin/analytics/projection", status=200),),
        ),
        ("GET", "/admin/analytics/chargeback.csv"): Case(
            False,
            cross=(Probe("GET", f"/admin/analytics/chargeback.csv?month={month}&org={B}"),),
            own=(Probe("GET", f"/admin/analytics/chargeback.csv?month={month}", status=200,
                       has=(w.a_org, A)),
                 Probe("GET", f"/admin/analytics/chargeback.csv?month={month}&by=project",
                       status=200, has=(w.a_org,)),
                 Probe("GET", f"/admin/analytics/chargeback.csv?month={month}&by=tag",
                       status=200)),
        ),  # fmt: skip
        # alert rules and channels
        ("GET", "/admin/alert-rules"): Case(
            False,
            cross=(Probe("GET", f"/admin/alert-rules?org={B}"),),
            own=(Probe("GET", "/admin/alert-rules", status=200, has=(w.a_rule,)),),
        ),
        ("PUT", "/admin/alert-rules"): Case(
            True,
            cross=(Probe("PUT", "/admin/alert-rules",
                         {"org": B, "scope": "org", "thresholds": [70]}),
                   Probe("PUT", "/admin/alert-rules",
                         {"tier": TIER, "scope": "org", "thresholds": [70]}),
                   Probe("PUT", "/admin/alert-rules",
                         {"scope": "platform", "thresholds": [70]})),
            own=(Probe("PUT", "/admin/alert-rules",
                       {"org": A, "scope": "org", "thresholds": [70]}, status=200),),
        ),  # fmt: skip
        ("DELETE", "/admin/alert-rules/{rule_id}"): Case(
            True,
            cross=(Probe("DELETE", f"/admin/alert-rules/{w.b_rule}"),
                   Probe("DELETE", f"/admin/alert-rules/{w.tier_rule}"),
                   Probe("DELETE", "/admin/alert-rules/rule_nope")),
            own=(Probe("DELETE", f"/admin/alert-rules/{w.a_rule}", status=200),),
        ),  # fmt: skip
        ("GET", "/admin/alert-channels"): Case(False, own=(Probe("GET", "/admin/alert-channels"),)),
        ("PUT", "/admin/alert-channels/{name}"): Case(
            True,
            own=(Probe("PUT", "/admin/alert-channels/ops",
                       {"type": "webhook", "url": "http://127.0.0.1:9/hook"}),),
        ),  # fmt: skip
        ("DELETE", "/admin/alert-channels/{name}"): Case(
            True, own=(Probe("DELETE", "/admin/alert-channels/ops"),)
        ),
        ("POST", "/admin/alert-channels/{name}/test"): Case(
            True, own=(Probe("POST", "/admin/alert-channels/ops/test"),)
        ),
        ("GET", "/admin/alert-channels/{name}/deliveries"): Case(
            False, own=(Probe("GET", "/admin/alert-channels/ops/deliveries", platform=404),)
        ),
        # alerts
        ("GET", "/admin/alerts"): Case(
            False,
            cross=(Probe("GET", f"/admin/alerts?org={B}"),),
            own=(Probe("GET", "/admin/alerts", status=200, has=tuple(w.a_alerts)),),
        ),
        ("GET", "/admin/alerts/{alert_id}"): Case(
            False,
            cross=tuple(Probe("GET", f"/admin/alerts/{b}") for b in w.b_alerts),
            own=(Probe("GET", f"/admin/alerts/{w.a_alerts[0]}", status=200,
                       has=(w.a_alerts[0],)),),
        ),  # fmt: skip
        ("POST", "/admin/alerts/{alert_id}/acknowledge"): Case(
            True,
            cross=tuple(Probe("POST", f"/admin/alerts/{b}/acknowledge") for b in w.b_alerts),
            own=(Probe("POST", f"/admin/alerts/{w.a_alerts[0]}/acknowledge", status=200),),
        ),
        ("POST", "/admin/alerts/{alert_id}/snooze"): Case(
            True,
            cross=(Probe("POST", f"/admin/alerts/{w.b_alerts[0]}/snooze", {"minutes": 5}),),
            own=(Probe("POST", f"/admin/alerts/{w.a_alerts[1]}/snooze", {"minutes": 5},
                       status=200),),
        ),  # fmt: skip
        ("POST", "/admin/alerts/{alert_id}/resolve"): Case(
            True,
            cross=(Probe("POST", f"/admin/alerts/{w.b_alerts[0]}/resolve"),),
            own=(Probe("POST", f"/admin/alerts/{w.a_alerts[2]}/resolve", status=200),),
        ),
        # agent sessions and their escalations
        ("GET", "/admin/sessions/{session_id}"): Case(
            False,
            cross=(Probe("GET", f"/admin/sessions/{B_SESSION}?org={B}"),
                   Probe("GET", f"/admin/sessions/{B_SESSION}", status=404, platform=400)),
            own=(Probe("GET", f"/admin/sessions/{A_SESSION}", status=200, platform=400,
                       has=(A_SESSION, w.a_escalation)),),
        ),  # fmt: skip
        ("GET", "/admin/escalations"): Case(
            False,
            cross=(Probe("GET", f"/admin/escalations?org={B}"),),
            own=(Probe("GET", "/admin/escalations", status=200, has=(w.a_escalation,)),),
        ),
        # an agent's own stream takes its virtual key: an admin key there is an unknown key
        ("GET", "/v1/costwarden/session/{session_id}/events"): Case(
            False,
            cross=(Probe("GET", f"/v1/costwarden/session/{B_SESSION}/events", status=401,
                         platform=401),),
        ),  # fmt: skip
        ("POST", "/admin/escalations/{escalation_id}/resolve"): Case(
            True,
            cross=(Probe("POST", f"/admin/escalations/{w.b_escalation}/resolve",
                         {"decision": "deny"}),
                   Probe("POST", "/admin/escalations/esc_nope/resolve", {"decision": "deny"},
                         status=404)),
            own=(Probe("POST", f"/admin/escalations/{w.a_escalation}/resolve",
                       {"decision": "deny", "note": "looping"}, status=200),),
        ),  # fmt: skip
        # security policies
        ("GET", "/admin/security/policies"): Case(
            False,
            cross=(Probe("GET", f"/admin/security/policies?org={B}"),),
            own=(Probe("GET", "/admin/security/policies", status=200,
                       has=(w.a_org, w.a_key_id)),),
        ),  # fmt: skip
        ("PUT", "/admin/orgs/{name}/security"): Case(
            True,
            cross=(Probe("PUT", f"/admin/orgs/{B}/security", {"actions": {"pii": "block"}}),),
            own=(Probe("PUT", f"/admin/orgs/{A}/security", {"actions": {"pii": "redact"}},
                       status=200),),
        ),  # fmt: skip
        ("DELETE", "/admin/orgs/{name}/security"): Case(
            True,
            cross=(Probe("DELETE", f"/admin/orgs/{B}/security"),),
            own=(Probe("DELETE", f"/admin/orgs/{A}/security", status=200),),
        ),
        ("PUT", "/admin/keys/{key_id}/security"): Case(
            True,
            cross=(Probe("PUT", f"/admin/keys/{w.b_key_id}/security",
                         {"actions": {"pii": "block"}}),),
            own=(Probe("PUT", f"/admin/keys/{w.a_key_id}/security",
                       {"actions": {"pii": "redact"}}, status=200),),
        ),  # fmt: skip
        ("DELETE", "/admin/keys/{key_id}/security"): Case(
            True,
            cross=(Probe("DELETE", f"/admin/keys/{w.b_key_id}/security"),),
            own=(Probe("DELETE", f"/admin/keys/{w.a_key_id}/security", status=200),),
        ),
    }


def served_routes() -> set[tuple[str, str]]:
    """Every (method, path) the admin app serves."""
    return {
        (method, route.path)
        for route in ROUTES
        for method in route.methods or ()
        if method != "HEAD"
    }


# ------------------------------------------------------------------ checks


async def ask(
    client: httpx.AsyncClient, probe: Probe, key: str
) -> httpx.Response:
    return await client.request(
        probe.method, probe.path, headers=bearer(key),
        content=None if probe.body is None else orjson.dumps(probe.body),
    )  # fmt: skip


async def state(client: httpx.AsyncClient) -> dict[str, Any]:
    """Everything the API lets the admin token read that a change would move."""
    out: dict[str, Any] = {}
    for path in STATE:
        out[path] = (await _ok(await client.get(path, headers=AUTH)))
    return out


async def b_state(client: httpx.AsyncClient) -> dict[str, Any]:
    """B's own slice of the state, read by the admin token."""
    out: dict[str, Any] = {}
    for path in ("/admin/keys", "/admin/limits", "/admin/alerts", "/admin/escalations",
                 "/admin/security/policies", "/admin/alert-rules", "/admin/budgets",
                 f"/admin/sessions/{B_SESSION}"):  # fmt: skip
        out[path] = await _ok(await client.get(path, params={"org": B}, headers=AUTH))
    switches = await _ok(await client.get("/admin/switches", headers=AUTH))
    out["switches"] = [s for s in switches["switches"] if s["org"] in (B, None)]
    return out


def requested(probe: Probe) -> str:
    return probe.path + ("" if probe.body is None else orjson.dumps(probe.body).decode())


def assert_walled(r: httpx.Response, probe: Probe, others: Iterable[str], who: str) -> None:
    """A's answer holds nothing of another org: a 403 not even what was asked for (no name
    or id repeated); any other answer nothing the request did not name itself."""
    text = r.text
    asked = requested(probe)
    for other in others:
        if r.status_code != 403 and other in asked:
            continue
        assert other not in text, (who, probe, other, text[:500])
    if r.status_code == 403:
        assert r.json()["error"]["type"] == "permission_error", (who, probe, text)


async def test_every_route_walls_tenants(gw: LiveGateway, client: httpx.AsyncClient) -> None:
    w = await build_world(gw, client)
    table = cases(w)
    assert set(table) == served_routes(), "a route without a case here (or a case too many)"
    others = w.b_strings()
    principals = {"org_admin": w.org_admin, "viewer": w.viewer}

    # Reads: A's org_admin and A's viewer get the same, walled; the platform viewer what it
    # asks for.
    for (method, path), case in table.items():
        if case.write:
            continue
        for probe in (*case.cross, *case.own):
            for who, key in principals.items():
                r = await ask(client, probe, key)
                assert r.status_code == probe.status, (who, method, path, probe, r.text)
                assert_walled(r, probe, others, who)
                for wanted in probe.has if r.status_code == 200 else ():
                    assert wanted in r.text, (who, probe, wanted, r.text[:500])
            if probe.platform is not None:
                r = await ask(client, probe, w.platform_viewer)
                assert r.status_code == probe.platform, ("platform viewer", probe, r.text)

    # Writes: every one a 403 to either viewer, and to A's org_admin for B's things (and the
    # platform's); nothing changed by any of them.
    before = await state(client)
    for (method, path), case in table.items():
        if not case.write:
            continue
        for probe in (*case.cross, *case.own):
            for who, key in (("viewer", w.viewer), ("platform viewer", w.platform_viewer)):
                r = await ask(client, probe, key)
                assert r.status_code == 403, (who, method, path, probe, r.text)
                assert r.json()["error"]["type"] == "permission_error"
                assert_walled(r, probe, others, who)
        for probe in itertools.chain(case.cross, (p for p in case.own if p.status == 403)):
            r = await ask(client, probe, w.org_admin)
            assert r.status_code == probe.status, ("org_admin", method, path, probe, r.text)
            assert_walled(r, probe, others, "org_admin")
        assert await state(client) == before, (method, path)

    # A's org_admin's own changes go through, and B is as it was.
    b_before = await b_state(client)
    for (method, path), case in table.items():
        if not case.write:
            continue
        for probe in case.own:
            if probe.status == 403:
                continue
            r = await ask(client, probe, w.org_admin)
            assert r.status_code == probe.status, ("org_admin", method, path, probe, r.text)
            assert_walled(r, probe, others, "org_admin")
    assert await b_state(client) == b_before
    # ... audited as the admin key that made them
    actors = {e.actor for e in await asyncio.to_thread(audit_entries, gw.app.engine, limit=50)}
    assert any(a.startswith("admin-key:") for a in actors)


async def test_reports_sum_only_the_orgs_own(gw: LiveGateway, client: httpx.AsyncClient) -> None:
    w = await build_world(gw, client)
    own = bearer(w.org_admin)
    mine = await _ok(await client.get("/admin/analytics/overview?period=7d", headers=own))
    everyone = await _ok(await client.get("/admin/analytics/overview?period=7d", headers=AUTH))
    a_rows = await _ok(await client.get(f"/admin/analytics/spend?org={A}", headers=AUTH))
    assert mine["requests"] == a_rows["totals"]["requests"] < everyone["requests"]
    assert mine["active_orgs"] == 1 and everyone["active_orgs"] == 2
    top = await _ok(await client.get("/admin/analytics/top?by=org", headers=own))
    assert [row["org"] for row in top["data"]] == [w.a_org]
    csv = await client.get(f"/admin/analytics/chargeback.csv?month={datetime.now(UTC):%Y-%m}",
                           headers=own)  # fmt: skip
    lines = csv.text.strip().splitlines()
    assert len(lines) == 2 and w.a_org in lines[1] and w.b_org not in csv.text
    listed = await _ok(await client.get("/admin/orgs", headers=bearer(w.viewer)))
    assert [o["name"] for o in listed["data"]] == [A]
    everyone_orgs = await _ok(await client.get("/admin/orgs", headers=bearer(w.platform_viewer)))
    assert {o["name"] for o in everyone_orgs["data"]} == {"acme", A, B}


# ------------------------------------------------------------------ the event stream


async def test_the_event_stream_is_the_orgs_own(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    w = await build_world(gw, client)
    for key in (w.org_admin, w.viewer):
        refused = await client.get(f"/admin/events?org={B}", headers=bearer(key))
        assert refused.status_code == 403 and B not in refused.text
    async with httpx.AsyncClient(timeout=10) as http:
        async with client.stream("GET", "/admin/events", headers=bearer(w.org_admin)) as r:
            assert r.status_code == 200
            # B's traffic, B's switch and a platform-wide one, then A's request: had any of
            # them reached A's stream, it would have come first.
            b_call = await http.post(gw.openai_url + "/chat/completions", headers=bearer(w.b_key),
                                     json={"model": "gpt-4o-mini", "messages": HI})  # fmt: skip
            assert b_call.status_code == 200
            for org in (B, None):
                await _ok(await client.put("/admin/switches", headers=AUTH, json={
                    "org": org, "feature": "messages", "enabled": True}))  # fmt: skip
            a_call = await http.post(gw.openai_url + "/chat/completions", headers=bearer(w.a_key),
                                     json={"model": "gpt-4o-mini", "messages": HI})  # fmt: skip
            assert a_call.status_code == 200
            done = a_call.headers["x-request-id"]
            raw: list[str] = []
            frames = await sse_frames(
                r.aiter_lines(), until=lambda f: f["data"].get("request_id") == done, raw=raw
            )
            text = "\n".join(raw)
    assert frames and all(f["data"].get("org_id") == w.a_org for f in frames), frames
    assert frames[-1]["event"] == "request_settled"
    for other in (*w.b_strings(), b_call.headers["x-request-id"]):
        assert other not in text


# ------------------------------------------------------------------ credentials


async def test_revoked_and_unknown_admin_keys_are_refused(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    plaintext, record = await asyncio.to_thread(
        create_admin_key, gw.app.engine, role="org_admin", org="acme", actor="test"
    )
    assert (await client.get("/admin/keys", headers=bearer(plaintext))).status_code == 200
    await asyncio.to_thread(revoke_admin_key, gw.app.engine, record.id, "test")
    for key in (plaintext, "cwa-" + "x" * 43, "cwa-"):
        r = await client.get("/admin/keys", headers=bearer(key))
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error"
        assert key not in r.text


async def test_a_platform_admin_key_works_like_the_token(
    gw: LiveGateway, client: httpx.AsyncClient
) -> None:
    plaintext, record = await asyncio.to_thread(
        create_admin_key, gw.app.engine, role="platform_admin", actor="test"
    )
    as_key = bearer(plaintext)
    for path in ("/admin/orgs", "/admin/audit", "/admin/tiers", "/metrics", "/admin/keys"):
        by_key = await client.get(path, headers=as_key)
        assert by_key.status_code == 200, (path, by_key.text)
    made = await client.post("/admin/keys", json={"org": "fresh-org"}, headers=as_key)
    assert made.status_code == 201, made.text
    switched = await client.put(
        "/admin/switches", headers=as_key,
        json={"org": None, "feature": "streaming", "enabled": False},
    )  # fmt: skip
    assert switched.status_code == 200, switched.text
    assert switched.json()["updated_by"] == f"admin-key:{record.id}"
    orgs = await _ok(await client.get("/admin/orgs", headers=as_key))
    assert orgs == await _ok(await client.get("/admin/orgs", headers=AUTH))
