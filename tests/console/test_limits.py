"""The budgets and limits page: a platform admin sets an org's daily USD limit on the page
and that org's next request through the gateway (the openai SDK) is refused with 402 at
once, the refusal then listed; removing the limit lets it through again; tiers are put on
orgs; a post without its CSRF token, a viewer's and an org admin's on another org, on the
platform or on tiers are 403 and change nothing; an org admin sees only its own org; and
the pure helpers."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from costwarden.admin.access import Access
from costwarden.analytics.query import SpendQuery
from costwarden.budgets.limits import Limit, Tier, TierEntry
from costwarden.budgets.status import LimitStatus
from costwarden.console.limits import (
    amount_text,
    limit_rows,
    may_write,
    refusal_rows,
    refusal_since,
    status_rows,
)
from costwarden.core.records import LedgerRecord
from costwarden.dashboard.roles import Principal
from costwarden.storage import policy, repo
from tests.console.conftest import TOKEN, Orgs, Signed, sign_in
from tests.helpers import LiveGateway

MODEL = "gpt-4o-mini"
AUTH = {"authorization": f"Bearer {TOKEN}"}


async def _ask(gw: LiveGateway, key: str) -> int:
    """One chat completion with ``key`` through the openai SDK: its HTTP status."""
    async with openai.AsyncOpenAI(base_url=gw.openai_url, api_key=key, max_retries=0) as oa:
        try:
            await oa.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=10
            )
        except openai.APIStatusError as refused:
            return refused.status_code
    return 200


def _limits(gw: LiveGateway) -> list[tuple[str, str, str, int]]:
    return [
        (lim.org_id, lim.scope, lim.name, lim.amount) for lim in policy.list_limits(gw.app.engine)
    ]


def _table(html: str, testid: str) -> str:
    found = re.search(rf'<table[^>]*data-testid="{testid}".*?</table>', html, re.S)
    assert found is not None, testid
    return found.group(0)


async def _org_id(gw: LiveGateway, name: str) -> str:
    org = await asyncio.to_thread(repo.get_org_by_name, gw.app.engine, name)
    assert org is not None
    return org.id


def _daily(org: str, amount: str) -> dict[str, str]:
    return {"org": org, "scope": "org", "subject": "", "limit_name": "daily_usd",
            "amount": amount, "mode": ""}  # fmt: skip


async def test_a_tiny_daily_limit_set_on_the_page_refuses_the_next_request(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    assert await _ask(gw, orgs.globex_key) == 200
    r = await admin.post("/dashboard/limits/set", _daily("globex", "0.000000001"))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/dashboard/limits?done=set"
    globex_id = await _org_id(gw, "globex")
    assert await asyncio.to_thread(_limits, gw) == [(globex_id, "org", "daily_usd", 1)]
    # in force at once in this process: globex refused, acme not
    assert await _ask(gw, orgs.globex_key) == 402
    assert await _ask(gw, gw.key) == 200
    async with httpx.AsyncClient(base_url=gw.base_url) as api:
        listed = (await api.get("/admin/limits", params={"org": "globex"}, headers=AUTH)).json()
    assert [(x["limit_name"], x["limit"]) for x in listed["limits"]] == [
        ("daily_usd", "0.000000001")
    ]

    await gw.app.ledger.flush()
    page = await admin.client.get("/dashboard/limits?done=set")
    assert page.status_code == 200
    html = page.text
    assert "Limit saved; it applies now." in html
    org_limits = _table(html, "org-limits")
    assert 'data-org="globex"' in org_limits and "$0.000000001" in org_limits
    status = _table(html, "budget-status")
    assert re.search(r'data-org="globex" data-limit="daily_usd"', status)
    assert 'class="badge bad"' in status  # spent beyond it
    refusals = _table(html, "refusals")
    (key,) = await asyncio.to_thread(repo.list_keys, gw.app.engine, "globex")
    assert "globex" in refusals and key.prefix in refusals and MODEL in refusals
    assert ">402<" in refusals and "budget exceeded: org" in refusals and "daily_usd" in refusals
    assert "acme" not in refusals

    r = await admin.post("/dashboard/limits/remove", _daily("globex", ""))
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/limits?done=removed"
    assert await asyncio.to_thread(_limits, gw) == []
    assert await _ask(gw, orgs.globex_key) == 200


async def test_editing_and_platform_limits(gw: LiveGateway, orgs: Orgs, admin: Signed) -> None:
    await admin.post("/dashboard/limits/set", _daily("acme", "5"))
    r = await admin.post(
        "/dashboard/limits/set", {**_daily("acme", "7.5"), "mode": "soft"}
    )  # the edit dialog posts the same target
    assert r.status_code == 303
    acme_id = await _org_id(gw, "acme")
    (lim,) = await asyncio.to_thread(policy.list_limits, gw.app.engine)
    assert (lim.org_id, lim.amount, lim.mode) == (acme_id, 7_500_000_000, "soft")
    r = await admin.post(
        "/dashboard/limits/set",
        {"org": "acme", "scope": "platform", "subject": "", "limit_name": "monthly_usd",
         "amount": "1000"},
    )  # fmt: skip
    assert r.status_code == 303
    html = (await admin.client.get("/dashboard/limits")).text
    platform = _table(html, "platform-limits")
    assert "monthly_usd" in platform and "$1000" in platform
    assert "$7.5" in _table(html, "org-limits")
    bad = await admin.post("/dashboard/limits/set", _daily("acme", "lots"))
    assert bad.status_code == 400 and "not a number" in bad.text
    missing = await admin.post("/dashboard/limits/set", _daily("initech", "1"))
    assert missing.status_code == 404
    assert len(await asyncio.to_thread(policy.list_limits, gw.app.engine)) == 2


async def test_tiers_are_put_on_orgs_by_the_platform_admin(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    await asyncio.to_thread(policy.set_tier, gw.app.engine, "gold", {"org": {"daily_usd": "5"}})
    await gw.app.enforcer.refresh()
    html = (await admin.client.get("/dashboard/limits")).text
    assert "org: daily_usd $5" in _table(html, "tiers")
    r = await admin.post("/dashboard/limits/tier", {"org": "globex", "tier": "gold"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard/limits?done=tier"
    globex_id = await _org_id(gw, "globex")
    snap = await asyncio.to_thread(policy.load_policy, gw.app.engine)
    assert snap.org_tiers == {globex_id: "gold"}
    assert gw.app.enforcer.book.org_tiers == {globex_id: "gold"}  # applied at once
    html = (await admin.client.get("/dashboard/limits")).text
    assert re.search(r'data-org="globex">\s*<td>globex</td>\s*<td data-testid="org-tier">gold',
                     _table(html, "org-tiers"))  # fmt: skip
    status = _table(html, "budget-status")
    assert "tier gold" in status  # the tier's default in force for globex

    # an org admin cannot change tiers, nor a viewer
    for credential in (orgs.acme_admin, orgs.platform_viewer):
        signed = await sign_in(gw.base_url, credential)
        try:
            r = await signed.post("/dashboard/limits/tier", {"org": "acme", "tier": "gold"})
            assert r.status_code == 403
        finally:
            await signed.client.aclose()
    r = await admin.post("/dashboard/limits/tier", {"org": "globex", "tier": ""})
    assert r.status_code == 303
    snap = await asyncio.to_thread(policy.load_policy, gw.app.engine)
    assert snap.org_tiers == {}


async def test_without_csrf_or_as_a_viewer_nothing_changes(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    r = await admin.client.post("/dashboard/limits/set", data=_daily("acme", "1"))
    assert r.status_code == 403
    r = await admin.client.post(
        "/dashboard/limits/set", data={**_daily("acme", "1"), "_csrf": "forged"}
    )
    assert r.status_code == 403
    assert await asyncio.to_thread(_limits, gw) == []
    await admin.post("/dashboard/limits/set", _daily("acme", "3"))
    for credential in (orgs.acme_viewer, orgs.platform_viewer):
        signed = await sign_in(gw.base_url, credential)
        try:
            page = (await signed.client.get("/dashboard/limits")).text
            assert 'data-testid="set-limit-form"' not in page
            assert 'data-testid="remove-limit"' not in page
            assert 'data-testid="org-limits"' in page  # sees it, read-only
            for path, data in (
                ("/dashboard/limits/set", _daily("acme", "1")),
                ("/dashboard/limits/remove", _daily("acme", "")),
            ):
                assert (await signed.post(path, data)).status_code == 403
        finally:
            await signed.client.aclose()
    (lim,) = await asyncio.to_thread(policy.list_limits, gw.app.engine)
    assert lim.amount == 3_000_000_000


async def test_an_org_admin_manages_its_own_org_only(
    gw: LiveGateway, orgs: Orgs, admin: Signed
) -> None:
    await admin.post("/dashboard/limits/set", _daily("globex", "0.000000001"))
    await admin.post(
        "/dashboard/limits/set",
        {"scope": "platform", "limit_name": "monthly_usd", "amount": "1000"},
    )
    assert await _ask(gw, orgs.globex_key) == 402  # a globex refusal in the ledger
    await gw.app.ledger.flush()
    before = await asyncio.to_thread(_limits, gw)
    globex_id = await _org_id(gw, "globex")
    (globex_key,) = await asyncio.to_thread(repo.list_keys, gw.app.engine, "globex")
    signed = await sign_in(gw.base_url, orgs.acme_admin)
    try:
        refused = [
            ("/dashboard/limits/set", _daily("globex", "5")),
            ("/dashboard/limits/remove", _daily("globex", "")),
            ("/dashboard/limits/set", {**_daily("", "5"), "scope": "platform",
                                       "limit_name": "monthly_usd"}),
            ("/dashboard/limits/remove", {**_daily("", ""), "scope": "platform",
                                          "limit_name": "monthly_usd"}),
        ]  # fmt: skip
        for path, data in refused:
            assert (await signed.post(path, data)).status_code == 403, (path, data)
        assert await asyncio.to_thread(_limits, gw) == before
        assert (await signed.client.get("/dashboard/limits?org=globex")).status_code == 403

        r = await signed.post("/dashboard/limits/set", _daily("acme", "2"))
        assert r.status_code == 303
        acme_id = await _org_id(gw, "acme")
        assert (acme_id, "org", "daily_usd", 2_000_000_000) in await asyncio.to_thread(
            _limits, gw
        )
        html = (await signed.client.get("/dashboard/limits")).text
        for secret in ("globex", globex_id, globex_key.prefix, globex_key.id):
            assert secret not in html
        assert 'data-testid="platform-limits"' not in html
        assert 'data-scope="platform"' not in html and "platform-wide" not in html
        assert 'data-testid="tiers"' not in html and 'data-testid="own-tier"' in html
        assert 'data-testid="refusals"' not in html  # acme has none
        assert 'data-org="acme" data-scope="org" data-limit="daily_usd"' in html
        assert 'data-testid="remove-limit"' in html
        r = await signed.post("/dashboard/limits/remove", _daily("acme", ""))
        assert r.status_code == 303
        assert await asyncio.to_thread(_limits, gw) == before
    finally:
        await signed.client.aclose()


# ------------------------------------------------------------------ pure helpers


@pytest.mark.parametrize(
    ("metric", "units", "expected"),
    [
        ("usd", 5_000_000_000, "$5"),
        ("usd", 1, "$0.000000001"),
        ("usd", -1, "unlimited"),
        ("requests", 12_000, "12,000"),
        ("tokens", 0, "0"),
    ],
)
def test_amount_text(metric: str, units: int, expected: str) -> None:
    assert amount_text(metric, units) == expected


H = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _hour(hours_ago: int) -> str:
    return (H - timedelta(hours=hours_ago)).isoformat()


@pytest.mark.parametrize(
    ("counts", "want", "expected"),
    [
        ({}, 25, None),
        ({(_hour(0), ()): 30}, 25, H),
        ({(_hour(0), ()): 10, (_hour(5), ()): 20, (_hour(9), ()): 4}, 25, H - timedelta(hours=5)),
        ({(_hour(0), ()): 1, (_hour(3), ()): 2}, 25, H - timedelta(days=7)),
        ({(_hour(0), ()): 0}, 25, None),
    ],
)
def test_refusal_since(counts: dict, want: int, expected: datetime | None) -> None:  # type: ignore[type-arg]
    assert refusal_since(counts, want, H - timedelta(days=7)) == expected


def _access(role: str, org_id: str | None, org_name: str | None) -> Access:
    return Access(Principal(role, org_id), org_name)  # type: ignore[arg-type]


def test_may_write() -> None:
    platform = _access("platform_admin", None, None)
    acme_admin = _access("org_admin", "org_a", "acme")
    viewer = _access("viewer", None, None)
    assert may_write(platform, None) and may_write(platform, "globex")
    assert may_write(acme_admin, "acme") and not may_write(acme_admin, "globex")
    assert not may_write(acme_admin, None)
    assert not may_write(viewer, "acme") and not may_write(viewer, None)


def test_limit_rows_scope_and_mark_overrides() -> None:
    limits = [
        Limit("platform", "", "", "usd", "month", 10**12),
        Limit("org", "org_a", "org_a", "usd", "day", 5 * 10**9),
        Limit("key", "key_1", "org_a", "requests", "minute", 60, "soft"),
        Limit("org", "org_g", "org_g", "usd", "day", -1),
    ]
    tiers = {"gold": Tier("gold", (TierEntry("org", "usd", "day", 10**9),))}
    names = {"org_a": "acme", "org_g": "globex"}
    org_tiers = {"org_a": "gold"}
    rows = limit_rows(limits, names, tiers, org_tiers, _access("platform_admin", None, None))
    assert [(r.org, r.scope, r.name) for r in rows] == [
        (None, "platform", "monthly_usd"),
        ("acme", "org", "daily_usd"),
        ("acme", "key", "requests_per_minute"),
        ("globex", "org", "daily_usd"),
    ]
    assert [r.overrides for r in rows] == [None, "gold", None, None]
    assert rows[1].amount == "5" and rows[1].shown == "$5" and rows[1].kind == "budget"
    assert rows[2].kind == "rate_limit" and rows[3].shown == "unlimited"
    assert all(r.editable for r in rows)
    own = limit_rows(limits, names, tiers, org_tiers, _access("org_admin", "org_a", "acme"))
    assert [(r.org, r.name) for r in own] == [
        ("acme", "daily_usd"), ("acme", "requests_per_minute"),
    ]  # fmt: skip
    assert all(r.editable for r in own)
    seen = limit_rows(limits, names, tiers, org_tiers, _access("viewer", "org_a", "acme"))
    assert len(seen) == 2 and not any(r.editable for r in seen)


def test_status_rows_badge_by_use() -> None:
    lim = Limit("org", "org_a", "org_a", "usd", "day", 100)
    rows = status_rows(
        [LimitStatus(lim, 10, 5, 1_800_000_000.0), LimitStatus(lim, 85, 0, None),
         LimitStatus(lim, 100, 0, None)],
        "acme",
    )  # fmt: skip
    assert [r.state for r in rows] == ["ok", "warn", "bad"]
    assert rows[0].spent == "$0.00000001" and rows[0].remaining == "$0.000000085"
    assert rows[0].percent == "10.00 %" and rows[0].source == "override"


def test_refusal_rows_keep_402_and_429() -> None:
    def rec(status: int, error: str | None) -> LedgerRecord:
        return LedgerRecord("r", H, "chat.completions", "blocked", status, org_id="org_a",
                            key_id="key_1", requested_model=MODEL, error=error)  # fmt: skip

    rows = refusal_rows(
        [rec(402, "budget exceeded: org"), rec(403, "switched off"), rec(429, None)],
        {"org_a": "acme"},
        {"key_1": "cw-abc"},
    )
    assert [(r.http_status, r.org, r.key_prefix, r.reason) for r in rows] == [
        (402, "acme", "cw-abc", "budget exceeded: org"),
        (429, "acme", "cw-abc", "rate limited"),
    ]


def test_a_spend_query_of_blocked_hours_is_valid() -> None:
    SpendQuery(H - timedelta(days=7), H, granularity="hour", filters={"status": "blocked"})
