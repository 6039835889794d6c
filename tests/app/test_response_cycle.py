"""``ResponseCycle``: the response head it writes is uvicorn's, byte for byte, with its
headers checked in two searches; what it does not handle goes to uvicorn's own ``send``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, RequestResponseCycle

from costwarden.app import response_cycle
from costwarden.app.response_cycle import ResponseCycle
from tests.app.cycles import Writes, uvicorn_cycle

DATE = [(b"date", b"Thu, 03 Dec 2026 18:00:00 GMT")]


def _cycle(
    cls: type[RequestResponseCycle], writes: Writes, **options: Any
) -> RequestResponseCycle:
    cycle = uvicorn_cycle(writes, default_headers=list(DATE), **options)
    cycle.__class__ = cls  # as the server does to each cycle uvicorn makes
    return cycle


_STATE = ("response_started", "keep_alive", "chunked_encoding", "expected_content_length")

HEADS = {
    "a gateway answer": (200, [(b"content-type", b"application/json"),
                               (b"x-costwarden-cost-usd", b"0.000012"),
                               (b"content-length", b"42")], "POST", True),
    "no length: chunked": (200, [(b"content-type", b"text/event-stream")], "POST", True),
    "chunked asked": (200, [(b"Transfer-Encoding", b"Chunked")], "POST", True),
    "connection close": (503, [(b"Connection", b"keep-alive, Close"),
                               (b"content-length", b"0")], "POST", True),
    "not kept alive": (200, [(b"content-length", b"2")], "POST", False),
    "HEAD": (200, [], "HEAD", True),
    "204": (204, [(b"X-Mixed-Case", b"v")], "GET", True),
    "a tab in a value": (200, [(b"x-a", b"one\ttwo"), (b"content-length", b"1")], "POST", True),
}  # fmt: skip


@pytest.mark.parametrize("case", HEADS)
async def test_the_head_is_uvicorn_s_byte_for_byte(case: str) -> None:
    status, headers, method, keep_alive = HEADS[case]
    message = {"type": "http.response.start", "status": status, "headers": headers}
    ours, theirs = Writes(), Writes()
    fast = _cycle(ResponseCycle, ours, method=method, keep_alive=keep_alive)
    plain = _cycle(RequestResponseCycle, theirs, method=method, keep_alive=keep_alive)
    await fast.send(dict(message))
    await plain.send(dict(message))
    assert ours.calls == theirs.calls
    assert len(ours.calls) == 1 and ours.calls[0].endswith(b"\r\n\r\n")
    assert [getattr(fast, a) for a in _STATE] == [getattr(plain, a) for a in _STATE]


async def test_a_valid_head_is_written_without_uvicorn_s_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(cycle: RequestResponseCycle, message: Any) -> None:
        raise AssertionError(f"uvicorn's send was called with {message['type']}")

    monkeypatch.setattr(response_cycle, "_uvicorn_send", refuse)
    writes = Writes()
    cycle = _cycle(ResponseCycle, writes)
    headers = [(b"content-length", b"2")]
    await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
    assert writes.calls == [b"HTTP/1.1 200 OK\r\ndate: Thu, 03 Dec 2026 18:00:00 GMT\r\n"
                            b"content-length: 2\r\n\r\n"]  # fmt: skip
    with pytest.raises(AssertionError, match="http.response.body"):  # the body is uvicorn's
        await cycle.send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ([(b"x-ok", b"1"), (b"bad name", b"v")], "Invalid HTTP header name."),
        ([(b"x-ok", b"1"), (b"x-split", b"a\r\nx-injected: 1")], "Invalid HTTP header value."),
        ([(b"x-nul", b"a\x00b")], "Invalid HTTP header value."),
        ([(b"x:colon", b"v")], "Invalid HTTP header name."),
    ],
)
async def test_a_bad_header_gets_uvicorn_s_own_error_and_nothing_is_written(
    headers: list[tuple[bytes, bytes]], error: str
) -> None:
    writes = Writes()
    cycle = _cycle(ResponseCycle, writes)
    with pytest.raises(RuntimeError, match=error):
        await cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
    assert writes.calls == []


async def test_with_the_access_log_on_uvicorn_writes_the_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []

    async def record(cycle: RequestResponseCycle, message: Any) -> None:
        seen.append(message["type"])

    monkeypatch.setattr(response_cycle, "_uvicorn_send", record)
    cycle = _cycle(ResponseCycle, Writes(), access_log=True)
    await cycle.send({"type": "http.response.start", "status": 200, "headers": []})
    assert seen == ["http.response.start"]


@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=24)), max_size=6))
@settings(max_examples=300)
def test_the_joined_check_finds_what_uvicorn_s_searches_find(
    headers: list[tuple[bytes, bytes]],
) -> None:
    names, values = b"".join(h[0] for h in headers), b"".join(h[1] for h in headers)
    assert bool(names.translate(None, response_cycle._NAME_OK)) == any(
        HEADER_RE.search(name) for name, _ in headers
    )
    assert bool(values.translate(None, response_cycle._VALUE_OK)) == any(
        HEADER_VALUE_RE.search(value) for _, value in headers
    )
