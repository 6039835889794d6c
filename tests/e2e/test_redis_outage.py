"""Redis stopped under traffic, per ``[redis] on_unavailable``: no hard budget overshot, and
the counters equal the ledger once Redis is back.

One gateway, openai SDK clients in a loop, the org with a hard USD budget that the traffic
spends within the test, its private redis-server stopped with SIGSTOP for a few seconds
(commands time out with their outcome unknown), then resumed:

- ``fail_closed``: while Redis is stopped every request gets 503 ``budget_counters_unavailable``
  (after the first one times out, at once: no round trip until the probe sees Redis answer);
  no request that started after the stop is answered 200.
- ``fail_open``: requests go on being served on the process's own counters, within the room
  the process saw at its last answer; the budget runs out (402) and is never overshot.

Either way, once Redis answers again the Redis counters equal the ledger exactly, no lease is
left and no call is pending. ``pytest -s`` prints the figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import openai
import pytest
import redis

from costwarden.budgets.outage import local_used
from costwarden.budgets.policy import checks_for
from costwarden.budgets.windows import calendar_window
from costwarden.core.money import usd_to_nanos
from costwarden.mock import MockServer
from costwarden.storage.counters import LedgerAggregates
from tests.helpers import (
    PRICEY,
    LiveGateway,
    counters_minus_ledger,
    live_gateway,
    redis_pid,
    seconds_until_unreserved,
    set_limits,
)

WORKERS = 6
# Redis is stopped once BEFORE_OK requests were answered 200 (the gateway has its figures);
# it stays down until the budget refused a request started while it was (fail_open: the
# local counters ran out; the figures are printed), DOWN_MAX at most, DOWN when fail_closed.
BEFORE_OK, DOWN, DOWN_MAX, AFTER = 30, 2.0, 8.0, 2.0
LIMIT_USD = "0.35"
TWO_LIMIT_USD = "0.8"
TZ = ZoneInfo("UTC")


async def _until(done: Callable[[], bool], within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not done() and loop.time() < deadline:
        await asyncio.sleep(0.02)


def _refused_by_budget_since(answers: list[_Answer], since: float) -> bool:
    return any(a.started > since and a.status in (402, 429) for a in answers)


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    started: float  # loop time the request was sent
    at: float  # loop time its answer arrived
    status: int
    code: str | None


async def _worker(gw: LiveGateway, stop: asyncio.Event, answers: list[_Answer]) -> None:
    loop = asyncio.get_running_loop()
    client = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0)
    async with client:
        while not stop.is_set():
            started = loop.time()
            try:
                await client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "hi"}],
                    max_tokens=16,
                )
                status, code = 200, None
            except openai.APIStatusError as exc:
                status = exc.status_code
                body = exc.body if isinstance(exc.body, dict) else {}
                code = str(body.get("code"))
            answers.append(_Answer(started, loop.time(), status, code))
            if status != 200:
                await asyncio.sleep(0.05)  # as a client would, briefly


def _leases_left(url: str, org_id: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.zcard(f"cw:{{{org_id}}}:leases")) + int(
            client.hlen(f"cw:{{{org_id}}}:lease")
        )
    finally:
        client.close()


async def _ledger_spend_nanos(gw: LiveGateway, org_id: str) -> int:
    """The org's spend today in the ledger, each row rounded up to a nano-dollar."""
    await gw.app.ledger.flush()
    start = calendar_window("day", gw.app.clock(), gw.app.enforcer.tz).start
    totals = await asyncio.to_thread(
        LedgerAggregates(gw.app.engine).totals,
        scope="org",
        since=datetime.fromtimestamp(start, UTC),
        org_id=org_id,
    )
    return sum(usd for usd, _tokens, _requests in totals.values())


def _restart_redis(url: str, pid: int, cwd: Path) -> subprocess.Popen[bytes]:
    """Kill the redis-server of ``url`` and start an empty one on its port."""
    os.kill(pid, signal.SIGKILL)
    port = str(urlsplit(url).port)
    binary = shutil.which("redis-server")
    assert binary is not None
    args = [binary, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    for _ in range(100):  # until the old one's port is free
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, cwd=cwd)
        try:
            proc.wait(0.1)
        except subprocess.TimeoutExpired:
            return proc
    raise AssertionError("redis-server did not restart")


@pytest.mark.parametrize(
    ("policy", "how"),
    [("fail_closed", "stop"), ("fail_open", "stop"), ("fail_open", "restart")],
)
async def test_redis_stopped_under_traffic(
    policy: str, how: str, mock: MockServer, tmp_path: Path, private_redis: str
) -> None:
    """``stop``: SIGSTOP, then SIGCONT; ``restart``: SIGKILL, then an empty redis-server on
    the same port (counters rebuilt from the ledger)."""
    mock.state.update(output_tokens=2, latency_ms=20)
    extra = PRICEY + f'\n[redis]\nurl = "{private_redis}"\non_unavailable = "{policy}"\n'
    db = f"sqlite:///{tmp_path}/outage.db"
    loop = asyncio.get_running_loop()
    restarted: subprocess.Popen[bytes] | None = None
    try:
        async with live_gateway(mock, db, tmp_path, extra_toml=extra) as gw:
            await set_limits(gw, daily_usd=LIMIT_USD, requests_per_minute=1_000_000)
            enforcer = gw.app.enforcer
            org_id = enforcer.book.limits[0].org_id
            pid = redis_pid(private_redis)
            answers: list[_Answer] = []
            modes: set[str] = set()
            stop = asyncio.Event()
            workers = [asyncio.create_task(_worker(gw, stop, answers)) for _ in range(WORKERS)]
            try:
                await _until(lambda: sum(a.status == 200 for a in answers) >= BEFORE_OK, 10)
                spent_before = await _ledger_spend_nanos(gw, org_id)
                stopped_at = loop.time()
                os.kill(pid, signal.SIGSTOP if how == "stop" else signal.SIGKILL)
                try:
                    while loop.time() < stopped_at + (DOWN_MAX if policy == "fail_open" else DOWN):
                        modes.add(enforcer.mode)
                        if policy == "fail_open" and _refused_by_budget_since(answers, stopped_at):
                            break
                        await asyncio.sleep(0.05)
                finally:
                    if how == "stop":
                        os.kill(pid, signal.SIGCONT)
                    else:
                        restarted = _restart_redis(private_redis, pid, tmp_path)
                resumed_at = loop.time()
                await asyncio.sleep(AFTER)
            finally:
                stop.set()
                await asyncio.gather(*workers)
            back = enforcer.mode
            unreserved_s = await seconds_until_unreserved(gw, org_id, within=5.0)
            diffs, _seams = await counters_minus_ledger(gw, org_id)
            spent = await _ledger_spend_nanos(gw, org_id)
            pending = len(enforcer._pending)
            leases = _leases_left(private_redis, org_id)
    finally:
        if restarted is not None:
            restarted.terminate()
            restarted.wait(10)

    limit = usd_to_nanos(Decimal(LIMIT_USD))
    down = [a for a in answers if stopped_at < a.started and a.at < resumed_at]
    started_down = [a for a in answers if stopped_at < a.started < resumed_at]
    ok_down = sum(1 for a in started_down if a.status == 200)
    by_kind: dict[str, int] = {}
    for a in answers:
        kind = str(a.status) if a.code is None else f"{a.status} {a.code}"
        by_kind[kind] = by_kind.get(kind, 0) + 1
    figures = {
        "policy": policy,
        "how": how,
        "answers": by_kind,
        "started_while_down": len(started_down),
        "ok_started_while_down": ok_down,
        "503_while_down": sum(1 for a in down if a.status == 503),
        "refused_by_budget_while_down": sum(1 for a in down if a.status in (402, 429)),
        "modes_while_down": sorted(modes),
        "mode_after": back,
        "spent_before_stop_usd": spent_before / 1e9,
        "spent_usd": spent / 1e9,
        "limit_usd": limit / 1e9,
        "counter_minus_ledger": diffs,
        "reservations_gone_after_traffic_s": unreserved_s,
        "leases_left": leases,
        "pending_calls": pending,
    }
    print("redis outage figures:", figures)
    assert spent <= limit, figures  # the hard budget held
    assert diffs == {} and leases == 0 and pending == 0, figures
    assert back == "shared" and unreserved_s < 1.0, figures
    unexpected = set(by_kind) - {
        "200",
        "402 budget_exceeded",
        "429 budget_reservations_in_flight",
        "503 budget_counters_unavailable",
    }
    assert not unexpected, figures
    if policy == "fail_closed":
        assert modes - {"shared"} == {"refusing"}, figures  # "shared" until a timeout
        assert ok_down == 0 and figures["503_while_down"] > 20, figures
    else:
        assert modes - {"shared"} == {"local"} and figures["503_while_down"] == 0, figures
        assert spent >= limit * 0.9, figures  # the budget did run out
        # served while down, on its own counters, until the budget ran out there
        assert ok_down >= 10 and figures["refused_by_budget_while_down"] > 0, figures


async def test_two_processes_fail_open_share_the_room(
    mock: MockServer, tmp_path: Path, private_redis: str, pg_url: str
) -> None:
    """Two gateways (one database, one Redis), clients on both: while Redis is stopped each
    admits on its own counters within half of the room it last saw, and together they stay
    within the hard budget; after Redis returns, the counters equal the ledger."""
    mock.state.update(output_tokens=2, latency_ms=20)
    extra = PRICEY + f'\n[redis]\nurl = "{private_redis}"\non_unavailable = "fail_open"\n'
    loop = asyncio.get_running_loop()
    async with (
        live_gateway(mock, pg_url, tmp_path, extra_toml=extra) as one,
        live_gateway(mock, pg_url, tmp_path, extra_toml=extra) as two,
    ):
        gateways = (one, two)
        await set_limits(one, daily_usd=TWO_LIMIT_USD)  # room left after the start-up wait
        await two.app.enforcer.refresh()
        org_id = one.app.enforcer.book.limits[0].org_id
        pid = redis_pid(private_redis)
        answers: list[_Answer] = []
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(_worker(gw, stop, answers))
            for gw in gateways
            for _ in range(WORKERS // 2)
        ]
        shares: list[tuple[int, int, int]] = []  # (share, room seen, used locally)
        try:
            await _until(lambda: sum(a.status == 200 for a in answers) >= BEFORE_OK, 10)
            # Each has counted the other (heartbeats every second); the later one admits
            # locally only once the first has (two heartbeats after its own first).
            stores = [(g.app.enforcer.store, g.app.clock) for g in gateways]
            await _until(lambda: all(s.processes == 2 and s.counted(c()) for s, c in stores), 4)
            processes = [gw.app.enforcer.store.processes for gw in gateways]
            stopped_at = loop.time()
            os.kill(pid, signal.SIGSTOP)
            try:
                await _until(lambda: _refused_by_budget_since(answers, stopped_at), DOWN_MAX)
                for gw in gateways:  # what each process allowed itself: half its room
                    enforcer = gw.app.enforcer
                    fallback = enforcer._fallback
                    assert fallback is not None and fallback.processes == 2
                    (day,) = checks_for(enforcer.book.for_org(org_id), gw.app.clock(), TZ)
                    figure = fallback.figures.get(day.key)
                    assert figure is not None
                    share = day.limit.amount - local_used(day.limit.amount, figure.consumed, 2)
                    (view,) = fallback.store.peek([day])
                    used_locally = view.used + view.reserved - (day.limit.amount - share)
                    shares.append((share, day.limit.amount - figure.consumed, used_locally))
            finally:
                os.kill(pid, signal.SIGCONT)
            resumed_at = loop.time()
            await asyncio.sleep(AFTER)
        finally:
            stop.set()
            await asyncio.gather(*workers)
        for gw in gateways:
            await gw.app.ledger.flush()
        modes = [gw.app.enforcer.mode for gw in gateways]
        diffs, _seams = await counters_minus_ledger(one, org_id)
        spent = await _ledger_spend_nanos(one, org_id)
        pending = [len(gw.app.enforcer._pending) for gw in gateways]
        leases = _leases_left(private_redis, org_id)
    limit = usd_to_nanos(Decimal(TWO_LIMIT_USD))
    started_down = [a for a in answers if stopped_at < a.started < resumed_at]
    figures = {
        "processes": processes,
        "started_while_down": len(started_down),
        "ok_started_while_down": sum(1 for a in started_down if a.status == 200),
        "503_while_down": sum(1 for a in started_down if a.status == 503),
        "share_room_used_locally_usd": [[v / 1e9 for v in t] for t in shares],
        "spent_usd": spent / 1e9,
        "limit_usd": limit / 1e9,
        "modes_after": modes,
        "counter_minus_ledger": diffs,
        "leases_left": leases,
        "pending_calls": pending,
    }
    print("two-process redis outage figures:", figures)
    assert processes == [2, 2], figures
    assert spent <= limit, figures
    assert figures["ok_started_while_down"] >= 10, figures
    for share, room, used_locally in shares:
        assert 2 * share <= room and used_locally <= share, figures
    assert diffs == {} and leases == 0 and pending == [0, 0] and modes == ["shared"] * 2, figures
