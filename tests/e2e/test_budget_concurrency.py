"""The hard case: a $1 hard budget under 1,000 concurrent requests, never overspent.

1,000 requests from the official ``openai`` SDK, no ``max_tokens`` (the gateway must clamp),
half of them asking for ``n`` = 2..8 choices (each billed), the mock answering with varied
lengths, spread over 4 gateway processes that share PostgreSQL and Redis -- two ``costwarden serve
--workers 2``, each two workers on one port -- and the same on the embedded
default (one process, SQLite, in-process counters). Afterwards: the settled spend is at most
$1.00, the counters equal the ledger row by row, no reservation is left, and every refusal
was a 402 (money gone) or a 429 (room held by reservations in flight), nothing else.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from costwarden.mock import MockServer
from costwarden.storage import policy, repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.usage import ledger_rows
from tests.helpers import (
    RedisClusterNodes,
    free_port,
    gateway_toml,
    require_redis,
    scratch_pg_database,
    spawn_gateway,
    stop_gateway,
    wait_healthy,
)

REQUESTS = 1000
BUDGET = Decimal("1.00")
ADMIN_TOKEN = "admin-token-for-concurrency-test"
REDIS_URL = "redis://127.0.0.1:6379/13"


def _extra(redis_url: str | None, leased: bool = False, cluster: bool = False) -> str:
    """$1 per MTok in, $10 per MTok out: answers of 1..1,000 tokens cost up to ~$0.01 each."""
    # A generous command timeout: this test is about the budget holding, and 1,000 requests
    # over 4 processes on 2 busy cores can delay a Redis answer past the 1 s default.
    redis_table = f'[redis]\nurl = "{redis_url}"\ntimeout_seconds = 10\n' if redis_url else ""
    if cluster:
        redis_table += "cluster = true\n"
    return f"""
[budgets]
default_max_output_tokens = 1024
leased_slices = {"true" if leased else "false"}
{redis_table}
[[deployments]]
id = "openai:gpt-4o-mini"
price = {{ input_mtok = "1", output_mtok = "10" }}
"""


@pytest.fixture
def shared_stack(pg_ready: None) -> Iterator[tuple[str, str]]:
    require_redis(REDIS_URL)
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    with scratch_pg_database() as url:
        yield url, REDIS_URL
    client.flushdb()
    client.close()


async def _admin(base: str, path: str) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.get(base + path, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def _served_by_worker(base: str) -> dict[str, float]:
    """Requests counted by each worker of ``serve --workers N`` (its /metrics)."""
    async with aiohttp.ClientSession() as http:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        async with http.get(base + "/metrics", headers=headers) as r:
            assert r.status == 200, await r.text()
            text = await r.text()
    return {
        s.labels["pid"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "costwarden_worker_requests_total"
    }


async def _run(
    mock: MockServer,
    tmp_path: Path,
    database_url: str,
    processes: int,
    redis_url: str | None,
    workers: int = 1,
    *,
    leased: bool = False,
    cluster: bool = False,
) -> None:
    """``processes`` gateways (``serve --workers workers`` each), the requests spread over
    them in turn; ``leased``: with leased slices (the counters are then read from Redis after
    the gateways stopped, which gives the slices back); ``cluster``: ``redis_url`` is a node
    of a Redis Cluster (``[redis] cluster = true``)."""
    mock.state.update(vary_output=True, output_tokens=500, latency_ms=20)
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        key, record = repo.create_key(engine, org="budget", project="burst")
        policy.set_limits(engine, org="budget", scope="org", subject="", amounts={"daily_usd": "1"})
    finally:
        engine.dispose()
    extra = _extra(redis_url, leased, cluster)
    procs = []
    urls = []
    for i in range(processes):
        port = free_port()
        config = tmp_path / f"gw{i}.toml"
        config.write_text(
            gateway_toml(mock.base_url, database_url, port=port, timeout=60, extra=extra)
        )
        log = tmp_path / f"gw{i}.log"
        env = {"COSTWARDEN_ADMIN_TOKEN": ADMIN_TOKEN}
        args = [] if workers == 1 else ["--workers", str(workers)]
        procs.append((spawn_gateway(config, log, env, args), log))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for (proc, log), url in zip(procs, urls, strict=True):
            await wait_healthy(url, proc, log)
        calls_before = mock.state.requests
        clients = [
            openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=40) for url in urls
        ]

        async def one(i: int) -> int:
            client = clients[i % processes]
            # Every other request asks for 2..8 choices: the bound must cover each of them.
            choices = {"n": 2 + i // 2 % 7} if i % 2 else {}
            try:
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"request {i}: tell me something"}],
                    **choices,  # type: ignore[arg-type]
                )
                return 200
            except openai.APIStatusError as exc:
                return exc.status_code

        statuses = await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        counts = collections.Counter(statuses)
        status = await _admin(urls[0], "/admin/budgets?org=budget")
        for url in urls if workers > 1 else ():
            served = await _served_by_worker(url)
            assert len(served) == workers and all(served.values()), served
        for client in clients:
            await client.close()
    finally:
        codes = [await asyncio.to_thread(stop_gateway, proc) for proc, _ in procs]
    for (_, log), code in zip(procs, codes, strict=True):
        assert code in (0, -15), log.read_text()
        if cluster:  # (and so the gateways ran this checkout's code)
            assert "redis cluster from redis://127.0.0.1:" in log.read_text(), log.read_text()

    upstream = mock.state.requests - calls_before
    print(f"\n{processes} process(es) of {workers} worker(s): {dict(counts)}; upstream {upstream}")
    assert set(counts) <= {200, 402, 429}, counts
    # How many fit depends on which requests won the race (1 to 8 choices each): liveness is
    # checked below, where the budget must be used up.
    assert counts[200] > 0 and counts[402] > 0, counts

    engine = create_engine_for(database_url)
    try:
        rows = [r for r in ledger_rows(engine, limit=100_000) if r.org_id == record.org_id]
    finally:
        engine.dispose()
    admitted = [r for r in rows if r.status == "success"]
    # Requests with n choices were admitted and billed for every choice.
    assert any(r.output_tokens > 1024 for r in admitted), "no multi-choice answer was admitted"
    refused = [r for r in rows if r.status == "blocked"]
    assert len(admitted) == counts[200]
    assert {r.http_status for r in refused} <= {402, 429}
    assert all(r.cost_usd == 0 for r in refused)
    spent = sum((r.cost_usd for r in rows), Decimal(0))
    nanos = sum(int((r.cost_usd * 10**9).to_integral_value(rounding=ROUND_CEILING)) for r in rows)
    refusals = collections.Counter(r.http_status for r in refused)
    print(f"settled ${spent} of ${BUDGET}; counter ${Decimal(nanos) / 10**9}")
    print(f"refusals seen by the gateway (SDK retries included): {dict(refusals)}")
    assert spent <= BUDGET
    assert spent > BUDGET - Decimal("0.02"), spent  # the budget was really used up
    # No admitted call's upstream was skipped and no refused call reached it.
    assert upstream == len(admitted)

    (daily,) = [s for s in status["limits"] if s["limit_name"] == "daily_usd"]
    if not leased:  # with slices, "reserved" holds them until the gateways stop
        assert Decimal(daily["spent"]) == Decimal(nanos) / 10**9  # counters == ledger
        assert daily["reserved"] == "0"
        assert Decimal(daily["spent"]) <= BUDGET
    if redis_url:
        client: Any = (
            redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
        )
        # A cluster's KEYS asks one node unless told otherwise: the org's key lives on its shard.
        every = {"target_nodes": redis.RedisCluster.PRIMARIES} if cluster else {}
        try:
            assert client.zcard(f"cw:{{{record.org_id}}}:leases") == 0
            assert client.hlen(f"cw:{{{record.org_id}}}:lease") == 0
            # The org's one calendar counter, read after every gateway stopped.
            (key,) = client.keys(f"cw:{{{record.org_id}}}:c:*", **every)
            if cluster:
                node = client.get_node_from_key(key)
                print(f"the org's counter {key!r} is on the shard at port {node.port}")
            used, reserved = client.hmget(key, ["u", "r"])
            assert int(used or 0) == nanos  # counters == ledger, row by row
            assert int(reserved or 0) == 0
        finally:
            client.close()


async def test_hard_budget_holds_across_four_processes_two_workers_each_port(
    mock: MockServer, tmp_path: Path, shared_stack: tuple[str, str]
) -> None:
    """Separate processes and the workers of one port in one run (each was a test of its
    own, 23 s and 27 s of the suite)."""
    database_url, redis_url = shared_stack
    await _run(mock, tmp_path, database_url, 2, redis_url, workers=2)


async def test_hard_budget_holds_with_leased_slices_on_a_redis_cluster(
    mock: MockServer, tmp_path: Path, pg_ready: None, cluster: RedisClusterNodes
) -> None:
    """The same over a 3-shard Redis Cluster (``[redis] cluster = true``): the org's counters,
    leases and slices live in its one slot, on one shard, each script on that node."""
    with scratch_pg_database() as database_url:
        await _run(mock, tmp_path, database_url, 4, cluster.url, leased=True, cluster=True)


async def test_hard_budget_holds_on_the_embedded_default(mock: MockServer, tmp_path: Path) -> None:
    await _run(mock, tmp_path, f"sqlite:///{tmp_path}/embedded.db", 1, None)
