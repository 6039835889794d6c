"""Restarts cost nothing: spend made before a gateway restart or a Redis FLUSHALL still counts.

Counters are a cache of the ledger. The embedded gateway rebuilds them on startup; with Redis
they survive a gateway restart, and when Redis loses them (FLUSHALL, here on a private
redis-server so nothing else is wiped) the next request rebuilds them from the ledger before
anything is admitted.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import redis

from costwarden.budgets.status import live_status
from costwarden.mock import MockServer
from tests.helpers import (
    PRICEY,
    T0,
    FakeClock,
    LiveGateway,
    live_gateway,
    set_limits,
)
from tests.helpers import chat as _chat


async def _spent(gw: LiveGateway, name: str = "daily_usd") -> Decimal:
    org_id = gw.app.enforcer.book.limits[0].org_id
    rows = await live_status(
        gw.app.enforcer.book, gw.app.enforcer.store, org_id, gw.app.clock(), "UTC"
    )
    (row,) = [r for r in rows if r.limit.name == name]
    assert row.reserved == 0
    return Decimal(row.spent) / 10**9


async def _spend_until_refused(gw: LiveGateway, most: int = 20) -> int:
    for n in range(most):
        status, _, _ = await _chat(gw)
        if status == 402:
            return n
        assert status == 200
    raise AssertionError("budget never ran out")


def _budgets(redis_url: str | None) -> str:
    return PRICEY + (f'\n[redis]\nurl = "{redis_url}"\n' if redis_url else "")


@pytest.mark.parametrize("with_redis", [False, True], ids=["embedded", "redis"])
async def test_spend_survives_a_gateway_restart(
    mock: MockServer, tmp_path: Path, request: pytest.FixtureRequest, with_redis: bool
) -> None:
    mock.state.update(output_tokens=1000)  # $1 per call
    clock = FakeClock(T0)
    db = f"sqlite:///{tmp_path}/restart.db"
    extra = _budgets(request.getfixturevalue("private_redis") if with_redis else None)
    async with live_gateway(mock, db, tmp_path, extra_toml=extra, clock=clock) as gw:
        await set_limits(gw, daily_usd="5")
        for _ in range(3):
            assert (await _chat(gw))[0] == 200
        before = await _spent(gw)
    assert Decimal("3") < before < Decimal("3.01")
    async with live_gateway(mock, db, tmp_path, extra_toml=extra, clock=clock) as gw:
        assert await _spent(gw) == before  # rebuilt from the ledger (or kept in Redis)
        # $2 left: two more calls (the second clamped), then 402.
        assert await _spend_until_refused(gw) == 2
        assert Decimal("4.9") < await _spent(gw) <= 5


async def test_spend_survives_redis_flushall(
    mock: MockServer, tmp_path: Path, private_redis: str
) -> None:
    mock.state.update(output_tokens=1000)
    clock = FakeClock(T0)
    db = f"sqlite:///{tmp_path}/flush.db"
    async with live_gateway(
        mock, db, tmp_path, extra_toml=_budgets(private_redis), clock=clock
    ) as gw:
        await set_limits(gw, daily_usd="5", requests_per_hour=100)
        for _ in range(3):
            assert (await _chat(gw))[0] == 200
        before = await _spent(gw)
        requests_before = await _spent(gw, "requests_per_hour") * 10**9
        client = redis.Redis.from_url(private_redis)
        try:
            assert client.dbsize() > 0
            client.flushall()
            assert client.dbsize() == 0
        finally:
            client.close()
        # The next request finds the counters gone, rebuilds them from the ledger first.
        status, _, headers = await _chat(gw)
        assert status == 200
        assert headers["x-ratelimit-remaining-requests"] == "96"
        after = await _spent(gw)
        assert after > before  # the three earlier calls still count, plus this one
        assert requests_before == 3
        assert await _spend_until_refused(gw) == 1  # $1 left: one (clamped) call, then 402
        assert Decimal("4.9") < await _spent(gw) <= 5
