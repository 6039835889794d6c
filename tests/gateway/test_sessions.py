"""Agent sessions on the request path, through a live gateway and the official OpenAI SDK,
with a clock the test moves: wind-down headers from 90 % of the session's budget, sleep
until the daily reset (429, ``wake_at`` and a matching ``Retry-After``) with nothing sent
upstream meanwhile, a wake on time with no request, and exhaustion of a lifetime budget."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai

from costwarden.mock import MockServer
from costwarden.storage import repo
from costwarden.storage.sessions import list_escalations, session_of, transitions_of
from costwarden.storage.usage import ledger_rows
from tests.helpers import (
    PRICEY,
    T0,
    FakeClock,
    LiveGateway,
    configure_mock,
    live_gateway,
    mock_stats,
    tool_round,
)
from tests.helpers import set_limits as _set_limits

RESET = datetime(2027, 3, 11, tzinfo=UTC)  # T0's next UTC midnight
FAST_WAKE = "\n[sessions]\nwake_interval_seconds = 0.05\n"


async def _ask(
    client: openai.AsyncOpenAI, messages: list[Any] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """One chat completion of up to 100 tokens: (status, headers, error body or {})."""
    try:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=100,
            messages=messages or [{"role": "user", "content": "next step"}],
        )  # fmt: skip
    except openai.APIStatusError as exc:
        return exc.status_code, dict(exc.response.headers), exc.response.json()["error"]
    raw.parse()  # the SDK takes the answer
    return raw.status_code, dict(raw.headers), {}


def _step(n: int) -> list[Any]:
    return [{"role": "user", "content": f"step {n}: go on"}]


def _client(gw: LiveGateway, session: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=gw.openai_url, api_key=gw.key, max_retries=0,
        default_headers={"x-costwarden-session": session},
    )  # fmt: skip


async def _upstream_calls(mock: MockServer) -> int:
    return int((await mock_stats(mock))["requests"])


async def test_a_session_winds_down_sleeps_until_the_reset_and_wakes_on_time(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    await configure_mock(mock, output_tokens=100)  # $0.1 a call at PRICEY's $1,000 / M
    toml = PRICEY + FAST_WAKE
    async with live_gateway(mock, database_url, tmp_path, extra_toml=toml, clock=clock) as gw:
        await _set_limits(gw, "session", "run-1", daily_usd="1")
        seen: list[tuple[int, str | None, Decimal | None]] = []
        async with _client(gw, "run-1") as client:
            for step in range(20):  # each step a new question (the same one thrice is a loop)
                status, headers, error = await _ask(client, _step(step))
                pct = headers.get("x-costwarden-session-budget-pct")
                state = headers.get("x-costwarden-session-state")
                seen.append((status, state, None if pct is None else Decimal(pct)))
                if status != 200:
                    break
            admitted = [(state, pct) for status, state, pct in seen if status == 200]
            assert len(admitted) >= 9
            for state, pct in admitted:  # every answer says where its session stands
                assert pct is not None
                assert state == ("winding_down" if pct >= 90 else "active"), admitted
            assert admitted[-1][0] == "winding_down"
            # The budget refused: asleep until the daily reset, told by 429, not 402.
            assert seen[-1][0] == 429
            assert error["code"] == "session_sleeping" and error["scope"] == "session"
            assert error["wake_at"] == RESET.isoformat()
            wait = math.ceil(RESET.timestamp() - clock())
            assert headers["retry-after"] == str(wait) and error["retry_after"] == wait
            assert headers["x-costwarden-session-state"] == "sleeping"

            # Asleep: refused at the door, nothing reaches the provider.
            calls = await _upstream_calls(mock)
            status, headers, error = await _ask(client, _step(100))
            assert (status, error["code"]) == (429, "session_sleeping")
            assert error["wake_at"] == RESET.isoformat()
            assert await _upstream_calls(mock) == calls

            # The reset comes: the session wakes by itself, with no request.
            clock.now = RESET.timestamp() + 0.5
            row = await _stored_state(gw, "run-1", "active")
            assert row == "active"
            causes = [t["cause"] for t in transitions_of(gw.app.engine, _org(gw), "run-1")]
            assert causes == ["near_budget", "window_spent", "woke"]
            status, headers, _ = await _ask(client, _step(101))
            assert status == 200 and headers["x-costwarden-session-state"] == "active"
            assert Decimal(headers["x-costwarden-session-budget-pct"]) < 20


async def test_a_lifetime_budget_spent_exhausts_the_session_for_good(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    await configure_mock(mock, output_tokens=100)
    async with live_gateway(mock, database_url, tmp_path, extra_toml=PRICEY, clock=clock) as gw:
        await _set_limits(gw, "session", "run-2", lifetime_usd="0.25")
        async with _client(gw, "run-2") as client:
            statuses = []
            for step in range(10):
                status, headers, error = await _ask(client, _step(step))
                statuses.append(status)
                if status != 200:
                    break
            assert statuses[-1] == 402 and 200 in statuses
            assert error["code"] == "session_budget_exhausted"
            assert headers["x-costwarden-session-state"] == "exhausted"
            clock.advance(40 * 86400)  # nothing resets a lifetime budget
            calls = await _upstream_calls(mock)
            status, _, error = await _ask(client, _step(100))
            assert (status, error["code"]) == (402, "session_budget_exhausted")
            assert await _upstream_calls(mock) == calls
        # Another session of the same key is not held back.
        async with _client(gw, "run-3") as other:
            assert (await _ask(other))[0] == 200
        assert await _stored_state(gw, "run-2", "exhausted") == "exhausted"


def _org(gw: LiveGateway) -> str:
    org = gw.app.keys.lookup(gw.key)
    assert org is not None
    return org.org_id


async def _stored_state(gw: LiveGateway, session: str, want: str) -> str | None:
    """The session's state as stored, once it is ``want`` (or after 3 s)."""
    found: str | None = None
    for _ in range(60):
        row = await asyncio.to_thread(session_of, gw.app.engine, _org(gw), session)
        found = None if row is None else row.standing.state
        if found == want:
            break
        await asyncio.sleep(0.05)
    return found


async def test_a_loop_of_identical_tool_calls_is_paused_at_the_third_repetition(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    async with live_gateway(mock, database_url, tmp_path) as gw:
        async with _client(gw, "agent-7") as client:
            messages: list[Any] = [{"role": "user", "content": "has order 7 shipped?"}]
            statuses = []
            for i in range(6):
                status, headers, error = await _ask(client, messages)
                statuses.append(status)
                if status != 200:
                    break
                messages += tool_round(i)
            # The question, then the same tool round trip: sent twice, paused the third time.
            assert statuses == [200, 200, 200, 409]
            assert error["code"] == "session_paused" and error["state"] == "paused"
            escalation = error["escalation_id"]
            assert headers["x-costwarden-session-state"] == "paused"
            await gw.app.sessions.flush()  # type: ignore[union-attr]
            (found,) = await asyncio.to_thread(list_escalations, gw.app.engine)
            assert (found.id, found.session_id, found.status) == (escalation, "agent-7", "open")
            assert found.reason == "repeat" and found.evidence["count"] == 3
            # Paused: nothing reaches the provider, whatever the request.
            calls = await _upstream_calls(mock)
            for body in (messages, None):
                status, _, error = await _ask(client, body)
                assert (status, error["escalation_id"]) == (409, escalation)
            assert await _upstream_calls(mock) == calls
        assert await _stored_state(gw, "agent-7", "paused") == "paused"


async def _views(gw: LiveGateway, key: str, session: str) -> tuple[Any, Any]:
    """(the agent's view with ``key``, the admin API's view) of ``session``."""
    async with httpx.AsyncClient(base_url=gw.base_url) as http:
        own = await http.get(f"/v1/costwarden/session/{session}",
                             headers={"authorization": f"Bearer {key}"})  # fmt: skip
        admin = await http.get(f"/admin/sessions/{session}", params={"org": "acme"},
                               headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
    assert own.status_code == admin.status_code == 200, (own.text, admin.text)
    return own.json(), admin.json()


TOKEN = "adm-sessions"


async def test_the_agents_view_is_the_admins_after_a_restart_and_from_another_process(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    await configure_mock(mock, output_tokens=100)
    toml = PRICEY + FAST_WAKE

    def start() -> Any:
        return live_gateway(
            mock, database_url, tmp_path, extra_toml=toml, clock=clock, admin_token=TOKEN
        )

    async with start() as gw:
        await _set_limits(gw, "session", "run-5", daily_usd="1")
        async with _client(gw, "run-5") as client:
            for step in range(20):
                if (await _ask(client, _step(step)))[0] != 200:
                    break
        assert gw.app.sessions is not None
        await gw.app.sessions.flush()
        await gw.app.ledger.flush()
        key = gw.key
        own, admin = await _views(gw, key, "run-5")
        assert own == admin
        assert own["state"] == "sleeping" and own["wake_at"] == RESET.isoformat()
        assert Decimal(own["budget_pct"]) >= 99 and own["requests"] >= 10
        # Another process on the same database: the same figures.
        async with start() as other:
            assert await _views(other, key, "run-5") == (own, admin)
    # And after a restart.
    async with start() as again:
        assert await _views(again, key, "run-5") == (own, admin)


async def _key_options(gw: LiveGateway, **options: bool) -> None:
    record = await asyncio.to_thread(repo.set_key_options, gw.app.engine, gw.key_id, options)
    gw.app.keys.apply([record])


async def test_a_budget_reached_is_a_clean_completion_in_both_sdks_for_keys_that_ask(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await configure_mock(mock, output_tokens=100)
    async with live_gateway(mock, database_url, tmp_path, clock=FakeClock(T0)) as gw:
        await _key_options(gw, session_clean_stop=True)
        await _set_limits(gw, "session", "stop-1", daily_tokens=250)
        headers = {"x-costwarden-session": "stop-1"}
        oa = openai.AsyncOpenAI(base_url=gw.openai_url, api_key=gw.key, max_retries=0,
                                default_headers=headers)  # fmt: skip
        an = anthropic.AsyncAnthropic(base_url=gw.base_url, api_key=gw.key, max_retries=0,
                                      default_headers=headers)  # fmt: skip
        stops = []
        for step in range(10):  # spend the budget: the request it refuses ends cleanly
            raw = await oa.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=_step(step), max_tokens=100
            )
            if "x-costwarden-session-stop" in raw.headers:
                stops.append(raw.parse().choices[0])
                break
        assert stops and stops[0].finish_reason == "stop"
        calls = await _upstream_calls(mock)

        # Asleep now: every way of asking gets a completion, parsed by the SDKs as any other.
        raw = await oa.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=_step(50), max_tokens=100
        )
        assert raw.status_code == 200 and raw.headers["x-costwarden-session-stop"] == "budget_spent"
        assert raw.headers["x-costwarden-session-state"] == "sleeping"
        choice = raw.parse().choices[0]
        assert choice.finish_reason == "stop" and choice.message.content
        assert "budget is spent until 2027-03-11T00:00:00+00:00" in choice.message.content
        text, finish = "", None
        async for chunk in await oa.chat.completions.create(
            model="gpt-4o-mini", messages=_step(51), stream=True,
            stream_options={"include_usage": True},
        ):  # fmt: skip
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        assert finish == "stop" and text.startswith("[costwarden]")
        message = await an.messages.create(
            model="claude-haiku-4-5", max_tokens=100, messages=_step(52)  # type: ignore[arg-type]
        )
        assert message.stop_reason == "end_turn"
        assert message.content[0].type == "text" and "[costwarden]" in message.content[0].text
        async with an.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, messages=_step(53)  # type: ignore[arg-type]
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 0
        assert await _upstream_calls(mock) == calls  # none of them reached the provider
        await oa.close()
        await an.close()

        await gw.app.ledger.flush()
        rows = await asyncio.to_thread(ledger_rows, gw.app.engine)
        stopped = [r for r in rows if r.status == "session_stopped"]
        assert len(stopped) == 5 and {r.http_status for r in stopped} == {200}
        assert {r.cost_usd for r in stopped} == {Decimal(0)}
        assert {r.session_id for r in stopped} == {"stop-1"}


async def test_a_winding_down_session_tells_its_model_the_budget_left(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await configure_mock(mock, output_tokens=100)
    clock = FakeClock(T0)
    async with live_gateway(mock, database_url, tmp_path, extra_toml=PRICEY, clock=clock) as gw:
        await _key_options(gw, session_budget_note=True)
        await _set_limits(gw, "session", "note-1", daily_usd="1")
        notes = []
        async with _client(gw, "note-1") as client:
            for step in range(10):
                status, headers, _ = await _ask(client, _step(step))
                assert status == 200
                async with httpx.AsyncClient() as http:
                    last = (await http.get(mock.base_url + "/_mock/last")).json()["body"]
                notes.append([m["content"] for m in last["messages"] if m["role"] == "system"])
        # Calls of $0.1 out of $1: the ninth leaves just over 90 % spent, so the tenth is the first
        # sent while winding down, and the only one with the note.
        assert notes[:9] == [[]] * 9
        (note,) = notes[9]
        assert re.match(r"\[costwarden\] This agent session has used 90\.\d\d% of its budget", note)


async def test_a_keys_session_default_gives_each_session_its_own_budget(
    mock: MockServer, database_url: str, tmp_path: Path
) -> None:
    await configure_mock(mock, output_tokens=100)  # $0.1 a call
    clock = FakeClock(T0)
    async with live_gateway(mock, database_url, tmp_path, extra_toml=PRICEY, clock=clock) as gw:
        await _set_limits(gw, "session", f"@key:{gw.key_id}", daily_usd="0.35")
        spent: dict[str, int] = {}
        for session in ("run-a", "run-b"):
            async with _client(gw, session) as client:
                answered = 0
                for step in range(10):
                    status, headers, error = await _ask(client, _step(step))
                    if status != 200:
                        break
                    answered += 1
                assert (status, error["code"], error["limit"]) == (429, "session_sleeping", "0.35")
                spent[session] = answered
        # Each session had the whole $0.35 (three calls and a clamped fourth), not a share.
        assert spent["run-a"] == spent["run-b"] >= 3
        async with _client(gw, f"@key:{gw.key_id}") as client:
            status, _, error = await _ask(client, _step(1))
        assert status == 400 and "session defaults" in error["message"]  # no session's name
