"""A stream's terminal event goes out only once its ledger row is committed (durable mode),
so a client that read ``[DONE]`` / ``message_stop`` has its row even if the gateway dies the
moment after. The database commit is held open here to show the order: the terminal event
must wait for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from costwarden.core.records import LedgerRecord
from costwarden.mock import MockServer
from costwarden.storage.usage import ledger_rows
from tests.helpers import live_gateway

REQUESTS: dict[str, tuple[str, dict[str, Any], bytes]] = {
    "openai": (
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        b"data: [DONE]",
    ),
    "anthropic": (
        "/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        },
        b"event: message_stop",
    ),
}


@pytest.mark.parametrize("wire", ["openai", "anthropic"])
async def test_terminal_event_waits_for_the_durable_commit(
    mock: MockServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wire: str
) -> None:
    path, body, terminal = REQUESTS[wire]
    async with live_gateway(
        mock, f"sqlite:///{tmp_path}/s.db", tmp_path, ledger_mode="durable"
    ) as gw:
        commit: Callable[[LedgerRecord], Awaitable[None]] = gw.app.ledger.submit_durable
        committing, release = asyncio.Event(), asyncio.Event()

        async def held_commit(record: LedgerRecord) -> None:
            committing.set()
            await release.wait()
            await commit(record)

        monkeypatch.setattr(gw.app.ledger, "submit_durable", held_commit)
        seen = b""
        ended = asyncio.Event()

        async def read(resp: aiohttp.ClientResponse) -> None:
            nonlocal seen
            async for chunk in resp.content.iter_any():
                seen += chunk
                if terminal in seen:
                    ended.set()

        headers = {"authorization": f"Bearer {gw.key}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                gw.base_url + path, json={**body, "stream": True}, headers=headers
            ) as resp:
                reader = asyncio.create_task(read(resp))
                await asyncio.wait_for(committing.wait(), 5)
                await asyncio.sleep(0.3)
                # Everything but the end has been relayed; the end waits for the commit.
                assert b"tok" in seen and not ended.is_set(), seen[-200:]
                release.set()
                await asyncio.wait_for(ended.wait(), 5)
                rows = await asyncio.to_thread(
                    ledger_rows, gw.app.engine, [resp.headers["x-request-id"]]
                )
                assert [r.status for r in rows] == ["success"]  # committed by then
                await reader
