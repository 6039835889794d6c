"""/metrics end to end: real traffic through a live gateway, then the scrape against the ledger.

The official SDKs send mixed traffic on loopback to a gateway whose upstream is the bundled
mock: unary and streamed, OpenAI and Anthropic, embeddings, two orgs, an unknown model, an
upstream failure, a rate-limit refusal and a revoked key. Once the ledger is flushed, the
scrape must agree with it exactly: requests per (org, model, provider, status), tokens, and
spend in nano-dollars equal to the ledger's own nano-dollar sum of ``cost_usd``. Runs on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from costwarden.core.money import usd_to_nanos
from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.storage import policy, repo
from costwarden.storage.db import nanos_sum
from costwarden.storage.schema import ledger
from costwarden.storage.usage import ledger_rows
from tests.helpers import LiveGateway, configure_mock, live_gateway

TOKEN = "adm-metrics"
SeriesKey = tuple[str, str, str, str]


def _scrape_samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _by_series(found: dict[tuple[tuple[str, str], ...], float]) -> dict[SeriesKey, float]:
    out: dict[SeriesKey, float] = {}
    for labels, v in found.items():
        d = dict(labels)
        out[(d["org"], d["model"], d["provider"], d["status"])] = v
    return out


def _key(r: LedgerRecord) -> SeriesKey:
    return (r.org_id or "", r.requested_model or "", r.provider or "", r.status)


async def _traffic(gw: LiveGateway, mock: MockServer, globex_key: str, revoked_key: str) -> None:
    acme = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0)
    globex = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=globex_key, max_retries=0)
    claude = anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=globex_key, max_retries=0)
    chat = [{"role": "user", "content": "how much does this cost?"}]
    async with acme, globex, claude:
        for _ in range(2):
            await acme.chat.completions.create(model="gpt-4o-mini", messages=chat)  # type: ignore[arg-type]
        stream = await acme.chat.completions.create(
            model="gpt-4o-mini",
            messages=chat,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        assert [c async for c in stream]
        await acme.embeddings.create(model="text-embedding-3-small", input="embed me")
        with pytest.raises(openai.NotFoundError):
            await acme.chat.completions.create(model="no-such-model", messages=chat)  # type: ignore[arg-type]
        await globex.chat.completions.create(model="gpt-4o-mini", messages=chat)  # type: ignore[arg-type]
        await claude.messages.create(
            model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        async with claude.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "stream please"}],
        ) as s:
            assert [t async for t in s.text_stream]
        # An upstream failure, for Anthropic only.
        await configure_mock(mock, fault_status=500, fault_models=["claude-haiku-4-5"])
        with pytest.raises(anthropic.APIStatusError):
            await claude.messages.create(
                model="claude-haiku-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            )
        await configure_mock(mock, fault_status=None, fault_models=[])
        # A refusal: globex's rate limit is already used up by the calls above.
        await asyncio.to_thread(
            policy.set_limits,
            gw.app.engine,
            org="globex",
            scope="org",
            subject="",
            amounts={"requests_per_minute": 1},
        )
        await gw.app.enforcer.refresh()
        with pytest.raises(openai.RateLimitError):
            await globex.chat.completions.create(model="gpt-4o-mini", messages=chat)  # type: ignore[arg-type]
    async with openai.AsyncOpenAI(
        base_url=gw.openai_url, api_key=revoked_key, max_retries=0
    ) as revoked:
        with pytest.raises(openai.AuthenticationError):
            await revoked.chat.completions.create(model="gpt-4o-mini", messages=chat)  # type: ignore[arg-type]


async def test_scrape_equals_the_ledger(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await configure_mock(mock, output_tokens=17, cached_tokens=3)
    async with live_gateway(mock, database_url, tmp_path, admin_token=TOKEN) as gw:
        engine = gw.app.engine
        globex_key, _ = await asyncio.to_thread(repo.create_key, engine, org="globex")
        revoked_key, revoked = await asyncio.to_thread(repo.create_key, engine, org="globex")
        revoked = await asyncio.to_thread(repo.revoke_key, engine, revoked.id)
        gw.app.keys.apply(await asyncio.to_thread(repo.list_keys, engine))
        # A budget on acme, so the per-limit gauges have something to say.
        await asyncio.to_thread(
            policy.set_limits,
            engine,
            org="acme",
            scope="org",
            subject="",
            amounts={"daily_usd": "100"},
        )
        await gw.app.enforcer.refresh()

        await _traffic(gw, mock, globex_key, revoked_key)
        await gw.app.ledger.flush()
        rows = await asyncio.to_thread(ledger_rows, engine, None, 100_000)
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            r = await http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        found = _scrape_samples(r.text)

        # The traffic is what the test meant it to be.
        statuses = Counter(row.status for row in rows)
        assert statuses == {
            "success": 7,
            "client_error": 1,
            "upstream_error": 1,
            "blocked": 1,
            "auth_error": 1,
        }, statuses
        acme = gw.app.keys.lookup(gw.key)
        assert acme is not None
        assert {row.org_id for row in rows} == {acme.org_id, revoked.org_id}

        # Requests and tokens per series, exactly the ledger's.
        requests = _by_series(found["costwarden_requests_total"])
        assert requests == Counter(_key(row) for row in rows)
        for metric, field in [
            ("costwarden_input_tokens_total", "input_tokens"),
            ("costwarden_output_tokens_total", "output_tokens"),
            ("costwarden_cached_input_tokens_total", "cached_input_tokens"),
        ]:
            expected: Counter[SeriesKey] = Counter()
            for row in rows:
                expected[_key(row)] += getattr(row, field)
            assert _by_series(found[metric]) == {k: expected[k] for k in requests}, metric
        assert sum(row.output_tokens for row in rows) > 0

        # Spend: per series the nano-dollars of each row, in all the ledger's own nanos_sum.
        spend = _by_series(found["costwarden_spend_nanodollars_total"])
        per_series: Counter[SeriesKey] = Counter()
        for row in rows:
            per_series[_key(row)] += usd_to_nanos(row.cost_usd)
        assert spend == {k: per_series[k] for k in requests}
        with engine.connect() as conn:
            ledger_nanos, ledger_usd = conn.execute(
                sa.select(nanos_sum(ledger.c.cost_usd), sa.func.count())
            ).one()
        assert ledger_usd == len(rows)
        assert sum(spend.values()) == ledger_nanos > 0
        exact = sum((row.cost_usd for row in rows), Decimal(0))
        assert usd_to_nanos(exact) <= ledger_nanos < usd_to_nanos(exact) + len(rows)
        usd = _by_series(found["costwarden_spend_usd_total"])
        assert sum(usd.values()) == pytest.approx(float(exact), rel=1e-9)

        # Histograms: one TTFT per streamed success, one upstream latency per relayed answer.
        ttft = found["costwarden_time_to_first_token_seconds_count"]
        assert sum(ttft.values()) == sum(1 for row in rows if row.ttft_ms is not None) == 2
        upstream = found["costwarden_upstream_latency_seconds_count"]
        assert sum(upstream.values()) == statuses["success"]
        assert set(dict(k)["provider"] for k in upstream) == {"openai", "anthropic"}

        # Gauges read at scrape time.
        assert found["costwarden_breaker_state"]
        assert all(v == 0 for v in found["costwarden_breaker_state"].values())
        assert found["costwarden_ledger_queue_depth"][()] == 0
        assert found["costwarden_ledger_rows_written_total"][()] == len(rows)
        acme_org = acme.org_id
        budget = (
            ("limit", "daily_usd"),
            ("org", acme_org),
            ("scope", "org"),
            ("scope_id", acme_org),
        )
        acme_nanos = sum(usd_to_nanos(row.cost_usd) for row in rows if row.org_id == acme_org)
        assert found["costwarden_limit_amount"][budget] == 100 * 10**9
        assert found["costwarden_limit_spent"][budget] == acme_nanos > 0
        assert found["costwarden_limit_reserved"][budget] == 0
        assert found["costwarden_limit_remaining"][budget] == 100 * 10**9 - acme_nanos


async def test_org_cap_through_the_gateway(mock: MockServer, tmp_path: Path) -> None:
    """50 orgs, [metrics] max_orgs = 10: ten org labels and "_other" for the other forty."""
    cap = "[metrics]\nmax_orgs = 10\n"
    async with live_gateway(
        mock, f"sqlite:///{tmp_path}/cw.db", tmp_path, admin_token=TOKEN, extra_toml=cap
    ) as gw:
        made = [
            await asyncio.to_thread(repo.create_key, gw.app.engine, org=f"tenant-{i:02d}")
            for i in range(50)
        ]
        gw.app.keys.apply([record for _, record in made])
        chat = [{"role": "user", "content": "hi"}]
        for key, _ in made:
            async with openai.AsyncOpenAI(
                base_url=gw.openai_url, api_key=key, max_retries=0
            ) as client:
                await client.chat.completions.create(model="gpt-4o-mini", messages=chat)  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            r = await http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        found = _scrape_samples(r.text)
        requests = _by_series(found["costwarden_requests_total"])
        orgs = {org for org, _, _, _ in requests}
        first_ten = {record.org_id for _, record in made[:10]}
        assert orgs == first_ten | {"_other"}
        assert requests[("_other", "gpt-4o-mini", "openai", "success")] == 40
        assert sum(requests.values()) == 50
        overflow = found["costwarden_metrics_label_overflow_total"]
        assert overflow[(("label", "org"),)] == 40


async def test_leased_slices_are_counted(
    mock: MockServer, tmp_path: Path, private_redis: str
) -> None:
    """With budgets.leased_slices, /metrics says where requests under a limit were decided:
    against the process's slices, or exactly in Redis (a limit reached), and how many slices
    calls went to Redis."""
    leased = f'[redis]\nurl = "{private_redis}"\n[budgets]\nleased_slices = true\n'
    async with live_gateway(
        mock, f"sqlite:///{tmp_path}/cw.db", tmp_path, admin_token=TOKEN, extra_toml=leased
    ) as gw:
        engine = gw.app.engine
        tight_key, _ = await asyncio.to_thread(repo.create_key, engine, org="tight")
        gw.app.keys.apply(await asyncio.to_thread(repo.list_keys, engine))
        await asyncio.to_thread(
            policy.set_limits, engine, org="acme", scope="org", subject="",
            amounts={"daily_usd": "100"},
        )  # fmt: skip
        # Room for three requests: the limit is reached, and decided in Redis.
        await asyncio.to_thread(
            policy.set_limits, engine, org="tight", scope="org", subject="",
            amounts={"requests_per_minute": 3},
        )  # fmt: skip
        await gw.app.enforcer.refresh()
        chat: Any = [{"role": "user", "content": "hi"}]
        refused = 0
        for key, count in ((gw.key, 20), (tight_key, 6)):
            async with openai.AsyncOpenAI(
                base_url=gw.openai_url, api_key=key, max_retries=0
            ) as client:
                for _ in range(count):
                    try:
                        await client.chat.completions.create(model="gpt-4o-mini", messages=chat)
                    except openai.RateLimitError:
                        refused += 1
        assert refused == 3
        async with httpx.AsyncClient(base_url=gw.base_url) as http:
            r = await http.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        found = _scrape_samples(r.text)
        admissions = found["costwarden_budget_slice_decisions_total"]
        local, exact = admissions[(("path", "local"),)], admissions[(("path", "exact"),)]
        assert local + exact == 26
        assert local >= 15  # acme's: the first ones wait for its first slices call
        assert exact >= refused  # tight's refusals were decided in Redis
        calls = found["costwarden_budget_slice_calls_total"][()]
        assert 1 <= calls <= 26
