"""The enforcer when Redis answers are lost: what timed out is resent or given back at once.

A live gateway whose Redis (a private redis-server) is reached through a :class:`FlakyLink`
that can throw Redis's answers away: the command runs, the gateway times out
(``[redis] timeout_seconds = 0.2``) not knowing. The poll that reloads limits is slowed down to
a minute, so that only the enforcer's own retries can repair anything within the tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio

from costwarden.budgets.policy import View, checks_for
from costwarden.budgets.redis_store import RedisStore
from costwarden.mock import MockServer
from tests.helpers import (
    PRICEY,
    FlakyLink,
    LiveGateway,
    chat,
    counters_minus_ledger,
    live_gateway,
    process_redis,
    seconds_until_unreserved,
    set_limits,
)


@pytest.fixture
async def link(private_redis: str) -> AsyncIterator[FlakyLink]:
    async with FlakyLink(private_redis) as flaky:
        yield flaky


@pytest.fixture
async def gw(
    mock: MockServer, tmp_path: Path, link: FlakyLink
) -> AsyncIterator[LiveGateway]:
    extra = (
        PRICEY
        + f'\n[redis]\nurl = "{link.url}"\ntimeout_seconds = 0.2\n'
        + "[budgets]\nrefresh_seconds = 60\n"
    )
    db = f"sqlite:///{tmp_path}/enforcer.db"
    async with live_gateway(mock, db, tmp_path, extra_toml=extra) as live:
        await set_limits(live, daily_usd="50", requests_per_minute=100)
        yield live


async def _direct_views(gw: LiveGateway, url: str) -> dict[str, View]:
    """The org's counters by metric, read straight from Redis (around the link)."""
    enforcer = gw.app.enforcer
    now = gw.app.clock()
    checks = checks_for(enforcer.book.for_org(_org(gw)), now, enforcer.tz)
    async with process_redis(url) as client:
        store = RedisStore(client)
        await store.start()
        try:
            views = await store.views(checks, now)
        finally:
            await store.close()
    return {c.limit.metric: v for c, v in zip(checks, views, strict=True)}


async def _counted_once(gw: LiveGateway) -> None:
    """Counters agree with the ledger. A rolling counter's bucket may differ by a second at
    a seam: a request counts in the second it reserved in, its ledger row in the second it
    arrived in (tests/helpers.py, counters_minus_ledger)."""
    diffs, seams = await counters_minus_ledger(gw, _org(gw))
    assert diffs == {}
    for buckets in seams.values():
        assert all(d == -1 and buckets.get(b + 1) == 1 for b, d in buckets.items() if d < 0)
        assert sum(buckets.values()) == 0, seams


def _org(gw: LiveGateway) -> str:
    return gw.app.enforcer.book.limits[0].org_id


async def _until(predicate: Callable[[], Awaitable[bool]], within: float = 5.0) -> float:
    """Seconds until ``predicate()`` holds (checked every 10 ms); fails after ``within``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await predicate():
        assert loop.time() - start < within, "never happened"
        await asyncio.sleep(0.01)
    return loop.time() - start


async def test_a_settle_whose_answer_is_lost_is_sent_again_at_once_and_counts_once(
    gw: LiveGateway, link: FlakyLink, private_redis: str
) -> None:
    gw.mock.state.update(output_tokens=2, latency_ms=300)
    call = asyncio.create_task(chat(gw))
    await asyncio.sleep(0.15)  # reserved; the upstream answers 0.15 s later
    # Only the scripts' answers: a connection the settle opens must get through its handshake.
    link.drop_only = b"EVALSHA"
    link.drop_answers = True
    status, _, _ = await call
    assert status == 200
    assert len(gw.app.enforcer._pending) == 1  # the settle timed out ...

    async def ran() -> bool:  # (on a loaded machine the link may pass it on after its timeout)
        views = await _direct_views(gw, private_redis)
        return views["usd"].used > 0 and views["usd"].reserved == 0

    await _until(ran)  # ... yet it ran
    views = await _direct_views(gw, private_redis)
    assert sum(views["requests"].buckets.values()) == 1

    async def sent() -> bool:
        return not gw.app.enforcer._pending

    link.drop_answers = False
    # resent within the retries' backoff (0.2 s at most), not at the next poll (a minute)
    assert await _until(sent) < 1.0
    await _counted_once(gw)


async def _reserve_times_out(gw: LiveGateway, link: FlakyLink) -> None:
    """A request whose reserve is held back by the link: 503, nothing sent upstream. (Only
    the org's commands are held: the circuit breakers share the link.)"""
    link.hold_only = f"{{{_org(gw)}}}".encode()
    link.holding = True
    status, body, headers = await chat(gw)
    assert status == 503 and body["error"]["code"] == "budget_counters_unavailable"
    assert headers["retry-after"] == "1"
    assert gw.mock.state.requests == 0


async def test_a_reserve_that_runs_after_its_timeout_is_given_back_at_once(
    gw: LiveGateway, link: FlakyLink, private_redis: str
) -> None:
    await _reserve_times_out(gw, link)
    link.release(0)  # the reserve runs late: room held under a lease no request will settle

    async def reserved() -> bool:
        views = await _direct_views(gw, private_redis)
        return views["usd"].reserved > 0 and sum(views["requests"].buckets.values()) == 1

    await _until(reserved)
    link.holding = False  # Redis answers again
    assert await seconds_until_unreserved(gw, _org(gw), within=5.0) < 0.3
    views = await _direct_views(gw, private_redis)
    assert views["usd"] == View() and sum(views["requests"].buckets.values()) == 0
    await _counted_once(gw)
    # fail_closed refuses until its probe sees Redis answer (every 0.25 s at most), then
    # counts again.
    await _until(lambda: asyncio.sleep(0, gw.app.enforcer.mode == "shared"), within=2.0)
    assert (await chat(gw))[0] == 200


async def test_a_reserve_that_runs_after_it_was_given_up_reserves_nothing(
    gw: LiveGateway, link: FlakyLink, private_redis: str
) -> None:
    await _reserve_times_out(gw, link)
    await _until(lambda: asyncio.sleep(0, link.held > 1))  # the abandon is sent (and held)
    link.release(*range(1, link.held))  # it runs first ...

    async def tombstoned() -> bool:
        client = redis.asyncio.Redis.from_url(private_redis)
        try:
            return bool(await client.zcard(f"cw:{{{_org(gw)}}}:done"))
        finally:
            await client.aclose()

    await _until(tombstoned)
    link.release(0)  # ... then the reserve
    link.holding = False
    await _until(lambda: asyncio.sleep(0, not gw.app.enforcer._pending))
    assert await _direct_views(gw, private_redis) == {"usd": View(), "requests": View()}
    await _counted_once(gw)
