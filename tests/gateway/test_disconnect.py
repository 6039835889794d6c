"""A client that gives up: the upstream call is cancelled, the request is billed for what it
was estimated to use, and the reservation is settled (counters = ledger); or, when
``server.cancel_on_disconnect`` is off, the call runs to completion and is billed in full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from costwarden.budgets.status import live_status
from costwarden.core.money import usd_to_nanos
from costwarden.core.records import LedgerRecord
from costwarden.gateway.asgi import CLIENT_GONE, ON_DISCONNECT
from costwarden.gateway.streaming import Disconnect, client_gone
from costwarden.mock import MockServer
from costwarden.storage.usage import ledger_rows
from tests.helpers import LiveGateway, configure_mock, live_gateway, set_limits

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(mock: MockServer, database_url: str, tmp_path: Path) -> AsyncIterator[LiveGateway]:
    async with live_gateway(mock, database_url, tmp_path, timeout=30.0) as g:
        await set_limits(g, daily_usd="5")  # a reservation for every request to settle
        yield g


async def _give_up(gw: LiveGateway, body: dict[str, Any], after: float) -> None:
    timeout = aiohttp.ClientTimeout(total=after)
    headers = {"authorization": f"Bearer {gw.key}"}
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(gw.openai_url + "/chat/completions", json=body, headers=headers):
                pass


async def _settled(gw: LiveGateway, mock: MockServer, within: float) -> list[LedgerRecord]:
    """The ledger once no upstream call is in flight (waiting at most ``within`` seconds)."""
    deadline = time.monotonic() + within
    while mock.state.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert mock.state.in_flight == 0, "the upstream call was not cancelled"
    await asyncio.sleep(0.1)  # the gateway's own bookkeeping after the abort
    await gw.app.ledger.flush()
    return await asyncio.to_thread(ledger_rows, gw.app.engine)


async def _assert_counters_match(gw: LiveGateway, rows: list[LedgerRecord]) -> None:
    statuses = await live_status(
        gw.app.enforcer.book,
        gw.app.enforcer.store,
        gw.app.keys.lookup(gw.key).org_id,  # type: ignore[union-attr]
        gw.app.clock(),
        "UTC",
    )
    (daily,) = [s for s in statuses if s.limit.name == "daily_usd"]
    assert daily.reserved == 0  # nothing left held by the cancelled calls
    assert daily.spent == sum(usd_to_nanos(r.cost_usd) for r in rows)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_that_gives_up_cancels_the_upstream_call(
    gw: LiveGateway, mock: MockServer, stream: bool
) -> None:
    await configure_mock(mock, latency_ms=5000)
    started = time.monotonic()
    await _give_up(gw, {**CHAT, "stream": stream}, after=0.5)
    rows = await _settled(gw, mock, within=2.0)
    assert time.monotonic() - started < 3  # not the upstream's five seconds
    assert mock.state.requests == 1
    (row,) = rows
    assert (row.status, row.http_status, row.cost_estimated) == ("cancelled", 499, True)
    assert row.input_tokens > 0 and row.output_tokens == 0 and row.cost_usd > 0
    await _assert_counters_match(gw, rows)


async def test_sdk_retries_after_timeouts_are_each_cancelled(
    gw: LiveGateway, mock: MockServer
) -> None:
    """The OpenAI SDK retries a timed-out call twice: three calls started, none completed."""
    await configure_mock(mock, latency_ms=5000)
    async with openai.AsyncOpenAI(
        base_url=gw.openai_url, api_key=gw.key, timeout=0.4, max_retries=2
    ) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(**CHAT)
    rows = await _settled(gw, mock, within=2.0)
    assert mock.state.requests == 3
    assert [r.status for r in rows] == ["cancelled"] * 3
    await _assert_counters_match(gw, rows)


async def test_cancel_on_disconnect_off_lets_the_call_finish(
    mock: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSTWARDEN_CANCEL_ON_DISCONNECT", "false")
    await configure_mock(mock, latency_ms=800)
    async with live_gateway(mock, f"sqlite:///{tmp_path}/d.db", tmp_path) as gw:
        await _give_up(gw, CHAT, after=0.2)
        assert mock.state.in_flight == 1
        rows = await _settled(gw, mock, within=3.0)
        (row,) = rows
        assert (row.status, row.cost_estimated) == ("success", False)


@pytest.mark.parametrize("hooked", [True, False])
async def test_the_watch_cancels_on_either_signal(hooked: bool) -> None:
    """Our server cancels the task the scope hands it; under another server a task
    awaiting ``receive()`` does. Either way the cancellation says the client went."""
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    scope: dict[str, Any] = {ON_DISCONNECT: None} if hooked else {}
    watch = Disconnect(scope, receive)
    if hooked:
        assert scope[ON_DISCONNECT] is asyncio.current_task()

    async def lose_connection() -> None:
        await asyncio.sleep(0.05)
        if hooked:
            scope[ON_DISCONNECT].cancel(CLIENT_GONE)  # what the server's protocol does
        else:
            gone.set()

    loser = asyncio.create_task(lose_connection())
    with pytest.raises(asyncio.CancelledError) as cancelled:
        await asyncio.sleep(5)
    assert client_gone(cancelled.value)
    task = asyncio.current_task()
    assert task is not None and task.uncancel() == 0
    watch.stop()
    await loser
    # Stopped: nothing is left to cancel the task.
    assert scope.get(ON_DISCONNECT) is None
    await asyncio.sleep(0.01)
