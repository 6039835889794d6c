"""A Redis that stalls (SIGSTOP for 8 s) under traffic: every request still counts once.

While Redis is stopped, commands time out client-side with their outcome unknown: a reserve
may still run when Redis resumes (reserving under a lease nobody holds), a settle may run
and then be retried. Afterwards the counters must equal the ledger exactly, counter by
counter, and the org must not be held up by reservations in flight for more than a second
after Redis answers again.

The org has hard USD/token/request budgets and rate limits. The USD budget leaves ample room
for the traffic's spend and its reservations in flight, but not for reservations left behind
by reserves that time out during the stall (each reserves up to 4,096 output tokens at
$1,000/MTok): if those were kept until their leases expire, the org would see 429
``budget_reservations_in_flight``.

The test prints what it measured (``pytest -s``): answers by kind, when the 503s and 429s
came relative to SIGSTOP / SIGCONT, and each counter minus the ledger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import aiohttp
import orjson
import redis

from costwarden.mock import MockServer
from tests.helpers import (
    PRICEY,
    LiveGateway,
    counters_minus_ledger,
    live_gateway,
    redis_pid,
    seconds_until_unreserved,
    set_limits,
)

WORKERS = 8
BEFORE, STALL, AFTER = 2.0, 8.0, 4.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    at: float  # loop time the answer arrived
    status: int
    code: str | None


async def _worker(gw: LiveGateway, stop: asyncio.Event, answers: list[_Answer]) -> None:
    loop = asyncio.get_running_loop()
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {gw.key}"}
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            async with http.post(
                gw.openai_url + "/chat/completions", json=payload, headers=headers
            ) as r:
                body = orjson.loads(await r.read())
            code = None if r.status == 200 else body["error"]["code"]
            answers.append(_Answer(loop.time(), r.status, code))
            if r.status != 200:
                await asyncio.sleep(0.05)  # as an SDK would, briefly


def _leftovers(url: str, org_id: str) -> dict[str, int]:
    """Leases still recorded, and tombstones left by settles that found no lease."""
    client = redis.Redis.from_url(url)
    try:
        return {
            "leases": client.zcard(f"cw:{{{org_id}}}:leases"),
            "lease_entries": client.hlen(f"cw:{{{org_id}}}:lease"),
            "tombstones": client.zcard(f"cw:{{{org_id}}}:done"),
        }
    finally:
        client.close()


async def test_redis_stall_counts_every_request_once(
    mock: MockServer, tmp_path: Path, private_redis: str
) -> None:
    mock.state.update(output_tokens=2, latency_ms=20)
    extra = PRICEY + f'\n[redis]\nurl = "{private_redis}"\n'
    db = f"sqlite:///{tmp_path}/stall.db"
    loop = asyncio.get_running_loop()
    async with live_gateway(mock, db, tmp_path, extra_toml=extra) as gw:
        await set_limits(
            gw,
            daily_usd="45",
            daily_tokens=100_000_000,
            daily_requests=1_000_000,
            requests_per_minute=1_000_000,
            tokens_per_minute=100_000_000,
        )
        org_id = gw.app.enforcer.book.limits[0].org_id
        pid = redis_pid(private_redis)
        answers: list[_Answer] = []
        stop = asyncio.Event()
        workers = [asyncio.create_task(_worker(gw, stop, answers)) for _ in range(WORKERS)]
        try:
            await asyncio.sleep(BEFORE)
            stopped_at = loop.time()
            os.kill(pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(STALL)
            finally:
                os.kill(pid, signal.SIGCONT)
            resumed_at = loop.time()
            await asyncio.sleep(AFTER)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        settle_seconds = await seconds_until_unreserved(gw, org_id, within=5.0)
        diffs, seams = await counters_minus_ledger(gw, org_id)
        pending = len(gw.app.enforcer._pending)
    left = _leftovers(private_redis, org_id)

    inflight = [a.at - resumed_at for a in answers if a.code == "budget_reservations_in_flight"]
    unavailable = [a for a in answers if a.code == "budget_counters_unavailable"]
    ok = [a for a in answers if a.status == 200]
    other = {(a.status, a.code) for a in answers if a.status != 200} - {
        (429, "budget_reservations_in_flight"),
        (503, "budget_counters_unavailable"),
    }
    figures = {
        "answers": len(answers),
        "ok": len(ok),
        "ok_after_resume": sum(1 for a in ok if a.at > resumed_at),
        "503_unavailable": len(unavailable),
        "first_503_after_stop_s": round(min(a.at for a in unavailable) - stopped_at, 3)
        if unavailable
        else None,
        "last_503_after_resume_s": round(max(a.at for a in unavailable) - resumed_at, 3)
        if unavailable
        else None,
        "429_inflight": len(inflight),
        "last_429_inflight_after_resume_s": round(max(inflight), 3) if inflight else None,
        "stall_s": round(resumed_at - stopped_at, 3),
        "reservations_gone_after_traffic_s": settle_seconds,
        "counter_minus_ledger": diffs,
        "rolling_bucket_seams": seams,
        "redis_after": left,
        "pending_calls": pending,
    }
    print("redis stall figures:", figures)
    assert not other, other
    assert len(ok) > 500 and unavailable  # traffic flowed, and the stall was felt
    assert sum(1 for a in ok if a.at > resumed_at + 1) > 100  # and it came back
    assert diffs == {}, figures
    assert settle_seconds < 1.0, figures
    assert pending == 0 and left["leases"] == left["lease_entries"] == 0, figures
    assert not inflight or max(inflight) <= 1.0, figures
