"""An escalation resolved in one gateway process reaches the SSE clients of both, and the
paused session goes on in the process that paused it: two real ``costwarden serve``
processes on PostgreSQL + Redis, the official OpenAI SDK as the agent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai

from costwarden.mock import MockServer
from tests.e2e.event_streams import AUTH, REDIS_URL, connected, frames, gateways, take
from tests.helpers import tool_round


async def test_a_resolution_reaches_every_process_within_a_second(
    mock: MockServer, tmp_path: Path, shared_stack: str
) -> None:
    async with gateways(mock.base_url, shared_stack, REDIS_URL, tmp_path) as gw:
        one, two = gw.urls
        agent = openai.AsyncOpenAI(
            base_url=one + "/v1", api_key=gw.key, max_retries=0,
            default_headers={"x-costwarden-session": "run-42"},
        )  # fmt: skip
        messages: list[Any] = [{"role": "user", "content": "has order 7 shipped?"}]
        escalation = None
        upstream_before_pause = 0
        for i in range(5):
            try:
                await agent.chat.completions.create(model="gpt-4o-mini", messages=messages)
            except openai.ConflictError as exc:
                escalation = exc.response.json()["error"]["escalation_id"]
                break
            upstream_before_pause += 1
            messages += tool_round(i)
        assert escalation is not None and upstream_before_pause == 3
        # The other process refuses the paused session too (it follows session_changed).
        other = openai.AsyncOpenAI(
            base_url=two + "/v1", api_key=gw.key, max_retries=0,
            default_headers={"x-costwarden-session": "run-42"},
        )  # fmt: skip
        for _ in range(50):
            try:
                await other.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "fresh start"}]
                )
            except openai.ConflictError:
                break
            await asyncio.sleep(0.05)  # not heard of the pause yet: this one went through
        else:
            raise AssertionError("process two never learned of the pause")

        async with aiohttp.ClientSession() as http:
            query = "?kind=escalation_resolved"
            on_one = await connected(frames(http, one, query=query))
            on_two = await connected(frames(http, two, query=query))
            started = time.time()
            async with http.post(
                f"{two}/admin/escalations/{escalation}/resolve", headers=AUTH,
                json={"decision": "approve", "actor": "ops", "note": "carrier is slow"},
            ) as r:  # fmt: skip
                assert r.status == 200, await r.text()
            (got_one,) = await take(on_one, 1, within=5)
            (got_two,) = await take(on_two, 1, within=5)
            delays = [frame.received - started for frame in (got_one, got_two)]
            print(f"escalation_resolved reached process 1 in {delays[0] * 1000:.0f} ms, "
                  f"process 2 in {delays[1] * 1000:.0f} ms")  # fmt: skip
            assert max(delays) < 1.0
            for frame in (got_one, got_two):
                assert frame.data["escalation_id"] == escalation
                assert frame.data["status"] == "approved" and frame.data["resolved_by"] == "ops"
            await on_one.close()
            await on_two.close()

        # The paused session goes on in the process that paused it, as soon as it has heard.
        for _ in range(40):
            try:
                await agent.chat.completions.create(model="gpt-4o-mini", messages=messages)
                break
            except openai.ConflictError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("the session stayed paused in process one")
        await agent.close()
        await other.close()

        # The agent's view of its session, from either process, is the admin API's: once the
        # last request's ledger row is written (batched: usage is read from the ledger).
        key = {"authorization": f"Bearer {gw.key}"}
        await asyncio.sleep(0.5)  # both processes' ledger writers flush every 200 ms
        async with aiohttp.ClientSession() as http:
            for _ in range(50):
                views = []
                for base in (one, two):
                    async with http.get(f"{base}/v1/costwarden/session/run-42", headers=key) as r:
                        assert r.status == 200, await r.text()
                        views.append(await r.json())
                    async with http.get(f"{base}/admin/sessions/run-42", params={"org": "acme"},
                                        headers=AUTH) as r:  # fmt: skip
                        views.append(await r.json())
                if all(view == views[0] for view in views):
                    break
                await asyncio.sleep(0.1)
        assert all(view == views[0] for view in views), views
        assert views[0]["requests"] >= 5  # three answered, one paused, one after resolving
        assert views[0]["state"] == "active" and views[0]["escalation"] is None
