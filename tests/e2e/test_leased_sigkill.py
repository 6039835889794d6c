"""Leased slices when a gateway process dies: SIGKILL one of four in the middle of a storm on
a $1 hard budget.

What must hold: the settled spend (the ledger, durable: every answered request has its row)
never passes $1; the dead process's slices are held until its slice lease expires
(``budgets.lease_seconds``, 3 s here), then purged by the next request of anyone -- what it may
have admitted without telling counted as spent, the rest given back -- and that part is then
replaced by what its ledger rows hold, so the counter equals the ledger again; the survivors
give their slices back at once on SIGTERM (no lease, nothing reserved).
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import time
from decimal import ROUND_CEILING, Decimal
from pathlib import Path

import openai
import redis

from costwarden.mock import MockServer
from costwarden.storage import policy, repo
from costwarden.storage.db import create_engine_for
from costwarden.storage.migrate import migrate
from costwarden.storage.usage import ledger_rows
from tests.e2e.event_streams import REDIS_URL  # the shared_stack fixture's
from tests.helpers import (
    free_port,
    gateway_toml,
    spawn_gateway,
    stop_gateway,
    wait_healthy,
)

REQUESTS = 1000
PROCESSES = 4
BUDGET = Decimal("1.00")
LEASE_SECONDS = 3.0
KILL_AFTER = 40  # answered requests: about a fifth of what $1 buys here
CONCURRENCY = 64  # requests in flight at once (1,000 at once leave no room for slices)
EXTRA = f"""
[budgets]
default_max_output_tokens = 1024
leased_slices = true
lease_seconds = {LEASE_SECONDS}
[redis]
url = "{REDIS_URL}"
timeout_seconds = 10
[[deployments]]
id = "openai:gpt-4o-mini"
price = {{ input_mtok = "1", output_mtok = "10" }}
"""


def _slice_leases(client: redis.Redis, key: str, pid: int) -> list[str]:
    """The slice lease of the gateway process ``pid`` (``S:{pid}-{uuid}``), if it holds one."""
    return [m.decode() for m in client.zrange(key, 0, -1) if m.decode().startswith(f"S:{pid}-")]


async def _one_more(client: openai.AsyncOpenAI) -> None:
    """One request after the storm (the budget is gone: refused), so that its gateway
    touches the org's counters again."""
    try:
        await client.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "anything left?"}]
        )
    except openai.APIStatusError as exc:
        assert exc.status_code in (402, 429)


def _nanos(value: Decimal) -> int:
    return int((value * 10**9).to_integral_value(rounding=ROUND_CEILING))


async def test_sigkill_of_one_of_four_leasing_processes_mid_storm(
    mock: MockServer, tmp_path: Path, shared_stack: str
) -> None:
    database_url = shared_stack
    mock.state.update(vary_output=True, output_tokens=500, latency_ms=20)
    engine = create_engine_for(database_url)
    try:
        migrate(engine)
        key, record = repo.create_key(engine, org="kill", project="storm")
        policy.set_limits(engine, org="kill", scope="org", subject="", amounts={"daily_usd": "1"})
    finally:
        engine.dispose()
    org = record.org_id
    procs, urls = [], []
    for i in range(PROCESSES):
        port = free_port()
        config = tmp_path / f"gw{i}.toml"
        config.write_text(
            gateway_toml(mock.base_url, database_url, port=port, timeout=60,
                         ledger_mode="durable", extra=EXTRA)  # fmt: skip
        )
        log = tmp_path / f"gw{i}.log"
        procs.append((spawn_gateway(config, log), log))
        urls.append(f"http://127.0.0.1:{port}")
    victim = procs[1][0]
    client = redis.Redis.from_url(REDIS_URL)
    leases_key = f"cw:{{{org}}}:leases"
    try:
        for (proc, log), url in zip(procs, urls, strict=True):
            await wait_healthy(url, proc, log)
        # The victim's client never retries (a retry would wait on a dead port): its
        # requests that are refused or cut go to the next process.
        clients = [
            openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0 if i == 1 else 40)
            for i, url in enumerate(urls)
        ]
        killed_at: float | None = None
        dead_slices: list[str] = []  # the victim's slice lease, when it was killed
        statuses: collections.Counter[int | str] = collections.Counter()

        async def one(i: int) -> None:
            for attempt in range(PROCESSES):
                target = (i + attempt) % PROCESSES
                if target == 1 and killed_at is not None:
                    continue  # a client of the dead process goes elsewhere
                try:
                    await clients[target].chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": f"request {i}: go on"}],
                    )
                    statuses[200] += 1
                except openai.APIStatusError as exc:
                    if target == 1 and exc.status_code == 429:
                        continue
                    statuses[exc.status_code] += 1
                except openai.APIConnectionError:
                    if target != 1:
                        raise
                    statuses["cut by the kill"] += 1
                    continue  # its process died under it: another one serves it
                return

        async def paced(i: int) -> None:
            async with concurrency:
                await one(i)

        async def kill() -> float:
            """SIGKILL the victim once enough was answered and it holds a slice lease; then
            how long until that lease was purged (seconds after the kill)."""
            nonlocal killed_at
            while statuses[200] < KILL_AFTER or not _slice_leases(client, leases_key, victim.pid):
                await asyncio.sleep(0.005)
            dead_slices.extend(_slice_leases(client, leases_key, victim.pid))
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            while _slice_leases(client, leases_key, victim.pid):
                await asyncio.sleep(0.05)
                assert time.monotonic() - killed_at < LEASE_SECONDS + 10, "the dead lease stayed"
            return time.monotonic() - killed_at

        concurrency = asyncio.Semaphore(CONCURRENCY)
        killer = asyncio.create_task(kill())
        await asyncio.gather(*(paced(i) for i in range(REQUESTS)))
        assert killed_at is not None
        # Had the storm ended before the lease expired, the next request of anyone purges it.
        while not killer.done():
            await asyncio.sleep(0.2)
            await _one_more(clients[0])
        returned_after = await killer
        # Then a survivor reads what the dead process's ledger rows hold and frees the rest of
        # what the purge counted (its next request or call finds the stranded entry).
        stranded_key = f"cw:{{{org}}}:stranded"
        while client.hlen(stranded_key):
            await asyncio.sleep(0.2)
            await _one_more(clients[0])
            assert time.monotonic() - killed_at < LEASE_SECONDS + 20, "never unstranded"
        freed_after = time.monotonic() - killed_at
        for c in clients:
            await c.close()
    finally:
        codes = []
        for proc, _ in procs:
            codes.append(await asyncio.to_thread(stop_gateway, proc))
    # SIGTERM: each survivor gave its slices back before it exited.
    assert codes[1] == -signal.SIGKILL
    for code, (_, log) in zip(codes[:1] + codes[2:], procs[:1] + procs[2:], strict=True):
        assert code in (0, -15), log.read_text()
    assert client.zcard(leases_key) == 0
    assert client.hlen(f"cw:{{{org}}}:lease") == 0
    (counter,) = client.keys(f"cw:{{{org}}}:c:*")
    used, reserved = (int(v or 0) for v in client.hmget(counter, ["u", "r"]))
    client.close()

    engine = create_engine_for(database_url)
    try:
        rows = [r for r in ledger_rows(engine, limit=100_000) if r.org_id == org]
    finally:
        engine.dispose()
    spent = sum((r.cost_usd for r in rows), Decimal(0))
    # Which survivor settled the purged slice by the dead process's rows (it logs it).
    unstranded = [line.split(" WARNING ", 1)[0] + " " + line.rsplit(": ", 1)[-1]
                  for _, log in procs for line in log.read_text().splitlines()
                  if "counted by its ledger rows" in line]  # fmt: skip
    nanos = sum(_nanos(r.cost_usd) for r in rows)
    print(
        f"\nstatuses {dict(statuses)}; settled ${spent} of ${BUDGET}; counter "
        f"${Decimal(used) / 10**9}; the dead process's slice lease purged "
        f"{returned_after:.2f} s after the kill (lease {LEASE_SECONDS:g} s), no stranded part "
        f"left {freed_after:.2f} s after it; {unstranded}"
    )
    assert spent <= BUDGET
    assert reserved == 0
    assert used == nanos  # counters == ledger, the dead process's rows included
    assert dead_slices, "the killed process held no slice: the test proved nothing"
    assert unstranded, "no survivor settled the dead slice by its ledger rows"
    assert returned_after <= LEASE_SECONDS + 3
    assert statuses[200] > 0 and statuses[402] > 0
